"""A study and MLflow store written by an earlier runner still resume with this one.

tests/fixtures/store_v0 was written before runner's modules were restructured (see its README):
the names recorded there (Optuna user attributes, MLflow tags, the parent run link)
must keep working, so the same command with a larger budget continues the same study
under the same parent run.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO, run_runner

pytestmark = pytest.mark.integration

FIXTURE = REPO / "tests" / "fixtures" / "store_v0"
PARENT = "a3219dc034924df2b24dc3ff55cc79cc"
WRITTEN_IN = "/tmp/fx"


def _install(tmp_path: Path) -> None:
    """Put the fixture where the default local tracker and study storage look for it, and move
    the store's absolute artifact paths from where it was written to here."""
    (tmp_path / "mlruns").mkdir()
    (tmp_path / ".runner" / "optuna").mkdir(parents=True)
    shutil.copy(FIXTURE / "mlflow.db", tmp_path / "mlruns" / "mlflow.db")
    shutil.copytree(FIXTURE / "artifacts", tmp_path / "mlruns" / "artifacts")
    shutil.copy(FIXTURE / "optuna-fixture-v0.db", tmp_path / ".runner" / "optuna" / "fixture-v0.db")
    con = sqlite3.connect(tmp_path / "mlruns" / "mlflow.db")
    with con:
        con.execute(
            "update experiments set artifact_location = replace(artifact_location, ?, ?)", (WRITTEN_IN, str(tmp_path))
        )
        con.execute("update runs set artifact_uri = replace(artifact_uri, ?, ?)", (WRITTEN_IN, str(tmp_path)))
    con.close()


def test_resume_a_store_written_before_the_restructure(tmp_path):
    import optuna

    _install(tmp_path)
    args = [
        "sweep=lightgbm",
        "hydra.sweeper.n_trials=5",
        "data=synthetic",
        "data.demo.rows=2000",
        "data.demo.n_features=5",
        "model.num_boost_round=20",
        "hydra.sweeper.study_name=fixture-v0",
        "tracker.experiment=fixture",
    ]
    # The study began in the former space (num_leaves 15-255): the default's wider one cannot
    # continue it, and the error says how to resume it.
    refused = run_runner(args, tmp_path, multirun=True)
    assert refused.returncode == 2 and "resumes with hydra.sweeper.strategy=plain" in refused.stderr, refused.stderr
    proc = run_runner([*args, "hydra.sweeper.strategy=plain"], tmp_path, multirun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed, 3/5 trials finished" in proc.stderr

    study = optuna.load_study(
        study_name="fixture-v0", storage=f"sqlite:///{tmp_path / '.runner' / 'optuna' / 'fixture-v0.db'}"
    )
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE"] * 5
    assert study.user_attrs["mlflow_parent_run_id"] == PARENT

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fixture")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == PARENT]
    assert [p.info.run_id for p in parents] == [PARENT]
    assert parents[0].info.status == "FINISHED"
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == [0, 1, 2, 3, 4]
    assert all(c.info.status == "FINISHED" for c in children)
    by_number = {int(c.data.tags["optuna.trial_number"]): c.info.run_id for c in children}
    assert {t.number: t.user_attrs["mlflow_run_id"] for t in study.trials} == by_number
    assert parents[0].data.metrics["trials_complete"] == 5
