"""A resumed sweep gives a finished trial without an MLflow run its run, and the sweep's
end-of-sweep MLflow calls ride out a tracking outage through the Tracker, end to end (the
parent-run kill point is in tests/test_kills_and_outages.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import run_runner
from tests.support.servers import MlflowServer

pytestmark = pytest.mark.integration

SMALL = [
    "sweep=lightgbm",
    "data=synthetic",
    "data.demo.rows=2000",
    "data.demo.n_features=5",
    "model.num_boost_round=10",
    "hydra/sweeper/pruner=nop",
    "hydra.sweeper.study_name=gaps",
]


def _study(cwd: Path) -> optuna.Study:
    return optuna.load_study(study_name="gaps", storage=f"sqlite:///{cwd / '.runner' / 'optuna' / 'gaps.db'}")


def _middle(dist):
    """A value inside a distribution that the sampler did not draw."""
    if isinstance(dist, optuna.distributions.IntDistribution):
        return (dist.low + dist.high) // 2
    return (dist.low * dist.high) ** 0.5 if dist.log else (dist.low + dist.high) / 2


def test_a_finished_trial_without_a_run_gets_one_on_resume(tmp_path):
    first = run_runner([*SMALL, "hydra.sweeper.n_trials=2"], tmp_path, multirun=True)
    assert first.returncode == 0, first.stderr[-3000:]
    study = _study(tmp_path)
    template = study.trials[0]
    params = {k: _middle(d) for k, d in template.distributions.items()}
    added = optuna.trial.create_trial(params=params, distributions=template.distributions, value=0.5)
    study.add_trial(added)  # finished in Optuna, never run by runner: no MLflow run

    again = run_runner([*SMALL, "hydra.sweeper.n_trials=3"], tmp_path, multirun=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trial 2 finished in Optuna (COMPLETE) without an MLflow run" in again.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("runner")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {int(r.data.tags["optuna.trial_number"]): r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert sorted(children) == [0, 1, 2] and all(r.info.status == "FINISHED" for r in runs)
    made = children[2]
    assert made.data.tags["runner.resume.filled"] == "created" and made.data.metrics["valid_auc"] == 0.5
    for key, value in params.items():
        assert made.data.params[key] == str(value)
    assert _study(tmp_path).user_attrs["runner.trial_runs"] == {"2": made.info.run_id}
    # A third invocation finds every trial linked: nothing new.
    third = run_runner([*SMALL, "hydra.sweeper.n_trials=3"], tmp_path, multirun=True)
    assert third.returncode == 0 and "without an MLflow run" not in third.stderr
    assert len(client.search_runs([exp.experiment_id])) == 4


@pytest.fixture
def server(tmp_path_factory):
    own = MlflowServer(tmp_path_factory.mktemp("gaps_mlflow")).start()
    yield own
    own.stop()


def test_the_end_of_sweep_calls_ride_out_an_outage(tmp_path, server):
    hold = tmp_path / "hold"
    env = {
        **os.environ,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
        "RUNNER_TEST_BARRIER": f"summary:{hold}:2",
    }
    args = [
        *SMALL,
        "hydra.sweeper.n_trials=2",
        "tracker=server",
        f"tracker.uri={server.url}",
        "tracker.experiment=gaps-outage",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "--multirun", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (hold.exists() and list(hold.iterdir())):  # the sweep waits before its summary
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        server.stop()
        (hold / "release").touch()  # the summary starts against a server that is down
        time.sleep(6)
        server.start()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert "is unreachable" in err and "reachable again" in err
    client = MlflowClient(server.url)
    exp = client.get_experiment_by_name("gaps-outage")
    (parent,) = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED" and parent.data.tags["best.run_id"]
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert "optuna/top_trials.csv" in names and "optuna/optimization_history.png" in names
