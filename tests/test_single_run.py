"""`python -m runner` end to end on real components: fakesnow server over the
wire, the real Snowflake connector and Snowpark, LightGBM, MLflow stores."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import run_runner

pytestmark = pytest.mark.integration

SMALL = ["data.demo.events=60000", "data.demo.customers=4000", "model.num_boost_round=60"]


def local_client(cwd: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlruns/mlflow.db")


def only_run(client: MlflowClient, experiment: str = "runner"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    return runs


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    """The default command twice, as a new user runs it: cold, then with a warm cache."""
    cwd = tmp_path_factory.mktemp("default")
    first = run_runner([], cwd)
    second = run_runner([], cwd)
    return cwd, first, second


def test_default_run_prints_what_a_user_needs(default_runs):
    cwd, first, _ = default_runs
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    run_id = re.search(r"runner: run ([0-9a-f]{32}) FINISHED", out).group(1)
    auc = float(re.search(r"valid_auc=([0-9.]+)", out).group(1))
    assert auc > 0.7, out
    assert re.search(r"test_auc=[0-9.]+", out)
    assert f"sqlite:///{cwd}/mlruns/mlflow.db" in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    run = local_client(cwd).get_run(run_id)
    assert run.info.status == "FINISHED"


def test_default_run_logs_everything(default_runs):
    cwd, first, _ = default_runs
    client = local_client(cwd)
    run = only_run(client)[-1]
    assert run.info.status == "FINISHED"
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    assert p["model.params.num_leaves"] == "31"
    assert p["data.entity_key"] == "CUSTOMER_ID"
    assert p["tracker.kind"] == "local"
    for key in ("valid_auc", "test_auc", "valid_logloss", "test_accuracy", "best_iteration", "rows_train"):
        assert key in m
    assert m["rows_train"] + m["rows_valid"] + m["rows_test"] == 50000
    # the learning curve: valid_auc after each boosting round (thinned), its best round on it
    curve = {p.step: p.value for p in client.get_metric_history(run.info.run_id, "valid_auc_by_round")}
    best = int(m["best_iteration"])
    assert 3 <= len(curve) <= 100 and min(curve) == 1 and best in curve
    assert curve[best] == pytest.approx(m["valid_auc"]) and max(curve.values()) == pytest.approx(m["valid_auc"])
    assert t["runner.cache"] == "miss"
    assert t["runner.warehouse.feature_queries"] == "1"
    assert t["runner.warehouse.query_ids"] != "none"
    assert t["runner.version"]
    assert json.loads(t["runner.overrides"]) == []
    assert t.get("mlflow.source.git.commit") is None or len(t["mlflow.source.git.commit"]) == 40
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "data", "model", "model_info"} <= artifacts
    model_files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"MLmodel", "input_example.json"} <= model_files
    mlmodel = Path(client.download_artifacts(run.info.run_id, "model/MLmodel", str(cwd / "dl"))).read_text()
    assert "signature:" in mlmodel and "lightgbm" in mlmodel
    [dataset_input] = run.inputs.dataset_inputs
    ds = dataset_input.dataset
    assert ds.digest and t["runner.cache_key"].startswith(ds.digest)
    source = json.loads(ds.source)
    assert source["account"] == "fakesnow" and source["database"] == "DEMO" and "SELECT" in source["query"]
    assert "CHURNED" in ds.schema


def test_second_run_issues_no_feature_query(default_runs):
    cwd, first, second = default_runs
    assert second.returncode == 0, second.stderr[-3000:]
    newest = only_run(local_client(cwd))[0]
    assert newest.data.tags["runner.cache"] == "hit"
    assert newest.data.tags["runner.warehouse.feature_queries"] == "0"
    # The embedded warehouse's data is decided by config + code: a warm run does not start it.
    assert newest.data.tags["runner.warehouse.started"] == "false"
    assert oldest_started(cwd) == "true"
    oldest = only_run(local_client(cwd))[-1]
    assert newest.data.metrics["valid_auc"] == oldest.data.metrics["valid_auc"]


def oldest_started(cwd):
    return only_run(local_client(cwd))[-1].data.tags["runner.warehouse.started"]


def test_refresh_forces_a_fresh_pull(default_runs):
    cwd, _, _ = default_runs
    res = run_runner(["data.refresh=true", "model.num_boost_round=5"], cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    newest = only_run(local_client(cwd))[0]
    assert newest.data.tags["runner.cache"] == "miss"
    assert newest.data.tags["runner.warehouse.feature_queries"] == "1"
    cache_files = list((cwd / ".runner" / "cache").rglob("*.parquet"))
    assert len(cache_files) == 1
    assert not list((cwd / ".runner" / "cache").rglob("*.tmp"))


def test_rerun_from_mlflow_record_gives_same_metrics(default_runs):
    cwd, first, _ = default_runs
    run_id = re.search(r"runner: run ([0-9a-f]{32})", first.stdout).group(1)
    res = subprocess.run(
        [sys.executable, "-m", "runner.rerun", run_id], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    new_id = re.search(r"runner: run ([0-9a-f]{32}) FINISHED", res.stdout).group(1)
    client = local_client(cwd)
    old, new = client.get_run(run_id), client.get_run(new_id)
    assert new.data.tags["user.rerun_of"] == run_id
    for key in ("valid_auc", "test_auc", "valid_logloss", "best_iteration"):
        assert new.data.metrics[key] == old.data.metrics[key]


def test_overrides_reach_the_run_and_are_recorded(tmp_path, mlflow_server):
    args = SMALL + [
        "tracker=server",
        f"tracker.uri={mlflow_server.url}",
        "tracker.experiment=overrides",
        "model.params.num_leaves=63",
        f"data.cache_dir={tmp_path}/cache",
    ]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = scratch / f"runner-fakesnow-{gone.stdout.strip()}-killed"  # left by a SIGKILLed run
    orphan.mkdir()
    res = run_runner(args, tmp_path, env={"TMPDIR": str(scratch)})
    assert res.returncode == 0, res.stderr[-3000:]
    # The embedded warehouse leaves nothing in the temp folder (fakesnow makes a folder at
    # import and never removes it; runner gives it a TMPDIR of its own and removes that).
    assert not [p.name for p in scratch.iterdir() if p.name.startswith(("fakesnow_bucket_", "runner-fakesnow-"))]
    client = MlflowClient(tracking_uri=mlflow_server.url)
    [run] = only_run(client, "overrides")
    assert run.info.status == "FINISHED"
    assert run.data.params["model.params.num_leaves"] == "63"
    assert "model.params.num_leaves=63" in json.loads(run.data.tags["runner.overrides"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"model", "config"}


@pytest.mark.parametrize("objective,metric", [("regression", "rmse"), ("multiclass", "multi_logloss")])
def test_other_objectives(tmp_path, objective, metric):
    # Regression on spend, multiclass on plan: same warehouse, other label.
    label = {"regression": "TOTAL_AMOUNT", "multiclass": "PLAN"}[objective]
    args = SMALL + [
        f"model.params.objective={objective}",
        f"data.label={label}",
        "data.drop=[CHURNED]",
        "tracker.log_model=false",
    ]
    res = run_runner(args, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"valid_{metric}=" in res.stdout
    [run] = only_run(local_client(tmp_path))
    assert f"test_{metric}" in run.data.metrics
