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
    X = prepared.parts["test"][0]
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


@pytest.mark.parametrize("objective, label", [("multiclass", "PLAN"), ("regression", "AMOUNT")])
def test_other_objectives_serve_raw_rows_too(objective, label, tmp_path):
    import mlflow

    table = pa.Table.from_pandas(raw_table().to_pandas().dropna(subset=[label]), preserve_index=False)
    data = OmegaConf.merge(OmegaConf.structured(DataConfig), {"table": "T", "entity_key": "ID", "label": label})
    model = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"num_boost_round": 10, "early_stopping_rounds": 0})
    model.params.objective = objective
    prepared = prepare(table, data, objective)
    result = train(prepared, model)
    save_model(tmp_path / "model", result.booster, prepared)
    X, _, keys = prepared.parts["valid"]
    got = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(rows_of(table.to_pandas(), keys))
    assert np.allclose(got, result.booster.predict(X, num_iteration=result.best_iteration), rtol=0, atol=1e-12)
