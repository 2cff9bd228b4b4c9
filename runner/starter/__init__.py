"""The starter conf/ that `python -m runner.init` writes into a user's project (package data)."""
