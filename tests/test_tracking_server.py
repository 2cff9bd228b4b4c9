"""tracker=server against a real `mlflow server`, behind a counting front door.

The front door (Sigv4Proxy with verify=False) counts every HTTP request and,
with require_auth, accepts only the Authorization header MLflow's client builds
from MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN, as a
basic-auth or token gateway in front of an MLflow server does.
"""

from __future__ import annotations

import base64
import time
import uuid

import pytest
import requests
import yaml

from runner.tracking import flatten
from tests.conftest import run_runner
from tests.support.servers import free_port
from tests.support.sigv4_proxy import Sigv4Proxy

pytestmark = pytest.mark.integration

SMALL = ["data.demo.events=50000", "data.demo.customers=3000", "model.num_boost_round=30"]
USER, PASSWORD, TOKEN = "alice", "pw-canary-7f3e9a", "tok-canary-51c2d8"
API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("feature_cache"))


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _run(mlflow_server, run_id: str) -> dict:
    r = requests.get(f"{mlflow_server.url}{API}/runs/get", params={"run_id": run_id}, timeout=10)
    r.raise_for_status()
    return r.json()["run"]


def _run_ids(mlflow_server, experiment: str) -> list:
    r = requests.get(
        f"{mlflow_server.url}{API}/experiments/get-by-name", params={"experiment_name": experiment}, timeout=10
    )
    if r.status_code == 404:
        return []
    exp_id = r.json()["experiment"]["experiment_id"]
    r = requests.post(f"{mlflow_server.url}{API}/runs/search", json={"experiment_ids": [exp_id]}, timeout=10)
    return [run["info"]["run_id"] for run in r.json().get("runs", [])]


def _artifact(mlflow_server, run: dict, path: str) -> str:
    # mlflow-artifacts:/<exp>/<run>/artifacts -> served under /api/2.0/mlflow-artifacts/artifacts/
    root = run["info"]["artifact_uri"].split("mlflow-artifacts:/", 1)[1].strip("/")
    r = requests.get(f"{mlflow_server.url}/api/2.0/mlflow-artifacts/artifacts/{root}/{path}", timeout=10)
    r.raise_for_status()
    return r.text


def _error_lines(stderr: str):
    return [line for line in stderr.splitlines() if line.startswith("runner: error:")]


