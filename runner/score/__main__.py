"""`python -m runner.score MODEL_URI [--config-dir DIR] [override ...]`: batch scoring in the
warehouse as one MLflow run (runner/commands/score.py)."""

import sys

from ..commands.score import main

if __name__ == "__main__":
    sys.exit(main())
