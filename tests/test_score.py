"""`python -m runner.score MODEL_URI` scores a feature definition's rows with a logged model,
end to end on real components.

A model is trained once per module with `python -m runner` on the embedded warehouse (local
tracker in a temp folder) and registered as models:/churn/1. Scoring runs as a subprocess:

- on the embedded warehouse: rows out = entities in, the predictions equal
  `mlflow.pyfunc.load_model(uri).predict(raw rows)` of the training pull (the feature cache),
  the run is FINISHED with the predictions artifact and the dataset input (same digest as
  training);
- on `data=snowflake` against a fakesnow server behind a recording front door, through the
  real connector: a label-free feature table, the table written and read back, a rerun
  replacing its rows (and only them), and the statements the warehouse received;
- bad input (unknown model, missing key column, unwritable table, a definition that needs
  the label) -> one `runner: error:` line naming the setting, no run left RUNNING;
- Ctrl-C while the scoring run exists -> KILLED, exit 130.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from runner.embedded.demo import seed_sql
from tests.conftest import run_runner
from tests.support.servers import FakesnowProcess
from tests.support.sigv4_proxy import Sigv4Proxy

pytestmark = pytest.mark.integration

DEMO = SimpleNamespace(seed=7, customers=3000, events=40000)
DATA = [f"data.demo.customers={DEMO.customers}", f"data.demo.events={DEMO.events}"]
CANARY = "canary-pw-score-71c3"
NOPS = [r"^ALTER SESSION SET QUERY_TAG.*", r"^ALTER SESSION UNSET QUERY_TAG.*", r"^select system\$cancel_all_queries.*"]
SNOWFLAKE = ["data=snowflake", "data.connection_name=test", "data.features=null", "data.table=SCORE_ME"]


def run_score(args, cwd: Path, env=None, timeout=600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **(env or {})}
    cmd = [sys.executable, "-m", "runner.score", *args]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def client_of(cwd: Path) -> MlflowClient:
    uri = f"sqlite:///{cwd}/mlruns/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def scoring_run_id(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return re.search(r"runner: scoring run ([0-9a-f]{32}) FINISHED", proc.stdout).group(1)


def error_lines(stderr: str):
    return [line for line in stderr.splitlines() if line.startswith("runner: error:")]


def all_runs(client: MlflowClient):
    return client.search_runs([client.get_experiment_by_name("runner").experiment_id])


def predictions_artifact(client: MlflowClient, run_id: str, dst: Path) -> pd.DataFrame:
    path = client.download_artifacts(run_id, "predictions/predictions.parquet", str(dst))
    frame = pq.read_table(path).to_pandas()
    return frame.assign(CUSTOMER_ID=frame["CUSTOMER_ID"].astype("int64"))


def reference(model_uri: str, store: str, raw: pd.DataFrame) -> pd.Series:
    """What the model predicts for raw rows (by entity), loaded as users load it."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
        values = np.asarray(model.predict(raw.drop(columns=["CHURNED"], errors="ignore")), dtype=float)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        # set_registry_uri(None) leaves MLFLOW_REGISTRY_URI in os.environ (MLflow 3.17): later
        # tests' runner processes would inherit this store as their registry.
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return pd.Series(values, index=raw["CUSTOMER_ID"].astype("int64").to_numpy())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training run on the embedded warehouse, its model also registered as churn/1."""
    cwd = tmp_path_factory.mktemp("score")
    proc = run_runner([*DATA, "model.num_boost_round=30"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = re.search(r"runner: run ([0-9a-f]{32}) FINISHED", proc.stdout).group(1)
    client = client_of(cwd)
    client.create_registered_model("churn")
    version = client.create_model_version("churn", f"runs:/{run_id}/model", run_id=run_id)
    assert str(version.version) == "1"
    (entry,) = (cwd / ".runner" / "cache").rglob("*.parquet")  # the training pull, label included
    raw = pq.read_table(entry).to_pandas()
    return SimpleNamespace(
        cwd=cwd, run_id=run_id, uri=f"runs:/{run_id}/model", store=f"sqlite:///{cwd}/mlruns/mlflow.db", raw=raw
    )


# --------------------------------------------------------------------------- #
# Embedded warehouse
# --------------------------------------------------------------------------- #


def test_scores_every_entity_with_the_model_on_the_embedded_warehouse(trained, tmp_path):
    client = client_of(trained.cwd)
    proc = run_score([trained.uri, *DATA], trained.cwd)
    run_id = scoring_run_id(proc)
    assert f'scored {DEMO.customers} entities -> "DEMO"."PUBLIC".RUNNER_PREDICTIONS' in proc.stdout
    assert "the artifact stays" in proc.stdout

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == f"score-{trained.run_id[:12]}"
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["runner.job"] == "score" and tags["runner.score.model_uri"] == trained.uri
    assert tags["runner.score.model_run_id"] == trained.run_id
    assert tags["runner.score.label_dropped"] == "CHURNED"
    assert tags["runner.score.table"] == '"DEMO"."PUBLIC".RUNNER_PREDICTIONS'
    assert metrics["rows_scored"] == DEMO.customers and metrics["rows_replaced"] == 0
    # The rows arrived as the emulator's result chunks and were scored chunk by chunk.
    assert metrics["feature_batches"] >= 2

    # Rows out = entities in; the predictions are the model's on the raw rows.
    out = predictions_artifact(client, run_id, tmp_path)
    assert len(out) == DEMO.customers and set(out["CUSTOMER_ID"]) == set(range(1, DEMO.customers + 1))
    expected = reference(trained.uri, trained.store, trained.raw)
    np.testing.assert_allclose(out.set_index("CUSTOMER_ID")["PREDICTION"].loc[expected.index], expected, rtol=1e-9)
    assert set(out["MODEL_URI"]) == {trained.uri} and set(out["SCORING_RUN_ID"]) == {run_id}
    assert set(out["MODEL_RUN_ID"]) == {trained.run_id} and out["MODEL_NAME"].isna().all()

    # The rows scored as the run's dataset input: the training run's digest (same data).
    (scored,) = run.inputs.dataset_inputs
    (training,) = client.get_run(trained.run_id).inputs.dataset_inputs
    assert {(t.key, t.value) for t in scored.tags} == {("mlflow.data.context", "scoring")}
    source = json.loads(scored.dataset.source)
    assert source["definition"] == "data.features" and "EVENTS" in source["query"]
    # MLflow keeps one dataset per name and digest: the scoring run links to the training's.
    assert (scored.dataset.name, scored.dataset.digest) == (training.dataset.name, training.dataset.digest)
    assert {a.path for a in client.list_artifacts(run_id)} >= {"config", "data", "predictions", "evaluation"}

    # The predictions' distribution (3,000 rows: every row is in the sample, quantiles exact).
    pred = out["PREDICTION"].to_numpy()
    for q in (0, 1, 5, 25, 50, 75, 95, 99, 100):
        assert metrics[f"scored_prediction_p{q}"] == pytest.approx(np.quantile(pred, q / 100), rel=1e-9)
    assert metrics["scored_prediction_mean"] == pytest.approx(pred.mean())
    assert metrics["scored_sample_rows"] == DEMO.customers
    # The definition has the label (left out of the rows scored): one more query fetched it,
    # and the evaluation is runner/report's with the split `scored`.
    truth = trained.raw.set_index(trained.raw["CUSTOMER_ID"].astype("int64"))["CHURNED"].loc[out["CUSTOMER_ID"]]
    assert metrics["scored_example_count"] == DEMO.customers
    assert metrics["scored_roc_auc"] == pytest.approx(roc_auc_score(truth.astype(int), pred))
    assert metrics["scored_accuracy_score"] == pytest.approx(np.mean((pred >= 0.5) == truth.astype(bool)))
    training_metrics = client.get_run(trained.run_id).data.metrics
    assert metrics["scored_best_f1_threshold"] == pytest.approx(training_metrics["test_best_f1_threshold"])
    assert len(tags["runner.warehouse.query_ids"].split(",")) >= 2  # the feature query's and the label query's
    evaluation = {a.path.split("/", 1)[1] for a in client.list_artifacts(run_id, "evaluation")}
    assert evaluation == {
        "prediction_histogram.png",
        "prediction_histogram.csv",
        "roc_curve.png",
        "precision_recall_curve.png",
        "calibration_curve.png",
        "lift_curve.png",
        "confusion_matrix_0.5.png",
        "confusion_matrix_best_f1.png",
        "report.html",
    }
    page = Path(client.download_artifacts(run_id, "evaluation/report.html", str(tmp_path / "page"))).read_text()
    assert run_id in page and "roc_auc" in page and "data:image/png;base64," in page
    histogram = pd.read_csv(client.download_artifacts(run_id, "evaluation/prediction_histogram.csv", str(tmp_path)))
    assert histogram["rows"].sum() == DEMO.customers

    # The registered URI: the same predictions, the name and version recorded; tracker.report=false:
    # no distribution, no evaluation.
    again = run_score(["models:/churn/1", *DATA, "tracker.report=false"], trained.cwd)
    second = client.get_run(scoring_run_id(again))
    assert not [k for k in second.data.metrics if k.startswith("scored_")]
    assert "evaluation" not in {a.path for a in client.list_artifacts(second.info.run_id)}
    assert second.info.run_name == "score-churn-v1" and second.info.status == "FINISHED"
    assert (second.data.tags["runner.score.model_name"], second.data.tags["runner.score.model_version"]) == (
        "churn",
        "1",
    )
    out2 = predictions_artifact(client, second.info.run_id, tmp_path / "second")
    assert set(out2["MODEL_VERSION"]) == {"1"} and set(out2["MODEL_URI"]) == {"models:/churn/1"}
    np.testing.assert_array_equal(
        out2.sort_values("CUSTOMER_ID")["PREDICTION"], out.sort_values("CUSTOMER_ID")["PREDICTION"]
    )
    assert all(r.info.status != "RUNNING" for r in all_runs(client))


# --------------------------------------------------------------------------- #
# data=snowflake: a fakesnow server over the real connector, the SQL read on the wire
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    """fakesnow seeded with the demo tables (the data the model was trained on), a label-free
    feature table SCORE_ME, and schema NOLABEL whose CUSTOMERS has no CHURNED column; behind
    a front door that records every request."""
    import snowflake.connector

    from runner.demo import churn_features

    server = FakesnowProcess(tmp_path_factory.mktemp("fakesnow")).start()
    try:
        conn = snowflake.connector.connect(**server.connect_kwargs())
        try:
            for stmt in seed_sql("DEMO", "PUBLIC", DEMO):
                conn.cursor().execute(stmt)
            conn.cursor().execute("create schema if not exists DEMO.NOLABEL")
            for table in ("CUSTOMERS", "EVENTS"):
                conn.cursor().execute(f"create table DEMO.NOLABEL.{table} as select * from DEMO.PUBLIC.{table}")
            conn.cursor().execute("alter table DEMO.NOLABEL.CUSTOMERS drop column CHURNED")
        finally:
            conn.close()
        with server.session(database="DEMO", schema="PUBLIC", session_parameters={"nop_regexes": NOPS}) as session:
            features = churn_features(session, None).drop("CHURNED")
            session.sql(f"create table DEMO.PUBLIC.SCORE_ME as {features.queries['queries'][-1]}").collect()
        with Sigv4Proxy(f"http://127.0.0.1:{server.port}", verify=False, record_bodies=True) as door:
            yield SimpleNamespace(server=server, door=door, port=door.port)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def snowflake_home(warehouse, tmp_path_factory):
    """Snowflake's standard connections.toml; the emulator's no-op list travels in it too."""
    home = tmp_path_factory.mktemp("snowflake_home")
    nops = ", ".join(f"'{r}'" for r in NOPS)
    path = home / "connections.toml"
    path.write_text(f"""[test]
