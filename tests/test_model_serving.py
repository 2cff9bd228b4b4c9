"""The logged model serves the rows the feature definition produces, end to end on
real components: `python -m runner` (single run and sweep) on the embedded warehouse with the
local tracker, `mlflow.pyfunc.load_model`, and the real `mlflow models predict` CLI.

Raw rows come from the cached feature table (what the warehouse returned); the reference is
the logged booster (its LightGBM flavor) on the codes runner.model.prepare makes of the same
table, i.e. the training-time predictions, and the run's own validation AUC.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import run_runner, store, tracking

pytestmark = pytest.mark.integration

DATA = ["data=demo", "data.demo.customers=3000", "data.demo.events=40000"]
SWEEP = ["sweep=lightgbm", "hydra.sweeper.n_trials=3", *DATA[1:], "model.num_boost_round=30"]
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("serving_cache"))


def raw_table(cache_dir: str):
    (entry,) = Path(cache_dir).rglob("*.parquet")  # one data config: one entry
    return pq.read_table(entry)


def training_view(cache_dir: str, params: dict):
    """The cached rows as the warehouse returned them (by entity) and runner's split of them."""
    from runner.config import DataConfig
    from runner.model import prepare

    data = OmegaConf.merge(
        OmegaConf.structured(DataConfig),
        {
            "table": "T",
            "entity_key": params["data.entity_key"],
            "label": params["data.label"],
            "drop": json.loads(params["data.drop"].replace("'", '"')),
            "split": {k: params[f"data.split.{k}"] for k in ("valid", "test", "salt")},
        },
    )
    table = raw_table(cache_dir)
    raw = table.to_pandas().set_index(data.entity_key)
    prepared = prepare(table, data, params["model.params.objective"])
    return raw, prepared


def valid_rows(raw: pd.DataFrame, prepared):
    X, y, keys = prepared.parts["valid"]
    rows = raw.loc[list(keys)].reset_index()  # with the entity key and the label: extra columns
    return rows, X, y


def odd_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """A row with categories never seen in training, and a row of nulls."""
    unseen = rows.head(1).assign(PLAN="enterprise", REGION="MARS")
    nulls = pd.DataFrame([{c: None for c in rows.columns}]).assign(CUSTOMER_ID=rows["CUSTOMER_ID"].iloc[0])
    return pd.concat([unseen, nulls], ignore_index=True)


