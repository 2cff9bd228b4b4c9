"""tracker=sagemaker end to end, as on Amazon SageMaker managed MLflow.

`python -m runner tracker=sagemaker tracker.uri=<ARN>` goes through the
sagemaker-mlflow plugin (SigV4 signing, ARN header, s3:// artifacts) to a
verifying SigV4 proxy in front of a real `mlflow server` that hands out
s3:// artifact URIs; artifacts land in a local S3 (moto). The line that opens the UI asks a
local stand-in of SageMaker's own API for a sign-in link (AWS_ENDPOINT_URL_SAGEMAKER) when
stdout is a terminal (a pseudo-terminal here); on a pipe it asks for none.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from runner.tracking.sagemaker import READ_TIMEOUT, ui_line
from tests.conftest import run_runner
from tests.support.sagemaker_api import SageMakerApi
from tests.support.servers import MlflowServer, MotoS3, free_port
from tests.support.sigv4_proxy import Sigv4Proxy

pytestmark = pytest.mark.integration

ARN = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/test"
SMALL = ["data.demo.events=50000", "data.demo.customers=3000", "model.num_boost_round=30"]


@pytest.fixture(scope="module")
def s3():
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream(s3, tmp_path_factory):
    """`mlflow server --default-artifact-root s3://bucket/ --no-serve-artifacts`, as SageMaker runs it."""
    server = MlflowServer(
        tmp_path_factory.mktemp("sm_mlflow"), artifact_root=f"s3://{s3.bucket}/", serve_artifacts=False, env=s3.env()
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def _proxy(upstream, s3):
    with Sigv4Proxy(
        upstream.url,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        region=s3.region,
        service="sagemaker-mlflow",
        arn=ARN,
    ) as proxy:
        yield proxy


@pytest.fixture
def proxy(_proxy):
    _proxy.reset_counts()
    return _proxy


@pytest.fixture(scope="module")
def _sm_api(s3):
    with SageMakerApi(access_key=s3.access_key, secret_key=s3.secret_key, region=s3.region) as api:
        yield api


@pytest.fixture
def sm_api(_sm_api):
    _sm_api.reset()
    return _sm_api


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("AWS_", "SAGEMAKER_MLFLOW_")):
            monkeypatch.delenv(key)


def _env(s3, proxy, **overrides):
    return {**s3.env(), "SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT": proxy.url, **overrides}


def _runs(upstream, experiment: str, status: str | None = None):
    r = requests.get(
        f"{upstream.url}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": experiment}, timeout=10
    )
    if r.status_code == 404:
        return []
    exp_id = r.json()["experiment"]["experiment_id"]
    body = {"experiment_ids": [exp_id], "max_results": 100}
    if status:
        body["filter"] = f"attributes.status = '{status}'"
    r = requests.post(f"{upstream.url}/api/2.0/mlflow/runs/search", json=body, timeout=10)
    r.raise_for_status()
    return r.json().get("runs", [])


def _all_running(upstream):
    r = requests.post(f"{upstream.url}/api/2.0/mlflow/experiments/search", json={"max_results": 1000}, timeout=10)
    ids = [e["experiment_id"] for e in r.json().get("experiments", [])]
    r = requests.post(
        f"{upstream.url}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": ids, "filter": "attributes.status = 'RUNNING'"},
        timeout=10,
    )
    return r.json().get("runs", [])


def _run_on_a_terminal(args, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """run_runner with stdout on a pseudo-terminal, as in a user's shell (stderr stays a pipe)."""
    cmd = [sys.executable, "-m", "runner", *args]
    full_env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **env}
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE
        )
    finally:
        os.close(slave)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    finally:
        reader.join(timeout=30)
        os.close(master)
    out = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")  # the terminal's line ends
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err.decode(errors="replace"))


def _error_lines(stderr: str):
    return [line for line in stderr.splitlines() if line.startswith("runner: error:")]


