"""Bad input: one clear line naming the setting, non-zero exit, no run left RUNNING."""

from __future__ import annotations

import os
import subprocess

import pytest
from mlflow import MlflowClient

from tests.conftest import run_runner
from tests.support.servers import FakesnowProcess, free_port
from tests.support.sigv4_proxy import Sigv4Proxy

pytestmark = pytest.mark.integration

SMALL = ["data.demo.events=20000", "data.demo.customers=2000", "model.num_boost_round=10"]
NO_FEATURES = ["data.features=null"]

CASES = [
    # (id, overrides, text the error must contain, exit code)
    ("unknown-data-choice", ["data=nope"], "data", 1),
    ("unknown-model-choice", ["model=xgboost"], "model", 1),
    ("unknown-tracker-choice", ["tracker=cloud"], "tracker", 1),
    ("mistyped-key", ["model.params.num_leavs=63"], "num_leavs", 1),
    ("wrong-type", ["model.params.num_leaves=many"], "num_leaves", 1),
    ("missing-table", NO_FEATURES + ["data.table=NO_SUCH_TABLE"], "data.table", 2),
    ("injection", NO_FEATURES + ["data.table='X; DROP TABLE Y'"], "data.table", 2),
    ("two-definitions", ["data.table=EVENTS"], "exactly one feature definition", 2),
    ("missing-label", ["data.label=NO_SUCH_COLUMN"], "data.label", 2),
    ("missing-column", NO_FEATURES + ["data.query='select NO_COL, CHURNED from CUSTOMERS'"], "data.query", 2),
    (
        "constant-label",
        NO_FEATURES + ["data.query='select CUSTOMER_ID, PLAN, 1 as CHURNED from CUSTOMERS'"],
        "constant",
        2,
    ),
    (
        "null-label",
        NO_FEATURES + ["data.query='select CUSTOMER_ID, PLAN, null::int as CHURNED from CUSTOMERS'"],
        "null",
        2,
    ),
    ("empty-result", NO_FEATURES + ["data.query='select * from CUSTOMERS where 1 = 0'"], "empty", 2),
    ("three-valued-binary-label", ["data.label=PLAN"], "model.params.objective=binary needs two", 2),
    ("bad-objective", ["model.params.objective=ranking"], "model.params.objective", 2),
    ("bad-split", ["data.split.valid=0.7", "data.split.test=0.5"], "data.split", 2),
    ("bad-features-target", ["data.features._target_=runner.nope.fn"], "data.features", 2),
    ("unreachable-tracker", ["tracker=server", "tracker.uri=http://127.0.0.1:9"], "tracker.uri", 2),
    ("not-a-url-tracker", ["tracker=server", "tracker.uri=localhost-5000"], "tracker.uri", 2),
    ("malformed-arn", ["tracker=sagemaker", "tracker.uri=arn:aws:s3:::bucket"], "tracker.uri", 2),
]


SWEEP = ["sweep=lightgbm", "hydra.sweeper.n_trials=1"]
# Sweeps (--multirun): the search space, sampler, pruner and storage.
SWEEP_CASES = [
    ("unknown-sampler", ["hydra/sweeper/sampler=nope"], "hydra/sweeper/sampler", 1),
    ("unknown-pruner", ["hydra/sweeper/pruner=nope"], "hydra/sweeper/pruner", 1),
    ("space-low-above-high", ["model.params.num_leaves=int(interval(300, 255))"], "model.params.num_leaves", 2),
    ("space-empty-choice", ["model.params.num_leaves=choice()"], "model.params.num_leaves=choice()", 1),
    ("space-log-low-zero", ["model.params.learning_rate=tag(log, interval(0, 0.3))"], "model.params.learning_rate", 2),
    (
        "storage-unreachable",
        ["hydra.sweeper.storage=postgresql+psycopg2://runner@127.0.0.1:9/optuna"],
        "hydra.sweeper.storage",
        2,
    ),
    ("storage-malformed", ["hydra.sweeper.storage=notaurl"], "hydra.sweeper.storage", 2),
]


def check_bad(res, cwd, needle, code):
    """One line naming the setting, the exit code, no traceback, no run left RUNNING."""
    assert res.returncode == code, res.stdout[-2000:] + res.stderr[-2000:]
    assert needle in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    if code == 2:
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("runner: error:")]
        assert len(errors) == 1 and needle in errors[0], res.stderr
    db = cwd / "mlruns" / "mlflow.db"
    if db.exists():
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert all(r.info.status not in ("RUNNING", "FINISHED") for r in runs)


