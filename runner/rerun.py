"""`python -m runner.rerun RUN_ID [--tracking-uri URI] [override ...]`: run a logged run again
from its MLflow record (runner/commands/rerun.py)."""

import sys

from .commands.rerun import main, recorded_config

__all__ = ["main", "recorded_config"]

if __name__ == "__main__":
    sys.exit(main())
