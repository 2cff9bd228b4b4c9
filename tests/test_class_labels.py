"""Class labels end to end on real components: `python -m runner` and `python -m runner.score`
as subprocesses, on scikit-learn's bundled data sets loaded into the warehouse by a feature
function (tests/fixtures/sklearn_features.py: ID, the features, CLASS_NAME = `.target_names`).

- iris, multiclass, its label three species names: the logged model returns a DataFrame of
  the predicted label and `proba_<label>` per class (its signature says so), the
  probabilities a plain LightGBM model's (the logged booster's, and one trained here with
  lightgbm.train on the same split and parameters);
- breast_cancer, binary, its label 'malignant'/'benign': trained with the positive class
  that sorts last (said in one line), served as P(malignant);
- scoring: a multiclass model writes PREDICTION (the label) and PROBA_<LABEL> per class, on
  the embedded warehouse (the run's artifact) and on `data=snowflake` against a fakesnow
  server (the table read back); a table of another shape (binary <-> multiclass) is refused
  naming score.table and the differing columns, and keeps its rows.
"""

from __future__ import annotations

import os
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import REPO, run_runner, store, tracking
from tests.fixtures.sklearn_features import LABEL, frame
from tests.support.servers import FakesnowProcess
from tests.test_score import error_lines, run_score, scoring_run_id

pytestmark = pytest.mark.integration

# The feature function's module is imported by name in the runner processes.
ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "tests" / "fixtures"), os.environ.get("PYTHONPATH")) if p)}
SPECIES = ["setosa", "versicolor", "virginica"]
PROBAS = ["PROBA_SETOSA", "PROBA_VERSICOLOR", "PROBA_VIRGINICA"]
RECORD = ["MODEL_URI", "MODEL_NAME", "MODEL_VERSION", "MODEL_RUN_ID", "SCORING_RUN_ID", "SCORED_AT"]
NOPS = [r"^ALTER SESSION SET QUERY_TAG.*", r"^ALTER SESSION UNSET QUERY_TAG.*", r"^select system\$cancel_all_queries.*"]


def data_args(dataset: str, table: str) -> list:
    return [
        "data.features._target_=sklearn_features.sklearn_table",
        f"+data.features.dataset={dataset}",
        f"+data.features.table={table}",
        "data.entity_key=ID",
        f"data.label={LABEL}",
        "data.demo.customers=50",  # the embedded warehouse's demo tables: not used here
        "data.demo.events=100",
    ]


IRIS = data_args("iris", "IRIS")
CANCER = data_args("breast_cancer", "CANCER")
ROUNDS = ["model.num_boost_round=30", "model.early_stopping_rounds=0"]