account = "fakesnow"
user = "fake"
password = "{CANARY}"
host = "127.0.0.1"
port = {warehouse.port}
protocol = "http"
database = "DEMO"
schema = "PUBLIC"
network_timeout = 10

[test.session_parameters]
nop_regexes = [{nops}]
""")
    path.chmod(0o600)
    return home


def query_requests(door) -> list:
    """(SQL text, bindings) of each statement the warehouse was asked to run (not Snowpark's
    describe-only schema lookups)."""
    out = []
    for _method, path, body in door.bodies:
        if path.endswith("/query-request") and body:
            request = json.loads(body)
            if not request.get("describeOnly"):
                out.append((request["sqlText"], request.get("bindings") or {}))
    return out


def execute(warehouse, sql: str) -> None:
    import snowflake.connector

    conn = snowflake.connector.connect(**warehouse.server.connect_kwargs())
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


def first_index(statements, prefix: str) -> int:
    found = [i for i, (sql, _) in enumerate(statements) if sql.lstrip().upper().startswith(prefix)]
    assert found, (prefix, [s for s, _ in statements])
    return found[0]


def test_snowflake_scoring_writes_the_table_and_a_rerun_replaces_its_rows(trained, warehouse, snowflake_home, tmp_path):
    env = {"SNOWFLAKE_HOME": str(snowflake_home)}
    client = client_of(trained.cwd)
    first = scoring_run_id(run_score([trained.uri, *SNOWFLAKE], trained.cwd, env=env))
    run = client.get_run(first)
    assert run.info.status == "FINISHED"
    assert run.data.tags["runner.score.label_dropped"] == "none"  # SCORE_ME has no label column
    source = json.loads(run.inputs.dataset_inputs[0].dataset.source)
    assert (source["account"], source["database"], source["schema"], source["definition"]) == (
        "fakesnow",
        "DEMO",
        "PUBLIC",
        "data.table",
    )
    # No label in SCORE_ME: the predictions' distribution only, no evaluation.
    assert "scored_prediction_p50" in run.data.metrics and "scored_example_count" not in run.data.metrics
    evaluation = {a.path.split("/", 1)[1] for a in client.list_artifacts(first, "evaluation")}
    assert evaluation == {"prediction_histogram.png", "prediction_histogram.csv", "report.html"}

    table = warehouse.server.fetch("select * from DEMO.PUBLIC.RUNNER_PREDICTIONS")
    assert list(table.columns) == [
        "CUSTOMER_ID",
        "PREDICTION",
        "MODEL_URI",
        "MODEL_NAME",
        "MODEL_VERSION",
        "MODEL_RUN_ID",
        "SCORING_RUN_ID",
        "SCORED_AT",
    ]
    assert len(table) == DEMO.customers and table["CUSTOMER_ID"].astype("int64").is_unique
    assert set(table["SCORING_RUN_ID"]) == {first} and set(table["MODEL_URI"]) == {trained.uri}
    raw = warehouse.server.fetch("select * from DEMO.PUBLIC.SCORE_ME")
    expected = reference(trained.uri, trained.store, raw)
    got = table.assign(CUSTOMER_ID=table["CUSTOMER_ID"].astype("int64")).set_index("CUSTOMER_ID")["PREDICTION"]
    np.testing.assert_allclose(got.loc[expected.index], expected, rtol=1e-9)
    # The same data as the embedded warehouse's: the same predictions as the artifact there.
    artifact = predictions_artifact(client, first, tmp_path).set_index("CUSTOMER_ID")["PREDICTION"]
    np.testing.assert_allclose(artifact.loc[expected.index], expected, rtol=1e-9)

    # A row of another model stays; the rerun replaces this model URI's rows in one transaction.
    execute(
        warehouse,
        "insert into DEMO.PUBLIC.RUNNER_PREDICTIONS (CUSTOMER_ID, PREDICTION, MODEL_URI, SCORING_RUN_ID) "
        "values (1, 0.5, 'models:/other/7', 'elsewhere')",
    )
    warehouse.door.reset_counts()
    proc = run_score([trained.uri, *SNOWFLAKE], trained.cwd, env=env)
    second = scoring_run_id(proc)
    assert f"replacing {DEMO.customers} rows of an earlier scoring" in proc.stdout
    assert client.get_run(second).data.metrics["rows_replaced"] == DEMO.customers
    table = warehouse.server.fetch(
        "select MODEL_URI, SCORING_RUN_ID, count(*) as N from DEMO.PUBLIC.RUNNER_PREDICTIONS group by 1, 2"
    )
    assert sorted(map(tuple, table.values.tolist())) == [
        ("models:/other/7", "elsewhere", 1),
        (trained.uri, second, DEMO.customers),
    ]

    # On the wire: the query tag first, then the feature query, then the write path.
    statements = query_requests(warehouse.door)
    assert statements[0][0] == f"alter session set query_tag = 'runner score run_id={second}'"
    order = [
        first_index(statements, p)
        for p in (
            "SELECT",
            "CREATE TABLE IF NOT EXISTS",
            "CREATE TEMPORARY STAGE",
            "PUT",
            "CREATE TRANSIENT TABLE",
            "COPY INTO",
            "BEGIN",
            "DELETE FROM",
            "INSERT INTO",
            "COMMIT",
            "DROP TABLE IF EXISTS",
        )
    ]
    assert order == sorted(order), [s for s, _ in statements]
    assert "SCORE_ME" in statements[order[0]][0] or any("SCORE_ME" in s for s, _ in statements[: order[1]])
    texts = "\n".join(s for s, _ in statements).upper()
    for never in ("INFER_SCHEMA", "SCOPED TEMPORARY", "CREATE TEMPORARY TABLE", "ROLLBACK"):
        assert never not in texts, never
    delete_sql, delete_bindings = statements[order[7]]
    assert trained.uri not in delete_sql and delete_bindings["1"]["value"] == trained.uri
    insert_sql, insert_bindings = statements[order[8]]
    assert '"DEMO"."PUBLIC".RUNNER_PREDICTIONS' in insert_sql and second not in insert_sql
    assert [insert_bindings[str(i)]["value"] for i in (1, 5)] == [trained.uri, second]

    # The password never reaches anything runner printed or recorded.
    assert CANARY not in proc.stdout + proc.stderr
    assert all(
        CANARY not in v
        for v in [*client.get_run(second).data.params.values(), *client.get_run(second).data.tags.values()]
    )


def test_a_definition_that_needs_the_label_says_so(trained, warehouse, snowflake_home):
    # Schema NOLABEL: the demo definition selects CHURNED, which CUSTOMERS there lacks.
    client = client_of(trained.cwd)
    proc = run_score(
        [trained.uri, "data=snowflake", "data.connection_name=test", "data.schema=NOLABEL"],
        trained.cwd,
        env={"SNOWFLAKE_HOME": str(snowflake_home)},
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = error_lines(proc.stderr)
    assert "data.features" in line and "data.label='CHURNED'" in line and "without the label" in line, line
    assert "Traceback" not in proc.stderr
    failed = [r for r in all_runs(client) if r.data.tags.get("runner.error", "").startswith("WarehouseError")]
    assert failed and all(r.info.status == "FAILED" for r in failed)


# --------------------------------------------------------------------------- #
# Bad input, Ctrl-C
# --------------------------------------------------------------------------- #


def test_bad_input_is_one_line_naming_the_setting(trained):
    client = client_of(trained.cwd)
    before = {r.info.run_id for r in all_runs(client)}

    # An unknown model: nothing runs, no scoring run is created.
    missing = "runs:/0123456789abcdef0123456789abcdef/model"
    proc = run_score([missing, *DATA], trained.cwd)
    assert proc.returncode == 2
    (line,) = error_lines(proc.stderr)
    assert f"MODEL_URI {missing!r}" in line and "not found" in line and "tracker." in line, line
    assert {r.info.run_id for r in all_runs(client)} == before

    # A key column the definition does not have; a key that is not one row per entity (found
    # once every chunk is scored, before the table is written); a table the role cannot write.
    cases = {
        "data.entity_key=NOPE": "data.entity_key='NOPE' is not a column of the feature result",
        "data.entity_key=PLAN": f"data.entity_key='PLAN' is not unique in the feature result ({DEMO.customers} rows",
        "score.table=NOWHERE.PUBLIC.PREDS": "score.table='NOWHERE.PUBLIC.PREDS': cannot write",
    }
    for override, expected in cases.items():
        proc = run_score([trained.uri, *DATA, override], trained.cwd)
        assert proc.returncode == 2, proc.stderr[-3000:]
        (line,) = error_lines(proc.stderr)
        assert expected in line, line
        assert "Traceback" not in proc.stderr
    new = [r for r in all_runs(client) if r.info.run_id not in before]
    assert len(new) == 3 and all(r.info.status == "FAILED" and r.data.tags["runner.error"] for r in new)
    # The feature query ran in each and is on record, though the rows were refused.
    assert all(r.data.tags["runner.warehouse.query_ids"] != "none" for r in new)

    # Settings checked before anything runs (in process: no run, no warehouse).
    from runner.errors import ConfigError
    from runner.score import score

    with pytest.raises(ConfigError, match=r"score.table='no good' is not a table name"):
        score(trained.uri, ["score.table='no good'", "tracker.dir=" + str(trained.cwd / "mlruns")])
    with pytest.raises(ConfigError, match=r"data.entity_key is not set"):
        score(trained.uri, ["data.entity_key=???"])
    assert {r.info.run_id for r in all_runs(client)} == before | {r.info.run_id for r in new}


def test_ctrl_c_ends_the_scoring_run_killed(trained, tmp_path):
    """SIGINT while the run exists (held there by the test hook RUNNER_TEST_BARRIER=score:...)."""
    client = client_of(trained.cwd)
    held = tmp_path / "held"
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "RUNNER_TEST_BARRIER": f"score:{held}:2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner.score", trained.uri, *DATA],
        cwd=trained.cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (held.is_dir() and any(held.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    line = next(line for line in err.splitlines() if line.startswith("runner: interrupted by SIGINT"))
    run_id = re.search(r"scoring run ([0-9a-f]{32}) ended KILLED \(no predictions written\)", line).group(1)
    assert "to score again: python -m runner.score " + trained.uri in line
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["runner.interrupted"] == "SIGINT"
