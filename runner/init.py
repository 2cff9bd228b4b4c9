"""`python -m runner.init [DIR]`: a starter conf/ for your project (runner/commands/init.py)."""

import sys

from .commands.init import main, write_starter

__all__ = ["main", "write_starter"]

if __name__ == "__main__":
    sys.exit(main())