def cli_predict(model_uri: str, uri: str, frame: pd.DataFrame, fmt: str, tmp: Path) -> np.ndarray:
    """`mlflow models predict` on a JSON or CSV file of raw rows, in the current environment."""
    frame = frame.assign(CUSTOMER_ID=frame["CUSTOMER_ID"].astype(str))  # NUMBER(38,0) as text in a file
    path = tmp / f"rows.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}))
    else:
        frame.to_csv(path, index=False)
    out = tmp / f"predictions-{fmt}.json"
    proc = subprocess.run(
        [MLFLOW, "models", "predict", "-m", model_uri, "-i", str(path), "-t", fmt, "--env-manager", "local"]
        + ["-o", str(out)],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.asarray(json.loads(out.read_text())["predictions"], dtype=float)


def check_model(model_uri: str, uri: str, cache_dir: str, params: dict, auc: float, tmp: Path) -> None:
    """The model at model_uri scores raw rows as the booster scores their training-time codes
    (the run's own valid AUC), with a text signature, in any column order, with unseen categories
    and nulls, and through the `mlflow models predict` CLI on JSON and CSV."""
    import mlflow
    from sklearn.metrics import roc_auc_score

    raw, prepared = training_view(cache_dir, params)
    rows, X, y = valid_rows(raw, prepared)
    with tracking(uri):
        model = mlflow.pyfunc.load_model(model_uri)
        booster = mlflow.lightgbm.load_model(model_uri)
    served = np.asarray(model.predict(rows))
    trained = booster.predict(X)  # the booster on the training-time codes of the same rows
    assert np.allclose(served, trained, rtol=0, atol=1e-12), np.abs(served - trained).max()
    assert roc_auc_score(y, served) == pytest.approx(auc, abs=1e-12)  # the run's own valid AUC
    print(f"\n{model_uri}: {len(rows)} raw rows, max |served - trained| = {np.abs(served - trained).max():.3g}")

    # signature and input example: categorical columns as text
    inputs = {c["name"]: c["type"] for c in model.metadata.signature.inputs.to_dict()}
    assert inputs["PLAN"] == inputs["REGION"] == "string" and set(inputs) == set(prepared.features)
    example = model.input_example  # raw rows too: text categories
    assert set(example["PLAN"].dropna()) <= set(prepared.categories["PLAN"]) and len(example["PLAN"].dropna())

    # any column order
    shuffled = rows[list(reversed(rows.columns))]
    assert np.array_equal(np.asarray(model.predict(shuffled)), served)

    # unseen categories and nulls score
    odd = np.asarray(model.predict(odd_rows(rows)))
    assert odd.shape == (2,) and np.isfinite(odd).all()

    # the MLflow CLI, on JSON and CSV files of raw rows (with the odd ones at the end)
    both = pd.concat([rows.head(200), odd_rows(rows)], ignore_index=True)
    expected = np.concatenate([served[:200], odd])
    for fmt in ("json", "csv"):
        assert np.allclose(cli_predict(model_uri, uri, both, fmt, tmp), expected, rtol=0, atol=1e-12), fmt


# ------------------------------------------------------------------ a single run


@pytest.fixture(scope="module")
def single(tmp_path_factory, cache_dir):
    cwd = tmp_path_factory.mktemp("single_serving")
    proc = run_runner([*DATA, f"data.cache_dir={cache_dir}"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = re.search(r"runner: run ([0-9a-f]{32}) FINISHED", proc.stdout).group(1)
    run = MlflowClient(store(cwd)).get_run(run_id)
    return SimpleNamespace(cwd=cwd, run=run, uri=store(cwd), model_uri=f"runs:/{run_id}/model")


def test_single_run_model_serves_raw_rows(single, cache_dir, tmp_path):
    metrics, params = single.run.data.metrics, single.run.data.params
    check_model(single.model_uri, single.uri, cache_dir, params, metrics["valid_auc"], tmp_path)


def test_the_model_scores_without_runner_installed(single, cache_dir, tmp_path):
    """Only mlflow, lightgbm, pandas and numpy: runner cannot be imported in the scoring process."""
    raw, prepared = training_view(cache_dir, single.run.data.params)
    rows, X, _ = valid_rows(raw, prepared)
    rows.head(50).assign(CUSTOMER_ID=rows["CUSTOMER_ID"].astype(str)).to_csv(tmp_path / "rows.csv", index=False)
    script = (
        "import json, sys; sys.modules['runner'] = None\n"  # `import runner` fails from here on
        "import mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "print('PRED', json.dumps([float(p) for p in model.predict(pd.read_csv(sys.argv[2]))]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, single.model_uri, str(tmp_path / "rows.csv")],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": single.uri},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.split("PRED ", 1)[1])
    import mlflow

    with tracking(single.uri):
        booster = mlflow.lightgbm.load_model(single.model_uri)
    assert np.allclose(got, booster.predict(X.head(50)), rtol=0, atol=1e-12)


# ------------------------------------------------------------------ a sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir):
    """The sweep, then the same command again (resume: the study is complete, same best)."""
    cwd = tmp_path_factory.mktemp("sweep_serving")
    args = [*SWEEP, f"data.cache_dir={cache_dir}"]
    first = run_runner(args, cwd, multirun=True)
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_runner(args, cwd, multirun=True)
    assert again.returncode == 0, again.stderr[-3000:]
    return SimpleNamespace(cwd=cwd, first=first, again=again, uri=store(cwd))


def parent_and_children(client: MlflowClient, experiment: str = "runner"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return exp, parent, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def test_sweep_registers_its_best_model_by_default_once(sweep):
    client = MlflowClient(sweep.uri)
    exp, parent, children = parent_and_children(client)
    tags = parent.data.tags
    (version,) = client.search_model_versions("name='runner'")  # the name: tracker.experiment
    assert "best model registered: runner v1 (models:/m-" in sweep.first.stdout
    assert (
        "this run 0 trials" in sweep.again.stdout and "best model registered: runner v1 (already" in sweep.again.stdout
    )
    (logged,) = client.search_logged_models([exp.experiment_id])  # only the winner was uploaded
    assert logged.source_run_id == version.run_id == tags["best.run_id"] and str(logged.status) == "READY"
    assert tags["best.registered_model"] == "runner" and tags["best.registered_version"] == str(version.version)
    assert tags["best.model_id"] == logged.model_id and tags["best.model_uri"] == f"models:/{logged.model_id}"
    # No trial's run holds model files of its own (listed from the root: listing "model" itself
    # resolves the logged model through MLflow's global tracking URI, which this client lacks).
    assert not [c for c in children if "model" in {a.path for a in client.list_artifacts(c.info.run_id)}]
    best = client.get_run(tags["best.run_id"])
    assert [o.model_id for o in best.outputs.model_outputs] == [logged.model_id]  # the trial's run links it


def test_sweep_model_serves_raw_rows(sweep, cache_dir, tmp_path):
    client = MlflowClient(sweep.uri)
    _, parent, _ = parent_and_children(client)
    best = client.get_run(parent.data.tags["best.run_id"])
    check_model("models:/runner/1", sweep.uri, cache_dir, best.data.params, best.data.metrics["valid_auc"], tmp_path)


def test_register_false_logs_the_best_model_without_registering(tmp_path, cache_dir):
    args = [*SWEEP, "hydra.sweeper.n_trials=2", "model.num_boost_round=10", f"data.cache_dir={cache_dir}"]
    proc = run_runner([*args, "tracker.register=false"], tmp_path, multirun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best model registered: no (tracker.register=false); model models:/m-" in proc.stdout
    client = MlflowClient(store(tmp_path))
    exp, parent, _ = parent_and_children(client)
    assert client.search_registered_models() == []
    (logged,) = client.search_logged_models([exp.experiment_id])
    assert parent.data.tags["best.model_id"] == logged.model_id and "best.registered_model" not in parent.data.tags
