"""runner/tracking/model.py and Tracker's model logging: the pyfunc model on raw rows, saved and
loaded with MLflow in-process (a local folder, a local SQLite store), a real LightGBM booster."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from omegaconf import OmegaConf

from runner.config import DataConfig, ModelConfig, TrackerConfig
from runner.model import prepare, train
from runner.tracking.model import registered_name, save_model

pytestmark = pytest.mark.unit

N = 600


def raw_table() -> pa.Table:
    """Feature rows as the warehouse returns them: text, integers, floats, booleans, nulls."""
    rng = np.random.default_rng(1)
    plan = rng.choice(["basic", "pro", "team"], N)
    n = rng.integers(0, 40, N)
    amount = rng.gamma(2.0, 30.0, N)
    amount[rng.random(N) < 0.05] = np.nan
    flag = rng.random(N) < 0.3
    churned = ((plan == "basic") & (n < 20) | (rng.random(N) < 0.1)).astype(int)
    return pa.table(
        {
            "ID": np.arange(1, N + 1),
            "PLAN": pa.array([None if i % 37 == 0 else p for i, p in enumerate(plan)], pa.string()),
            "N_EVENTS": n,
            "AMOUNT": amount,
            "FLAG": flag,
            "Y": churned,
        }
    )


@pytest.fixture(scope="module")
def trained():
    table = raw_table()
    data = OmegaConf.merge(OmegaConf.structured(DataConfig), {"table": "T", "entity_key": "ID", "label": "Y"})
    model = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"num_boost_round": 20, "early_stopping_rounds": 0})
    prepared = prepare(table, data, "binary")
    result = train(prepared, model)
    raw = table.to_pandas()
    return prepared, result, raw


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    prepared, result, _ = trained
    path = tmp_path_factory.mktemp("model") / "model"
    save_model(path, result.booster, prepared, run_id="r1")
    return path


def rows_of(raw: pd.DataFrame, keys) -> pd.DataFrame:
    return raw.set_index("ID").loc[list(keys)].reset_index()


def test_pyfunc_on_raw_rows_equals_the_booster_on_training_codes(trained, saved):
    import mlflow

    prepared, result, raw = trained
    model = mlflow.pyfunc.load_model(str(saved))
    X, _, keys = prepared.parts["valid"]
    got = model.predict(rows_of(raw, keys))  # extra columns ID and Y in the rows
    assert np.allclose(got, result.booster.predict(X, num_iteration=result.best_iteration), rtol=0, atol=1e-12)
    shuffled = rows_of(raw, keys)[["FLAG", "Y", "AMOUNT", "ID", "N_EVENTS", "PLAN"]]
    assert np.array_equal(model.predict(shuffled), got)


def test_unseen_categories_nulls_and_nullable_integers_score(trained, saved):
    import mlflow

    model = mlflow.pyfunc.load_model(str(saved))
    rows = pd.DataFrame(
        {
            "PLAN": ["enterprise", None, "pro"],
            "N_EVENTS": [3.0, np.nan, 7.0],  # an integer column with a null arrives as float64
            "AMOUNT": [10.0, None, 5.0],
            "FLAG": [True, None, False],
        }
    )
    got = np.asarray(model.predict(rows))
    assert got.shape == (3,) and np.isfinite(got).all()
    assert np.asarray(model.predict(pd.DataFrame([{"PLAN": None, "N_EVENTS": None, "AMOUNT": None, "FLAG": None}])))[
        0
    ] == pytest.approx(float(got[1]))


def test_signature_input_example_and_both_flavors(trained, saved):
    import mlflow
    from mlflow.models import Model

    prepared, result, _ = trained
    info = Model.load(str(saved / "MLmodel"))
    assert set(info.flavors) == {"python_function", "lightgbm"} and info.run_id == "r1"
    types = {c["name"]: c["type"] for c in info.signature.inputs.to_dict()}
    assert types["PLAN"] == "string" and types["AMOUNT"] == "double" and types["FLAG"] == "boolean"
    assert types["N_EVENTS"] == "any"  # int64, or float64 once nulls come: see runner/tracking/model.py
    example = json.loads((saved / "input_example.json").read_text())
    plans = {row[example["columns"].index("PLAN")] for row in example["data"]} - {None}
    assert plans and plans <= set(prepared.categories["PLAN"])  # text, as the warehouse returns it
    assert json.loads((saved / "artifacts" / "encoding.json").read_text())["categories"] == prepared.categories
    booster = mlflow.lightgbm.load_model(str(saved))  # the booster itself, on the training codes
    X = prepared.parts["test"].frame()
    assert np.allclose(booster.predict(X), result.booster.predict(X, num_iteration=result.best_iteration))
    requirements = (saved / "requirements.txt").read_text()
    assert "lightgbm==" in requirements and "mlflow==" in requirements and "runner" not in requirements


def test_registered_name_default_rename_and_off():
    cfg = OmegaConf.structured(TrackerConfig)
    assert registered_name(cfg) == "runner"
    assert (
        registered_name(OmegaConf.merge(cfg, {"experiment": "/Users/me/churn model:v2"})) == "Users-me-churn-model-v2"
    )
    assert registered_name(OmegaConf.merge(cfg, {"experiment": "///"})) == "runner"
    assert registered_name(OmegaConf.merge(cfg, {"registered_model": "churn"})) == "churn"
    assert registered_name(OmegaConf.merge(cfg, {"registered_model": "churn"}), "sweep-name") == "sweep-name"
    assert registered_name(OmegaConf.merge(cfg, {"register": False}), "sweep-name") is None


@pytest.fixture
def local_tracker(tmp_path, monkeypatch):
    from runner.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return Tracker(OmegaConf.merge(OmegaConf.structured(TrackerConfig), {"experiment": "unit"}))


def test_logged_model_is_made_once_per_run_and_registers(trained, local_tracker):
    import mlflow

    prepared, result, raw = trained
    tracker = local_tracker
    run_id = tracker._create_run("trial-0", {})
    first = tracker.log_logged_model(run_id, result.booster, prepared, tags={"t": 1}, params={"p": 2})
    again = tracker.log_logged_model(run_id, result.booster, prepared)
    assert first.model_id and first.uri == f"models:/{first.model_id}" and again.model_id == first.model_id
    (model,) = tracker.client.search_logged_models([tracker.experiment_id()])
    assert model.source_run_id == run_id and model.params == {"p": "2"} and str(model.status) == "READY"
    version = tracker.register("unit-model", run_id, first.source, first.model_id)
    assert (
        str(tracker.register("unit-model", run_id, first.source, first.model_id).version) == str(version.version) == "1"
    )
    mlflow.set_tracking_uri(tracker.uri)
    try:
        X, _, keys = prepared.parts["valid"]
        reference = result.booster.predict(X, num_iteration=result.best_iteration)
        for uri in (first.uri, "models:/unit-model/1", f"runs:/{run_id}/model"):
            assert np.allclose(mlflow.pyfunc.load_model(uri).predict(rows_of(raw, keys)), reference)
    finally:
        mlflow.set_tracking_uri(None)


def test_store_without_logged_models_gets_run_artifacts(trained, local_tracker, monkeypatch, capsys):
    from mlflow.exceptions import MlflowException

    from runner.tracking import hints

    monkeypatch.setattr(hints, "_skipped", set())
    monkeypatch.setattr(hints, "server_version", lambda client, uri: "2.16.2")
    prepared, result, _ = trained
    tracker = local_tracker
    runs = [tracker._create_run(f"trial-{i}", {}) for i in range(2)]
    calls = []

    def no_endpoint(*args, **kwargs):  # an MLflow 2 server: the endpoint is not there
        calls.append(args)
        raise MlflowException("... logged-models/search failed with error code 404 != 200", "ENDPOINT_NOT_FOUND")

    monkeypatch.setattr(tracker.client, "search_logged_models", no_endpoint)
    for run_id in runs:
        ref = tracker.log_logged_model(run_id, result.booster, prepared)
        assert ref.uri == f"runs:/{run_id}/model" and ref.model_id is None and ref.source == ref.uri
        names = {Path(a.path).name for a in tracker.client.list_artifacts(run_id, "model")}
        assert {"MLmodel", "input_example.json", "artifacts"} <= names
    assert len(calls) == 1  # asked once per process
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("runner:")]
    assert lines == [
        "runner: the tracking server does not support MLflow 3 logged models (MLflow 2.16.2): "
        "the model is logged as the run's artifacts (no model id)"
    ]


def test_regression_serves_raw_rows_too(tmp_path):
    import mlflow

    table = pa.Table.from_pandas(raw_table().to_pandas().dropna(subset=["AMOUNT"]), preserve_index=False)
    prepared, result = _trained(table, "AMOUNT", "regression")
    save_model(tmp_path / "model", result.booster, prepared)
    X, _, keys = prepared.parts["valid"]
    got = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(rows_of(table.to_pandas(), keys))
    assert isinstance(got, np.ndarray) and got.shape == (len(keys),)
    assert np.allclose(got, result.booster.predict(X, num_iteration=result.best_iteration), rtol=0, atol=1e-12)


def _trained(table: pa.Table, label: str, objective: str, positive_class=None):
    data = OmegaConf.merge(OmegaConf.structured(DataConfig), {"table": "T", "entity_key": "ID", "label": label})
    model = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"num_boost_round": 10, "early_stopping_rounds": 0})
    model.params.objective = objective
    prepared = prepare(table, data, objective, positive_class)
    return prepared, train(prepared, model)


def sklearn_table(dataset: str) -> pa.Table:
    """A scikit-learn data set (bundled) as feature rows: ID, the features, LABEL the class names."""
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{dataset}")(as_frame=True)
    frame = bunch.frame.drop(columns="target")
    frame.columns = [c.upper().replace(" ", "_").replace("/", "_") for c in frame.columns]
    frame.insert(0, "ID", np.arange(1, len(frame) + 1))
    frame["LABEL"] = np.asarray(bunch.target_names)[bunch.target]
    return pa.Table.from_pandas(frame, preserve_index=False)


@pytest.mark.parametrize("dataset", ["wine", "iris"])
def test_multiclass_returns_the_label_and_a_probability_column_per_class(dataset, tmp_path):
    import mlflow
    from mlflow.models import Model

    table = sklearn_table(dataset)
    prepared, result = _trained(table, "LABEL", "multiclass")
    save_model(tmp_path / "model", result.booster, prepared)
    classes = sorted(set(table["LABEL"].to_pylist()))
    columns = ["prediction", *(f"proba_{c}" for c in classes)]
    X, y, keys = prepared.parts["valid"]
    rows = rows_of(table.to_pandas(), keys)
    got = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(rows)
    assert isinstance(got, pd.DataFrame) and list(got.columns) == columns and got.index.equals(rows.index)
    booster = result.booster.predict(X, num_iteration=result.best_iteration)
    assert np.allclose(got[columns[1:]].to_numpy(), booster, rtol=0, atol=1e-12)
    assert got["prediction"].tolist() == [classes[i] for i in booster.argmax(axis=1)]
    assert (got["prediction"] == rows["LABEL"]).mean() > 0.8  # a real model of the data
    outputs = Model.load(str(tmp_path / "model" / "MLmodel")).signature.outputs.to_dict()
    assert [(c["name"], c["type"]) for c in outputs] == [("prediction", "string")] + [
        (c, "double") for c in columns[1:]
    ]
    spec = json.loads((tmp_path / "model" / "artifacts" / "encoding.json").read_text())
    assert spec["classes"] == classes and "positive_class" not in spec

    # runner.score reads the classes from the signature: PREDICTION and PROBA_<LABEL> columns.
    from runner.score.output import output_of, prediction_values

    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    output = output_of(model, "runs:/r/model")
    assert output.names == ["PREDICTION", *(f"PROBA_{c.upper()}" for c in classes)]
    values = prediction_values(output, model.predict(rows), len(rows), "runs:/r/model")
    assert list(values) == output.names and values["PREDICTION"].tolist() == got["prediction"].tolist()
    assert np.array_equal(np.column_stack([values[n] for n in output.names[1:]]), got[columns[1:]].to_numpy())


def test_scoring_refuses_a_multiclass_output_without_class_names():
    """A multiclass model logged before its output named its classes: a (-1, k) tensor."""
    from types import SimpleNamespace

    from mlflow.types.schema import Schema, TensorSpec

    from runner.errors import ConfigError
    from runner.score.output import output_of

    def of(shape):
        schema = Schema([TensorSpec(np.dtype("float64"), shape)])
        return output_of(SimpleNamespace(metadata=SimpleNamespace(get_output_schema=lambda: schema)), "models:/old/1")

    with pytest.raises(ConfigError, match=r"^MODEL_URI 'models:/old/1': the model returns 3 unnamed values per row"):
        of((-1, 3))
    assert of((-1,)).names == ["PREDICTION"] and not of((-1,)).multiclass  # binary, regression


def test_multiclass_of_numbers_predicts_numbers(tmp_path):
    import mlflow

    table = sklearn_table("wine")
    table = table.set_column(table.num_columns - 1, "LABEL", pa.array(pd.factorize(table["LABEL"].to_numpy())[0] + 1))
    prepared, result = _trained(table, "LABEL", "multiclass")
    save_model(tmp_path / "model", result.booster, prepared)
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    got = model.predict(rows_of(table.to_pandas(), prepared.parts["test"].keys))
    assert list(got.columns) == ["prediction", "proba_1", "proba_2", "proba_3"]
    assert got["prediction"].dtype == np.int64 and set(got["prediction"]) <= {1, 2, 3}
    assert model.metadata.signature.outputs.to_dict()[0] == {"type": "long", "name": "prediction", "required": True}


def test_a_binary_label_of_two_strings_serves_the_positive_class_probability(tmp_path, capsys):
    import mlflow

    table = sklearn_table("breast_cancer")  # malignant / benign
    prepared, result = _trained(table, "LABEL", "binary", positive_class="benign")
    assert "runner: binary label LABEL: positive class 'benign' (model.positive_class)" in capsys.readouterr().out
    save_model(tmp_path / "model", result.booster, prepared)
    X, y, keys = prepared.parts["valid"]
    rows = rows_of(table.to_pandas(), keys)
    got = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(rows)
    assert isinstance(got, np.ndarray) and got.shape == (len(keys),)  # as for a 0/1 label
    assert np.allclose(got, result.booster.predict(X, num_iteration=result.best_iteration), rtol=0, atol=1e-12)
    assert ((got >= 0.5) == (rows["LABEL"] == "benign")).mean() > 0.9  # P(benign)
    spec = json.loads((tmp_path / "model" / "artifacts" / "encoding.json").read_text())
    assert spec["classes"] == ["malignant", "benign"] and spec["positive_class"] == "benign"