def run_id_of(proc) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return re.search(r"runner: run ([0-9a-f]{32}) FINISHED", proc.stdout).group(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An iris multiclass model and a breast_cancer binary model (string labels), one store."""
    cwd = tmp_path_factory.mktemp("class_labels")
    iris = run_runner([*IRIS, "model.params.objective=multiclass", *ROUNDS], cwd, env=ENV)
    cancer = run_runner([*CANCER, *ROUNDS], cwd, env=ENV)
    iris_id, cancer_id = run_id_of(iris), run_id_of(cancer)
    return SimpleNamespace(
        cwd=cwd,
        store=store(cwd),
        iris=f"runs:/{iris_id}/model",
        iris_run=iris_id,
        cancer=f"runs:/{cancer_id}/model",
        cancer_stdout=cancer.stdout,
        iris_stdout=iris.stdout,
    )


def served(uri: str, store_uri: str, dataset: str):
    """The model at uri loaded as users load it, its output on the data set's raw rows (label left out)."""
    import mlflow

    rows = frame(dataset)
    with tracking(store_uri):
        model = mlflow.pyfunc.load_model(uri)
        booster = mlflow.lightgbm.load_model(uri)
    return model, booster, rows, model.predict(rows.drop(columns=[LABEL]))


# --------------------------------------------------------------------------- #
# The logged models
# --------------------------------------------------------------------------- #


def test_multiclass_model_returns_the_label_and_a_probability_per_class(trained):
    import lightgbm

    from runner.config import DataConfig, ModelConfig
    from runner.model import lgb_params, prepare

    model, booster, rows, out = served(trained.iris, trained.store, "iris")
    columns = ["prediction", *(f"proba_{s}" for s in SPECIES)]
    assert isinstance(out, pd.DataFrame) and list(out.columns) == columns and len(out) == 150
    outputs = [(c["name"], c["type"]) for c in model.metadata.signature.outputs.to_dict()]
    assert outputs == [("prediction", "string")] + [(c, "double") for c in columns[1:]]
    proba = out[columns[1:]].to_numpy()
    assert np.allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert out["prediction"].tolist() == [SPECIES[i] for i in proba.argmax(axis=1)]
    assert (out["prediction"] == rows[LABEL]).mean() > 0.9

    # The logged booster (its LightGBM flavor) on the feature columns: the same probabilities.
    logged = booster.predict(rows[booster.feature_name()])
    assert np.allclose(proba, logged, rtol=0, atol=1e-12), np.abs(proba - logged).max()

    # A plain LightGBM model trained here on runner's split of the same rows, same parameters.
    data = OmegaConf.merge(OmegaConf.structured(DataConfig), {"table": "T", "entity_key": "ID", "label": LABEL})
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"num_boost_round": 30})
    cfg.params.objective = "multiclass"
    prepared = prepare(pa.Table.from_pandas(frame("iris"), preserve_index=False), data, "multiclass")
    assert prepared.classes == SPECIES
    X, y, _ = prepared.parts["train"]
    plain = lightgbm.train(lgb_params(cfg, prepared), lightgbm.Dataset(X, y), num_boost_round=30)
    expected = plain.predict(rows[X.columns.tolist()])
    assert np.allclose(proba, expected, rtol=0, atol=1e-9), np.abs(proba - expected).max()


def test_binary_model_of_two_strings_serves_the_probability_of_the_class_that_sorts_last(trained):
    from sklearn.metrics import roc_auc_score

    line = (
        f"runner: binary label {LABEL}: positive class 'malignant' "
        "(the one that sorts last; model.positive_class sets it)"
    )
    assert line in trained.cancer_stdout.splitlines()
    assert "positive class" not in trained.iris_stdout
    model, booster, rows, out = served(trained.cancer, trained.store, "breast_cancer")
    assert isinstance(out, np.ndarray) and out.shape == (len(rows),)  # as for a 0/1 label
    assert list(model.metadata.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1]
    assert np.allclose(out, booster.predict(rows[booster.feature_name()]), rtol=0, atol=1e-12)
    assert roc_auc_score(rows[LABEL] == "malignant", out) > 0.95  # P(malignant)


# --------------------------------------------------------------------------- #
# Scoring
# --------------------------------------------------------------------------- #


