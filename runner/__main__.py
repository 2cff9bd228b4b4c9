"""`python -m runner`: the same as the `runner` command (runner/cli.py)."""

from .cli import main

main()
