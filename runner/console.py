"""What runner prints for the user, and how it quiets the libraries it drives."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Iterator, NoReturn

from .errors import RunnerError


class ErrorMode:
    """How runner's own errors end a call: printed as one line with exit 2 (the command
    line), or raised (the Python API, runner/api.py)."""

    def __init__(self) -> None:
        self.raise_errors = False

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        before, self.raise_errors = self.raise_errors, True
        try:
            yield
        finally:
            self.raise_errors = before


ERRORS = ErrorMode()


def say(text: str) -> None:
    """A line for the user on stderr, credentials masked, whatever logging is configured."""
    from .secrets import scrub

    print(scrub(text), file=sys.stderr, flush=True)


def exit_with(exc: RunnerError) -> NoReturn:
    """`runner: error: <message>` on stderr and exit 2; HYDRA_FULL_ERROR=1 or the Python API
    re-raise instead."""
    if ERRORS.raise_errors or os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise exc
    say(f"runner: error: {exc}")
    sys.exit(2)


def quiet_libraries() -> None:
    """Keep the connector, HTTP and migration chatter out of the user's terminal."""
    for name in ("snowflake", "urllib3", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Overriding the parameters from Reference Dataset")
    warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")
