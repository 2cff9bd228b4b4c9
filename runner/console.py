"""What runner prints for the user, and how it quiets the libraries it drives."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import NoReturn

from .errors import RunnerError


def say(text: str) -> None:
    """A line for the user on stderr, credentials masked, whatever logging is configured."""
    from .secrets import scrub

    print(scrub(text), file=sys.stderr, flush=True)


def exit_with(exc: RunnerError) -> NoReturn:
    """`runner: error: <message>` on stderr and exit 2; HYDRA_FULL_ERROR=1 re-raises instead."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise exc
    say(f"runner: error: {exc}")
    sys.exit(2)


def quiet_libraries() -> None:
    """Keep the connector, HTTP and migration chatter out of the user's terminal."""
    for name in ("snowflake", "urllib3", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Overriding the parameters from Reference Dataset")
    warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")