def test_multiclass_scoring_writes_the_label_and_a_probability_column_per_class(trained, tmp_path):
    proc = run_score([trained.iris, *IRIS], trained.cwd, env=ENV)
    run_id = scoring_run_id(proc)
    assert 'scored 150 entities -> "DEMO"."PUBLIC".RUNNER_PREDICTIONS' in proc.stdout
    client = MlflowClient(trained.store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["runner.score.label_dropped"] == LABEL
    path = client.download_artifacts(run_id, "predictions/predictions.parquet", str(tmp_path))
    table = pq.read_table(path)
    assert table.column_names == ["ID", "PREDICTION", *PROBAS, *RECORD]
    assert str(table.schema.field("PREDICTION").type) in ("string", "large_string")
    got = table.to_pandas().assign(ID=lambda f: f["ID"].astype("int64")).set_index("ID").sort_index()
    _, _, rows, out = served(trained.iris, trained.store, "iris")
    out.index = rows["ID"].to_numpy()
    assert got.index.tolist() == list(range(1, 151))
    assert got["PREDICTION"].tolist() == out["prediction"].tolist()
    expected = out[[f"proba_{s}" for s in SPECIES]].to_numpy()
    np.testing.assert_allclose(got[PROBAS].to_numpy(), expected, rtol=1e-12)
    assert set(got["MODEL_URI"]) == {trained.iris} and set(got["MODEL_RUN_ID"]) == {trained.iris_run}


@pytest.fixture(scope="module")
def snowflake(tmp_path_factory):
    """A fakesnow server with database DEMO, and a connections.toml naming it."""
    import snowflake.connector

    server = FakesnowProcess(tmp_path_factory.mktemp("fakesnow")).start()
    try:
        conn = snowflake.connector.connect(**server.connect_kwargs())
        try:
            conn.cursor().execute("create database if not exists DEMO")
            conn.cursor().execute("create schema if not exists DEMO.PUBLIC")
        finally:
            conn.close()
        home = tmp_path_factory.mktemp("snowflake_home")
        nops = ", ".join(f"'{r}'" for r in NOPS)
        (home / "connections.toml").write_text(
            f'[test]\naccount = "fakesnow"\nuser = "fake"\npassword = "snow"\nhost = "127.0.0.1"\n'
            f'port = {server.port}\nprotocol = "http"\ndatabase = "DEMO"\nschema = "PUBLIC"\n'
            f"network_timeout = 10\n\n[test.session_parameters]\nnop_regexes = [{nops}]\n"
        )
        (home / "connections.toml").chmod(0o600)
        yield SimpleNamespace(server=server, env={**ENV, "SNOWFLAKE_HOME": str(home)})
    finally:
        server.stop()


def test_snowflake_tables_keep_one_shape(trained, snowflake):
    """The multiclass table written and read back; a binary model's table beside it; each
    model refused on the other's table, which keeps its rows."""
    on = ["data=snowflake", "data.connection_name=test"]
    scored = run_score([trained.iris, *on, *IRIS, "score.table=IRIS_SCORES"], trained.cwd, env=snowflake.env)
    scoring_run_id(scored)
    iris = snowflake.server.fetch("select * from DEMO.PUBLIC.IRIS_SCORES order by ID")
    assert list(iris.columns) == ["ID", "PREDICTION", *PROBAS, *RECORD] and len(iris) == 150
    _, _, rows, out = served(trained.iris, trained.store, "iris")
    assert iris["PREDICTION"].tolist() == out["prediction"].tolist()  # rows in ID order, as the frame
    np.testing.assert_allclose(iris[PROBAS].to_numpy(dtype=float), out.iloc[:, 1:].to_numpy(), rtol=1e-12)

    scoring_run_id(
        run_score([trained.cancer, *on, *CANCER, "score.table=CANCER_SCORES"], trained.cwd, env=snowflake.env)
    )
    cancer = snowflake.server.fetch("select * from DEMO.PUBLIC.CANCER_SCORES order by ID")
    assert list(cancer.columns) == ["ID", "PREDICTION", *RECORD]
    _, _, _, p_malignant = served(trained.cancer, trained.store, "breast_cancer")
    np.testing.assert_allclose(cancer["PREDICTION"].to_numpy(dtype=float), p_malignant, rtol=1e-12)

    # Each model on the other's table: one error line naming score.table and the columns.
    wrong = run_score([trained.cancer, *on, *CANCER, "score.table=IRIS_SCORES"], trained.cwd, env=snowflake.env)
    assert wrong.returncode == 2, wrong.stderr[-3000:]
    (line,) = error_lines(wrong.stderr)
    assert line.startswith('runner: error: score.table=\'IRIS_SCORES\': "DEMO"."PUBLIC".IRIS_SCORES exists with ')
    assert f"with column(s) {', '.join(PROBAS)} that this scoring does not write" in line, line
    assert (
        "with PREDICTION of type text (StringType) where this model writes FLOAT (number)" in line
        and "nothing was written" in line
    )
    wrong = run_score([trained.iris, *on, *IRIS, "score.table=CANCER_SCORES"], trained.cwd, env=snowflake.env)
    assert wrong.returncode == 2, wrong.stderr[-3000:]
    (line,) = error_lines(wrong.stderr)
    assert (
        f"CANCER_SCORES exists without column(s) {', '.join(PROBAS)}; with PREDICTION of type number (DoubleType)"
        in line
    )
    assert "where this model writes VARCHAR (text)" in line, line
    # The refused tables keep their rows.
    after = snowflake.server.fetch("select MODEL_URI, count(*) as N from DEMO.PUBLIC.IRIS_SCORES group by 1")
    assert after.values.tolist() == [[trained.iris, 150]]
    after = snowflake.server.fetch("select MODEL_URI, count(*) as N from DEMO.PUBLIC.CANCER_SCORES group by 1")
    assert after.values.tolist() == [[trained.cancer, 569]]
