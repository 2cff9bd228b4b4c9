"""`python -m runner.rerun` reads the run from the store it is given (default: this folder's
local store) and writes the new run to that same store; a store that does not exist is not
created, and the error says where it looked. Real runner processes and local SQLite stores."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from tests.conftest import run_runner

pytestmark = pytest.mark.integration

SMALL = ["data=synthetic", "data.demo.rows=2000", "data.demo.n_features=5", "model.num_boost_round=20"]


def rerun(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "runner.rerun", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_rerun_writes_to_the_store_it_read_and_creates_no_empty_one(tmp_path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    first = run_runner(SMALL, project)
    assert first.returncode == 0, first.stderr[-3000:]
    run_id = re.search(r"runner: run ([0-9a-f]{32}) FINISHED", first.stdout).group(1)

    lost = rerun([run_id], elsewhere)  # no --tracking-uri, no store here
    assert lost.returncode == 2
    assert f"no MLflow store at {elsewhere / 'mlruns' / 'mlflow.db'}" in lost.stderr
    assert "--tracking-uri" in lost.stderr and not (elsewhere / "mlruns").exists()

    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    again = rerun([run_id, "--tracking-uri", uri, "model.params.num_leaves=15"], elsewhere)
    assert again.returncode == 0, again.stderr[-3000:]
    new_id = re.search(r"runner: run ([0-9a-f]{32}) FINISHED", again.stdout).group(1)
    assert not (elsewhere / "mlruns").exists()  # the new run went where the run came from
    new = MlflowClient(tracking_uri=uri).get_run(new_id)
    assert new.data.tags["user.rerun_of"] == run_id
    assert new.data.params["model.params.num_leaves"] == "15"  # the user's override still wins