def test_single_run_end_to_end(proxy, upstream, s3, sm_api, tmp_path):
    experiment = f"sm-{uuid.uuid4().hex[:8]}"
    proc = _run_on_a_terminal(
        ["tracker=sagemaker", f"tracker.uri={ARN}", f"tracker.experiment={experiment}", *SMALL],
        cwd=tmp_path,
        env=_env(s3, proxy, **sm_api.env()),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proxy.rejected == []
    # Every request of the run (signed, through the front door); artifacts go to S3 directly.
    api = "/api/2.0/mlflow"
    assert [p for _, p in proxy.requests] == [
        f"{api}/experiments/get-by-name",
        f"{api}/experiments/create",
        f"{api}/runs/create",
        f"{api}/runs/log-batch",
        f"{api}/runs/log-inputs",
        f"{api}/runs/update",
    ]

    (run,) = _runs(upstream, experiment)
    info, data = run["info"], run["data"]
    assert info["status"] == "FINISHED"
    assert info["artifact_uri"].startswith(f"s3://{s3.bucket}/")
    params = {p["key"]: p["value"] for p in data["params"]}
    assert params["tracker.kind"] == "sagemaker" and params["model.num_boost_round"] == "30"
    metrics = {m["key"]: m["value"] for m in data["metrics"]}
    assert 0.5 < metrics["valid_auc"] <= 1
    inputs = run["inputs"]["dataset_inputs"]
    assert len(inputs) == 1 and inputs[0]["dataset"]["source_type"] == "snowflake"

    prefix = info["artifact_uri"][len(f"s3://{s3.bucket}/") :]
    keys = {k[len(prefix) + 1 :] for k in s3.keys(prefix)}
    assert {"model/MLmodel", "config/resolved.yaml", "data/feature_query.sql"} <= keys, keys
    assert any(k.startswith("model/") and k.endswith((".lgb", ".txt", ".pkl")) for k in keys), keys
    assert _all_running(upstream) == []

    # The UI: a sign-in link SageMaker's API made (signed for service sagemaker, region of the
    # ARN), then the experiment's page on the same site; the link is a credential, so it is on
    # the terminal and nowhere else (not in MLflow, S3, Hydra's outputs or the logs).
    assert sm_api.rejected == []
    assert sm_api.calls == [
        (
            "CreatePresignedMlflowTrackingServerUrl",
            {"TrackingServerName": "test", "ExpiresInSeconds": 300, "SessionExpirationDurationInSeconds": 43200},
        )
    ]
    (link,) = sm_api.issued
    (line,) = [line for line in proc.stdout.splitlines() if "open the UI:" in line]
    page = f"{sm_api.url}/#/experiments/{info['experiment_id']}/runs"
    assert line.startswith(f"  open the UI: {link} (sign-in link: one use, valid 5 minutes), then {page}"), line
    token = link.split("authToken=", 1)[1]
    assert token not in proc.stderr and proc.stdout.count(token) == 1
    assert "Found endpoint" not in proc.stderr  # botocore's INFO line for AWS_ENDPOINT_URL_SAGEMAKER
    leaks = [
        p
        for root in (tmp_path, upstream.root)
        for p in root.rglob("*")
        if p.is_file() and token.encode() in p.read_bytes()
    ]
    leaks += [
        k for k in s3.keys(prefix) if token.encode() in s3.client().get_object(Bucket=s3.bucket, Key=k)["Body"].read()
    ]
    assert leaks == []

    # The model registry goes through the plugin's registry store (what a sweep uses for
    # its best trial): runner's Tracker.register, in a process of its own.
    proxy.reset_counts()
    script = (
        "import sys; from omegaconf import OmegaConf; from runner.config import TrackerConfig; "
        "from runner.tracking import Tracker; "
        "cfg = OmegaConf.merge(OmegaConf.structured(TrackerConfig), {'kind': 'sagemaker', 'uri': sys.argv[1]}); "
        "run_id = sys.argv[2]; v = Tracker(cfg).register('churn-sm', run_id, f'runs:/{run_id}/model'); "
        "print('VERSION', v.version)"
    )
    reg = subprocess.run(
        [sys.executable, "-c", script, ARN, info["run_id"]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **_env(s3, proxy)},
    )
    assert reg.returncode == 0 and "VERSION 1" in reg.stdout, reg.stderr[-3000:]
    assert proxy.rejected == [] and ("POST", "/api/2.0/mlflow/model-versions/create") in proxy.requests
    r = requests.get(
        f"{upstream.url}/api/2.0/mlflow/model-versions/get", params={"name": "churn-sm", "version": "1"}, timeout=10
    )
    assert r.json()["model_version"]["run_id"] == info["run_id"]


def test_wrong_secret_fails_fast_with_one_clear_error(proxy, upstream, s3, tmp_path):
    experiment = f"sm-bad-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    # runner's own retry settings (not the fixture's 0): a 403 must not be retried anyway.
    proc = run_runner(
        ["tracker=sagemaker", f"tracker.uri={ARN}", f"tracker.experiment={experiment}", *SMALL],
        cwd=tmp_path,
        env=_env(s3, proxy, AWS_SECRET_ACCESS_KEY="not-the-secret", MLFLOW_HTTP_REQUEST_MAX_RETRIES="2"),
    )
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert elapsed < 30
    (line,) = _error_lines(proc.stderr)
    assert "AWS credentials" in line and "tracker.uri" in line, line
    assert "Traceback" not in proc.stderr
    assert "not-the-secret" not in proc.stdout + proc.stderr
    assert proxy.requests == []
    assert len(proxy.rejected) == 1 and proxy.rejected[0][2] == "signature mismatch"
    assert _runs(upstream, experiment) == []
    assert _all_running(upstream) == []


def test_unreachable_artifact_store_fails_the_run(proxy, upstream, s3, tmp_path):
    """The run exists when S3 fails: it must end FAILED with the error, never stay RUNNING."""
    experiment = f"sm-s3-{uuid.uuid4().hex[:8]}"
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = run_runner(
        ["tracker=sagemaker", f"tracker.uri={ARN}", f"tracker.experiment={experiment}", *SMALL],
        cwd=tmp_path,
        env=_env(s3, proxy, MLFLOW_S3_ENDPOINT_URL=dead, AWS_MAX_ATTEMPTS="2"),
    )
    assert proc.returncode != 0 and time.monotonic() - started < 90
    (line,) = _error_lines(proc.stderr)
    assert f"MLFLOW_S3_ENDPOINT_URL={dead}" in line and "artifacts" in line, line
    (run,) = _runs(upstream, experiment)
    assert run["info"]["status"] == "FAILED"
    assert any(t["key"] == "runner.error" for t in run["data"]["tags"])
    assert proxy.rejected == [] and _all_running(upstream) == []


def test_missing_credentials_fail_before_any_request(proxy, s3, tmp_path):
    env = {k: v for k, v in _env(s3, proxy).items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    proc = run_runner(["tracker=sagemaker", f"tracker.uri={ARN}", *SMALL], cwd=tmp_path, env=env)
    assert proc.returncode != 0
    (line,) = _error_lines(proc.stderr)
    assert "no AWS credentials" in line and "AWS_ACCESS_KEY_ID" in line, line
    assert proxy.requests == [] and proxy.rejected == []


@pytest.mark.parametrize(
    "uri",
    [
        "arn:aws:sagemaker:us-east-1:1234:mlflow-tracking-server/test",  # account is 12 digits
        "arn:aws:s3:us-east-1:123456789012:mlflow-tracking-server/test",  # not sagemaker
        "https://us-east-1.experiments.sagemaker.aws",  # a URL, not the ARN
    ],
)
def test_malformed_arn_is_a_config_error_before_any_request(proxy, s3, tmp_path, uri):
    proc = run_runner(["tracker=sagemaker", f"tracker.uri={uri}", *SMALL], cwd=tmp_path, env=_env(s3, proxy))
    assert proc.returncode != 0
    (line,) = _error_lines(proc.stderr)
    assert "tracker.uri must be a SageMaker MLflow tracking-server ARN" in line, line
    assert proxy.requests == [] and proxy.rejected == []


# ------------------------------------------------------------------- the line that opens the UI


def test_ui_line_on_a_pipe_is_the_aws_command(proxy, s3, sm_api, tmp_path):
    """stdout is a pipe (a CI log, `> run.log`): runner asks SageMaker for no link (a credential
    in a log) and the line is the aws command that makes one and the page, from
    Tracker.ui_command in a process of its own (no run needed)."""
    experiment = f"sm-ui-{uuid.uuid4().hex[:8]}"
    script = (
        "import sys; from omegaconf import OmegaConf; from runner.config import TrackerConfig; "
        "from runner.tracking import Tracker; "
        "cfg = OmegaConf.merge(OmegaConf.structured(TrackerConfig), "
        "{'kind': 'sagemaker', 'uri': sys.argv[1], 'experiment': sys.argv[2]}); "
        "t = Tracker(cfg); print('EXPERIMENT', t.experiment_id()); print('UI', t.ui_command(run_id='r' * 32))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, ARN, experiment],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **_env(s3, proxy, **sm_api.env())},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp_id = proc.stdout.split("EXPERIMENT ", 1)[1].split()[0]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("UI ")]
    assert line == (
        "UI aws sagemaker create-presigned-mlflow-tracking-server-url --tracking-server-name test "
        "--region us-east-1 prints a sign-in link (runner got none: stdout is not a terminal), then page "
        f"#/experiments/{exp_id}/runs/{'r' * 32}"
    )
    assert sm_api.calls == [] and sm_api.rejected == [] and sm_api.issued == []
    assert "authToken" not in proc.stdout + proc.stderr


@pytest.fixture
def aws_env(s3, monkeypatch):
    """AWS credentials for the stand-ins, and stdout a terminal (under pytest it is a capture file)."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)


def test_ui_line_without_a_link_is_the_aws_command(aws_env, sm_api, monkeypatch):
    """SageMaker refuses the sign-in link (AccessDenied): the aws command, with what the identity needs."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", sm_api.url)
    sm_api.reset("deny")
    assert ui_line(ARN, "3", "r" * 32) == (
        "aws sagemaker create-presigned-mlflow-tracking-server-url --tracking-server-name test "
        "--region us-east-1 prints a sign-in link (runner got none: SageMaker answered AccessDeniedException: "
        "the AWS identity needs sagemaker:CreatePresignedMlflowTrackingServerUrl), then page "
        f"#/experiments/3/runs/{'r' * 32}"
    )
    assert len(sm_api.calls) == 1 and sm_api.rejected == [] and sm_api.issued == []


def test_ui_line_waits_once_and_briefly(aws_env, sm_api, monkeypatch):
    """A SageMaker API that does not answer, or is not there, costs one short try."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", sm_api.url)
    sm_api.reset("hang")
    started = time.monotonic()
    line = ui_line(ARN, "3", "abc")
    assert time.monotonic() - started < READ_TIMEOUT + 3
    assert len(sm_api.calls) == 1 and sm_api.issued == []
    assert line.startswith("aws sagemaker create-presigned-mlflow-tracking-server-url --tracking-server-name test")
    assert f"SageMaker's API did not answer within {READ_TIMEOUT:g} s" in line and line.endswith(
        "#/experiments/3/runs/abc"
    )

    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", dead)
    started = time.monotonic()
    line = ui_line(ARN, "3")
    assert time.monotonic() - started < 5
    assert f"cannot reach SageMaker's API at {dead}" in line, line
    assert line.endswith("then page #/experiments/3/runs?workflowType=machine_learning")


def test_ui_link_is_not_in_debug_logs(aws_env, sm_api, monkeypatch):
    """botocore logs response bodies at DEBUG (hydra.verbose=true): the link is not among them."""
    import io
    import logging

    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", sm_api.url)
    root, text = logging.getLogger(), io.StringIO()
    handler, level = logging.StreamHandler(text), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        line = ui_line(ARN, "3")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    (link,) = sm_api.issued
    assert line.startswith(link)
    assert "x-amz-target" in text.getvalue().lower()  # botocore did log the request at DEBUG
    assert link.split("authToken=", 1)[1] not in text.getvalue()
