"""runner's MLflow 3.17 client against the older tracking servers SageMaker managed MLflow runs.

A SageMaker tracking server keeps the MLflow version it was created with: 2.13, 2.16 or 3.0
(README, Tracking servers). Each version here is a real `mlflow server` of that version, in a
virtual environment of its own (tests/support/old_mlflow.py: installed with pip once per
machine under ~/.cache/runner-tests), behind the SigV4-verifying front door with an s3://
artifact root on moto, as tests/test_sagemaker.py sets SageMaker up. A single run, a sweep
with the best model registered, and a second registration of it (idempotent per run).

MLflow 2.3.2, older than any SageMaker offers, is the last server without dataset inputs
(runs/log-inputs came in 2.4): a run there must finish with one warning line. What counts as
a missing API, without a server: tests/unit/test_tracking_missing_apis.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Optional

import pytest
import requests

from tests.conftest import run_runner
from tests.support.old_mlflow import OldMlflowServer, Unavailable, mlflow_python
from tests.support.servers import MotoS3, free_port
from tests.support.sigv4_proxy import Sigv4Proxy

pytestmark = pytest.mark.integration

ARN = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/old"
SMALL = ["data=synthetic", "data.demo.rows=2000", "data.demo.n_features=5", "model.num_boost_round=20"]
SAGEMAKER_VERSIONS = ["2.13.2", "2.16.2", "3.0.0"]  # the client versions SageMaker names per server line
NO_DATASETS = "2.3.2"
API = "/api/2.0/mlflow"
WARNING = "runner: the tracking server does not support"


@dataclass
class Old:
    version: str
    server: OldMlflowServer
    proxy: Sigv4Proxy
    prefix: str  # of this server's artifact root in the bucket

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


@pytest.fixture(scope="module")
def s3():
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def old(request, s3, tmp_path_factory):
    """`mlflow server` of version request.param behind the SigV4 front door (one per version)."""
    version = request.param
    try:
        python = mlflow_python(version)
    except Unavailable as exc:
        pytest.skip(str(exc))
    prefix = f"v{version}"
    server = OldMlflowServer(
        python,
        tmp_path_factory.mktemp(f"mlflow-{version}"),
        artifact_root=f"s3://{s3.bucket}/{prefix}/",
        serve_artifacts=False,
        env=s3.env(),
    ).start()
    try:
        assert server.version() == version  # this venv's server, not the client's mlflow
        with Sigv4Proxy(
            server.url,
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            region=s3.region,
            service="sagemaker-mlflow",
            arn=ARN,
        ) as proxy:
            yield Old(version, server, proxy, prefix)
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("AWS_", "SAGEMAKER_MLFLOW_")):
            monkeypatch.delenv(key)


def _env(s3, old: Old) -> dict:
    return {
        **s3.env(),
        "SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT": old.proxy.url,
        # the sign-in link's API (asked only with stdout a terminal): a dead loopback port, never AWS
        "AWS_ENDPOINT_URL_SAGEMAKER": f"http://127.0.0.1:{free_port()}",
    }


def _tracker(experiment: str) -> list:
    return ["tracker=sagemaker", f"tracker.uri={ARN}", f"tracker.experiment={experiment}"]


def _runs(old: Old, experiment: str) -> list:
    r = requests.get(f"{old.url}{API}/experiments/get-by-name", params={"experiment_name": experiment}, timeout=10)
    r.raise_for_status()
    body = {"experiment_ids": [r.json()["experiment"]["experiment_id"]], "max_results": 100}
    r = requests.post(f"{old.url}{API}/runs/search", json=body, timeout=10)
    r.raise_for_status()
    return r.json().get("runs", [])


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _warnings(proc: subprocess.CompletedProcess) -> list:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith(WARNING)]


def _no_errors(proc: subprocess.CompletedProcess) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "runner: error" not in out and "Traceback" not in out, out[-3000:]


def _keys(s3, uri: str) -> set:
    """Object keys under an s3:// URI of the test bucket, relative to it."""
    head = f"s3://{s3.bucket}/"
    assert uri.startswith(head), uri
    prefix = uri[len(head) :].rstrip("/")
    return {k[len(prefix) + 1 :] for k in s3.keys(prefix + "/")}


