"""Bad input: one clear line naming the setting, non-zero exit, no run left RUNNING."""
from __future__ import annotations

import pytest
from mlflow import MlflowClient

from tests.conftest import run_runner

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
    ("constant-label", NO_FEATURES + ["data.query='select CUSTOMER_ID, PLAN, 1 as CHURNED from CUSTOMERS'"],
     "constant", 2),
    ("null-label", NO_FEATURES + ["data.query='select CUSTOMER_ID, PLAN, null::int as CHURNED from CUSTOMERS'"],
     "null", 2),
    ("empty-result", NO_FEATURES + ["data.query='select * from CUSTOMERS where 1 = 0'"], "empty", 2),
    ("non-numeric-label", ["data.label=PLAN"], "non-numeric", 2),
    ("bad-objective", ["model.params.objective=ranking"], "model.params.objective", 2),
    ("bad-split", ["data.split.valid=0.7", "data.split.test=0.5"], "data.split", 2),
    ("bad-features-target", ["data.features._target_=runner.nope.fn"], "data.features", 2),
    ("unreachable-tracker", ["tracker=server", "tracker.uri=http://127.0.0.1:9"], "tracker.uri", 2),
    ("not-a-url-tracker", ["tracker=server", "tracker.uri=localhost-5000"], "tracker.uri", 2),
    ("malformed-arn", ["tracker=sagemaker", "tracker.uri=arn:aws:s3:::bucket"], "tracker.uri", 2),
]


@pytest.mark.parametrize("case_id,overrides,needle,code", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path_factory, case_id, overrides, needle, code):
    cwd = tmp_path_factory.mktemp(case_id)
    res = run_runner(SMALL + overrides, cwd, env={"MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}, timeout=120)
    assert res.returncode == code, res.stdout[-2000:] + res.stderr[-2000:]
    assert needle in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    if code == 2:
        errors = [l for l in res.stderr.splitlines() if l.startswith("runner: error:")]
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