def test_single_run_with_basic_auth_everything_arrives(mlflow_server, tmp_path, cache_dir):
    experiment = f"server-{uuid.uuid4().hex[:8]}"
    with Sigv4Proxy(mlflow_server.url, verify=False, require_auth=_basic(USER, PASSWORD)) as door:
        proc = run_runner(
            [
                "tracker=server",
                f"tracker.uri={door.url}",
                f"tracker.experiment={experiment}",
                f"data.cache_dir={cache_dir}",
                *SMALL,
            ],
            cwd=tmp_path,
            env={"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert door.rejected == []
        sent = door.requests
    (run_id,) = _run_ids(mlflow_server, experiment)
    run = _run(mlflow_server, run_id)
    assert run["info"]["status"] == "FINISHED"
    data = run["data"]

    # Everything the run logged arrived: every leaf of the resolved config as a param,
    # the metrics, runner's tags, the dataset input and the model.
    resolved = yaml.safe_load(_artifact(mlflow_server, run, "config/resolved.yaml"))
    params = {p["key"]: p["value"] for p in data["params"]}
    assert set(params) == set(flatten(resolved))
    metrics = {m["key"] for m in data["metrics"]}
    assert {
        "valid_auc",
        "test_auc",
        "best_iteration",
        "rows_train",
        "rows_valid",
        "rows_test",
        "features_seconds",
    } <= metrics
    tags = {t["key"]: t["value"] for t in data["tags"]}
    assert {"runner.cache", "runner.cache_key", "runner.objective", "runner.version"} <= set(tags)
    assert len(run["inputs"]["dataset_inputs"]) == 1
    assert "flavors" in _artifact(mlflow_server, run, "model/MLmodel")

    # Requests of one full run on a fresh experiment (measured; see the closing note):
    # tracking calls are one each, artifacts one PUT per file.
    paths = [p for _, p in sent]
    tracking = [p for p in paths if p.startswith(API + "/")]
    assert tracking == [
        f"{API}/experiments/get-by-name",
        f"{API}/experiments/create",
        f"{API}/runs/create",
        f"{API}/runs/log-batch",
        f"{API}/runs/log-inputs",
        f"{API}/runs/update",
    ], tracking
    assert len(paths) - len(tracking) == len([p for p in paths if "/mlflow-artifacts/" in p])

    everything = proc.stdout + proc.stderr + "".join(params.values()) + "".join(tags.values())
    assert PASSWORD not in everything


def test_token_auth_and_request_count_without_model(mlflow_server, tmp_path, cache_dir):
    experiment = f"server-tok-{uuid.uuid4().hex[:8]}"
    requests.post(f"{mlflow_server.url}{API}/experiments/create", json={"name": experiment}, timeout=10)
    with Sigv4Proxy(mlflow_server.url, verify=False, require_auth=f"Bearer {TOKEN}") as door:
        proc = run_runner(
            [
                "tracker=server",
                f"tracker.uri={door.url}",
                f"tracker.experiment={experiment}",
                "tracker.log_model=false",
                f"data.cache_dir={cache_dir}",
                *SMALL,
            ],
            cwd=tmp_path,
            env={"MLFLOW_TRACKING_TOKEN": TOKEN},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert door.rejected == []
        # A run costs: one experiment lookup per process + create, one batch (the report's test
        # evaluation included), its config (what `python -m runner.rerun` reads), terminate; and
        # the report: one upload per file under evaluation/, nothing else.
        sent = [(m, p if m != "PUT" else p.rsplit("/artifacts/", 1)[-1]) for m, p in door.requests]
        report = [r for r in sent if r[1].startswith("evaluation/")]
        assert [r for r in sent if r not in report] == [
            ("GET", f"{API}/experiments/get-by-name"),
            ("POST", f"{API}/runs/create"),
            ("POST", f"{API}/runs/log-batch"),
            ("PUT", "config/resolved.yaml"),
            ("POST", f"{API}/runs/update"),
        ]
        assert {m for m, _ in report} == {"PUT"} and ("PUT", "evaluation/report.html") in report, report
        assert sent[-1] == ("POST", f"{API}/runs/update")  # the report is uploaded before the run ends
    (run_id,) = _run_ids(mlflow_server, experiment)
    assert _run(mlflow_server, run_id)["info"]["status"] == "FINISHED"
    assert TOKEN not in proc.stdout + proc.stderr


def test_wrong_password_is_one_clear_error(mlflow_server, tmp_path):
    experiment = f"server-bad-{uuid.uuid4().hex[:8]}"
    with Sigv4Proxy(mlflow_server.url, verify=False, require_auth=_basic(USER, PASSWORD)) as door:
        started = time.monotonic()
        proc = run_runner(
            ["tracker=server", f"tracker.uri={door.url}", f"tracker.experiment={experiment}", *SMALL],
            cwd=tmp_path,
            env={
                "MLFLOW_TRACKING_USERNAME": USER,
                "MLFLOW_TRACKING_PASSWORD": "wrong-pw-1234",
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
            },
        )
        elapsed = time.monotonic() - started
        assert len(door.rejected) == 1 and door.requests == []
    assert proc.returncode != 0 and elapsed < 30
    (line,) = _error_lines(proc.stderr)
    assert "MLFLOW_TRACKING_USERNAME" in line and "tracker.uri" in line, line
    assert "wrong-pw-1234" not in proc.stdout + proc.stderr
    assert _run_ids(mlflow_server, experiment) == []


def test_unreachable_server_is_one_clear_error_in_bounded_time(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    # runner's default retries (tracker.max_retries=2), not the fixture's 0
    proc = run_runner(
        ["tracker=server", f"tracker.uri={uri}", *SMALL],
        cwd=tmp_path,
        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"},
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert elapsed < 30, elapsed
    (line,) = _error_lines(proc.stderr)
    assert f"tracker.uri={uri}" in line and "cannot reach the MLflow server" in line, line
    assert "Traceback" not in proc.stderr


def test_url_that_is_not_http_is_a_config_error(tmp_path):
    proc = run_runner(["tracker=server", "tracker.uri=127.0.0.1:5000", *SMALL], cwd=tmp_path)
    assert proc.returncode != 0
    (line,) = _error_lines(proc.stderr)
    assert "tracker.uri must be an http(s) URL" in line, line
