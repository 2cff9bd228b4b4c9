"""Shared fixtures (real services on loopback, a clean MLflow/runner state per test) and the
check that every test is in a tier: `unit` or `integration`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import MlflowServer

REPO = Path(__file__).resolve().parent.parent

# Ctrl-C tests need SIGINT as a terminal gives it. pytest started in the background of a
# non-interactive shell (`pytest &` in a script) ignores SIGINT, and every process a test
# starts would inherit that, start_new_session or not; Python then installs no handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


TIERS = ("unit", "integration")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: every collected test is checked
def pytest_collection_modifyitems(config, items):
    """Every test belongs to exactly one tier, given by its module's `pytestmark`: `unit` (fast,
    no service or runner process: `python -m pytest -m unit`) or `integration`."""
    wrong: dict = {}
    for item in items:
        tiers = [tier for tier in TIERS if item.get_closest_marker(tier)]
        if len(tiers) != 1:
            problem = " and ".join(tiers) or "no tier marker"
            wrong.setdefault((item.location[0], problem), []).append(item.name)
    if wrong:
        lines = [
            f"  {path}: {problem} on {len(names)} test(s), e.g. {names[0]}" for (path, problem), names in wrong.items()
        ]
        raise pytest.UsageError(
            "every test needs exactly one tier marker, unit or integration: put "
            "`pytestmark = pytest.mark.unit` (or `pytest.mark.integration`) at the top of its module "
            "(docs/development.md, Adding a test)\n" + "\n".join(lines)
        )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One real `mlflow server` for the session; tests use their own experiments."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean_mlflow_env(monkeypatch):
    """Like kedro-mlflow's fixtures: no tracking URI or active run leaks between tests."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "RUNNER_PARENT_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    yield
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()


def run_runner(args, cwd: Path, env=None, timeout=600, multirun: bool = False) -> subprocess.CompletedProcess:
    """`python -m runner ARGS` in cwd, as a user runs it."""
    full_env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **(env or {})}
    cmd = [sys.executable, "-m", "runner", *(["--multirun"] if multirun else []), *args]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def store(cwd: Path) -> str:
    """The tracking URI of the local store runner makes in cwd (tracker=local)."""
    return f"sqlite:///{cwd}/mlruns/mlflow.db"


@contextlib.contextmanager
def tracking(uri: str):
    """MLflow's global tracking URI set to uri for the block (mlflow.pyfunc.load_model, ...)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


def run_rerun(run_id: str, tracking_uri: str, cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m runner.rerun RUN_ID --tracking-uri URI OVERRIDES` in cwd."""
    return subprocess.run(
        [sys.executable, "-m", "runner.rerun", run_id, "--tracking-uri", tracking_uri, *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