def _model_files(old: Old, s3, source: str, run: Optional[dict] = None) -> set:
    """The files of a registered version's model, wherever its source points."""
    if source.startswith("runs:/"):
        run_id, _, path = source[len("runs:/") :].partition("/")
        r = requests.get(f"{old.url}{API}/runs/get", params={"run_id": run_id}, timeout=10)
        return _keys(s3, r.json()["run"]["info"]["artifact_uri"] + "/" + path)
    if source.startswith("models:/"):
        r = requests.get(f"{old.url}{API}/logged-models/{source[len('models:/') :]}", timeout=10)
        return _keys(s3, r.json()["model"]["info"]["artifact_uri"])
    return _keys(s3, source)


def _assert_all_finished(old: Old) -> None:
    r = requests.post(f"{old.url}{API}/experiments/search", json={"max_results": 1000}, timeout=10)
    ids = [e["experiment_id"] for e in r.json().get("experiments", [])]
    r = requests.post(f"{old.url}{API}/runs/search", json={"experiment_ids": ids, "max_results": 1000}, timeout=10)
    states = {run["info"]["run_id"]: run["info"]["status"] for run in r.json().get("runs", [])}
    assert states and set(states.values()) == {"FINISHED"}, states


@pytest.mark.parametrize("old", [*SAGEMAKER_VERSIONS, NO_DATASETS], indirect=True)
def test_single_run(old, s3, tmp_path):
    """Params, metrics, the dataset input (where the server has them) and the model files."""
    experiment = f"single-{uuid.uuid4().hex[:8]}"
    old.proxy.reset_counts()
    proc = run_runner([*_tracker(experiment), *SMALL], cwd=tmp_path, env=_env(s3, old))
    _no_errors(proc)
    assert old.proxy.rejected == []
    (run,) = _runs(old, experiment)
    info, data = run["info"], run["data"]
    assert info["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in data["params"]}
    assert params["tracker.kind"] == "sagemaker" and params["model.num_boost_round"] == "20"
    metrics = {m["key"]: m["value"] for m in data["metrics"]}
    assert 0.5 < metrics["valid_auc"] <= 1
    inputs = run.get("inputs", {}).get("dataset_inputs", [])
    assert [p for _, p in old.proxy.requests].count(f"{API}/runs/log-inputs") == 1
    if old.version == NO_DATASETS:
        assert inputs == []
        assert _warnings(proc) == [
            f"{WARNING} dataset inputs (MLflow {old.version}): the run's dataset is not recorded"
        ], proc.stderr[-3000:]
    else:
        assert len(inputs) == 1 and inputs[0]["dataset"]["source_type"] == "snowflake", inputs
        assert _warnings(proc) == []
    # Artifacts straight to the server's s3:// root (its own prefix per server).
    assert info["artifact_uri"].startswith(f"s3://{s3.bucket}/{old.prefix}/")
    keys = _keys(s3, info["artifact_uri"])
    assert {"model/MLmodel", "config/resolved.yaml", "data/feature_query.sql"} <= keys, keys
    _assert_all_finished(old)


@pytest.mark.parametrize("old", [NO_DATASETS], indirect=True)
def test_grid_warns_once_per_process(old, s3, tmp_path):
    """Two jobs of one process on a server without dataset inputs: one warning line, one try."""
    experiment = f"grid-{uuid.uuid4().hex[:8]}"
    old.proxy.reset_counts()
    proc = run_runner(
        [*_tracker(experiment), *SMALL, "model.params.num_leaves=15,31"], cwd=tmp_path, env=_env(s3, old), multirun=True
    )
    _no_errors(proc)
    assert len(_warnings(proc)) == 1, proc.stderr[-3000:]
    assert [p for _, p in old.proxy.requests].count(f"{API}/runs/log-inputs") == 1
    runs = _runs(old, experiment)
    assert len(runs) >= 2 and {r["info"]["status"] for r in runs} == {"FINISHED"}
    _assert_all_finished(old)


@pytest.mark.parametrize("old", SAGEMAKER_VERSIONS, indirect=True)
def test_sweep_registers_the_best_model(old, s3, tmp_path):
    """A 3-trial sweep: trials and parent FINISHED, the best trial's model logged and registered
    (an MLflow 3 logged model on a 3.x server, the run's artifacts on 2.x), registration again
    of the same run gives the same version."""
    experiment = f"sweep-{uuid.uuid4().hex[:8]}"
    name = f"churn-{old.version.replace('.', '-')}-{uuid.uuid4().hex[:6]}"
    old.proxy.reset_counts()
    proc = run_runner(
        [
            "sweep=lightgbm",
            "hydra.sweeper.n_trials=3",
            f"hydra.sweeper.registered_model={name}",
            *_tracker(experiment),
            *SMALL,
        ],
        cwd=tmp_path,
        env=_env(s3, old),
        multirun=True,
    )
    _no_errors(proc)
    assert old.proxy.rejected == []
    # Datasets and the registry search work on every SageMaker line; a 2.x server may only get
    # one line about MLflow 3 logged models (the model then goes to the run's artifacts).
    warned = _warnings(proc)
    assert len(warned) <= (1 if old.major < 3 else 0) and all("logged models" in w for w in warned), warned
    runs = _runs(old, experiment)
    assert len(runs) == 4 and {r["info"]["status"] for r in runs} == {"FINISHED"}, [r["info"] for r in runs]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in _tags(r)]
    tags = _tags(parent)
    best_run = tags["best.run_id"]
    assert best_run in {r["info"]["run_id"] for r in runs if r is not parent}
    assert tags["best.registered_model"] == name and tags["best.registered_version"] == "1", tags
    if old.major < 3:
        assert "best.model_id" not in tags  # no logged models on 2.x: the run's artifacts
    model_location = None
    if old.major >= 3 and tags.get("best.model_id"):  # an MLflow 3 logged model of the best run
        r = requests.get(f"{old.url}{API}/logged-models/{tags['best.model_id']}", timeout=10)
        model = r.json()["model"]["info"]
        assert model["status"] == "LOGGED_MODEL_READY" and model["source_run_id"] == best_run, model
        model_location = model["artifact_uri"]

    r = requests.get(f"{old.url}{API}/model-versions/get", params={"name": name, "version": "1"}, timeout=10)
    version = r.json()["model_version"]
    assert version["run_id"] == best_run and version.get("status", "READY") == "READY", version
    if model_location:
        assert version["source"] == model_location, version
    files = _model_files(old, s3, version["source"])
    assert "MLmodel" in files and any(re.search(r"\.(lgb|txt)$", f) for f in files), files

    # Registering the same run again (a sweep resumed after a kill): the same version, no new one.
    script = (
        "import sys; from omegaconf import OmegaConf; from runner.config import TrackerConfig; "
        "from runner.tracking import Tracker; "
        "cfg = OmegaConf.merge(OmegaConf.structured(TrackerConfig), {'kind': 'sagemaker', 'uri': sys.argv[1]}); "
        "v = Tracker(cfg).register(sys.argv[2], sys.argv[3], sys.argv[4]); print('VERSION', v.version)"
    )
    again = subprocess.run(
        [sys.executable, "-c", script, ARN, name, best_run, version["source"]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **_env(s3, old)},
    )
    assert again.returncode == 0 and "VERSION 1" in again.stdout, again.stderr[-3000:]
    assert WARNING not in again.stderr
    r = requests.get(f"{old.url}{API}/model-versions/search", params={"filter": f"name='{name}'"}, timeout=10)
    assert [v["version"] for v in r.json().get("model_versions", [])] == ["1"]
    _assert_all_finished(old)
