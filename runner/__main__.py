"""`python -m runner`: the same as the `runner` command (runner/commands/cli.py)."""

from .commands.cli import main

main()