@pytest.mark.parametrize("case_id,overrides,needle,code", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
def test_bad_sweep_input(tmp_path_factory, case_id, overrides, needle, code):
    cwd = tmp_path_factory.mktemp(case_id)
    res = run_runner(SMALL + SWEEP + overrides, cwd, timeout=120, multirun=True)
    check_bad(res, cwd, needle, code)


def test_full_traceback_with_hydra_full_error(tmp_path):
    res = run_runner(SMALL + ["data.label=NO_SUCH_COLUMN"], tmp_path, env={"HYDRA_FULL_ERROR": "1"}, timeout=120)
    assert res.returncode != 0
    assert "Traceback" in res.stderr and "data.label" in res.stderr


def test_cache_folder_exists_but_is_not_writable(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: make the folder immutable instead
        subprocess.run(["chattr", "+i", str(cache)], check=True)
    else:
        cache.chmod(0o555)
    try:
        res = run_runner(SMALL + [f"data.cache_dir={cache}"], tmp_path, timeout=120)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(cache)], check=True)
        cache.chmod(0o755)
    check_bad(res, tmp_path, "data.cache_dir", 2)
    assert "not writable" in res.stderr


def test_wrong_aws_credentials(tmp_path, mlflow_server):
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/test"
    with Sigv4Proxy(
        mlflow_server.url,
        access_key="AKIDRUNNERBAD",
        secret_key="the-right-secret",
        service="sagemaker-mlflow",
        arn=arn,
    ) as door:
        env = {
            "AWS_ACCESS_KEY_ID": "AKIDRUNNERBAD",
            "AWS_SECRET_ACCESS_KEY": "a-wrong-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT": door.url,
            # the sign-in link's API (asked only with stdout a terminal): a dead loopback port, never AWS
            "AWS_ENDPOINT_URL_SAGEMAKER": f"http://127.0.0.1:{free_port()}",
        }
        res = run_runner(SMALL + ["tracker=sagemaker", f"tracker.uri={arn}"], tmp_path, env=env, timeout=120)
        assert door.rejected and not door.requests  # refused at the door, nothing created
    check_bad(res, tmp_path, "AWS credentials", 2)
    assert "tracker.uri" in res.stderr


def test_wrong_snowflake_credentials(tmp_path):
    """fakesnow accepts any password: a front door refuses the login as an account would."""
    server = FakesnowProcess(tmp_path / "fs").start()
    try:
        with Sigv4Proxy(f"http://127.0.0.1:{server.port}", verify=False, require_auth='Snowflake Token="x"') as door:
            home = tmp_path / "sfhome"
            home.mkdir()
            toml = home / "connections.toml"
            toml.write_text(
                f'[test]\naccount = "fakesnow"\nuser = "fake"\npassword = "wrong-password"\n'
                f'host = "127.0.0.1"\nport = {door.port}\nprotocol = "http"\ndatabase = "DEMO"\n'
                f'schema = "PUBLIC"\nnetwork_timeout = 3\n'
            )
            toml.chmod(0o600)
            res = run_runner(
                SMALL + ["data=snowflake", "data.connection_name=test", "data.cache_dir=cache"],
                tmp_path,
                env={"SNOWFLAKE_HOME": str(home)},
                timeout=300,
            )
            assert door.rejected
    finally:
        server.stop()
    check_bad(res, tmp_path, "data.connection_name=test", 2)
    assert "wrong-password" not in res.stderr + res.stdout


@pytest.mark.parametrize("case_id,overrides,needle,code", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path_factory, case_id, overrides, needle, code):
    cwd = tmp_path_factory.mktemp(case_id)
    res = run_runner(SMALL + overrides, cwd, env={"MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}, timeout=120)
    assert res.returncode == code, res.stdout[-2000:] + res.stderr[-2000:]
    assert needle in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    if code == 2:
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("runner: error:")]
        assert len(errors) == 1, res.stderr
    db = cwd / "mlruns" / "mlflow.db"
    if db.exists():
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert all(r.info.status != "RUNNING" for r in runs)
        assert all(r.info.status == "FAILED" for r in runs)


def test_cache_dir_not_writable(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    res = run_runner(SMALL + [f"data.cache_dir={blocked}/cache"], tmp_path, timeout=120)
    assert res.returncode == 2
    assert "data.cache_dir" in res.stderr
