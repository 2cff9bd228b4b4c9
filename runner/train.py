"""LightGBM training on the split feature table, with metrics per objective."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .errors import ConfigError, DataError
from .features import find_column
from .split import split_labels

OBJECTIVES = {"binary": "auc", "multiclass": "multi_logloss", "regression": "rmse"}
# Parameters that change how a Dataset is binned: a cached Dataset is reused
# only while these stay the same.
BINNING_PARAMS = ("max_bin", "min_data_in_bin", "bin_construct_sample_cnt", "use_missing",
                  "zero_as_missing", "categorical_feature", "max_bin_by_feature", "linear_tree")


@dataclass
class Prepared:
    objective: str
    features: List[str]
    categorical: List[str]
    parts: Dict[str, Any]  # split name -> (X DataFrame, y ndarray, keys)
    classes: Optional[List[Any]] = None
    categories: Dict[str, List[str]] = field(default_factory=dict)
    datasets: Dict[Any, Any] = field(default_factory=dict)
    owner: Optional[int] = None  # the thread that may use `datasets` (runner/pipeline.py)

    @property
    def sizes(self) -> Dict[str, int]:
        return {name: len(part[1]) for name, part in self.parts.items()}


@dataclass
class TrainResult:
    booster: Any
    best_iteration: int
    metrics: Dict[str, float]
    params: Dict[str, Any]


def lgb_params(model_cfg, prepared: Prepared) -> Dict[str, Any]:
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(model_cfg.params, resolve=True)
    extra = params.pop("extra", {}) or {}
    params.update(extra)
    params["objective"] = prepared.objective
    if prepared.objective == "multiclass":
        params["num_class"] = len(prepared.classes)
    else:
        params.pop("num_class", None)
    params["metric"] = model_cfg.metric or OBJECTIVES[prepared.objective]
    return params


def prepare(table, data_cfg, objective: str) -> Prepared:
    """Split the feature table by entity hash and encode label and categories."""
    import pandas as pd

    if objective not in OBJECTIVES:
        raise ConfigError(f"model.params.objective must be one of {', '.join(OBJECTIVES)}, "
                          f"got {objective!r}")
    names = table.column_names
    key_col = find_column(names, data_cfg.entity_key, "data.entity_key")
    label_col = find_column(names, data_cfg.label, "data.label")
    drop = {find_column(names, d, f"data.drop[{i}]") for i, d in enumerate(data_cfg.drop)}
    # Warehouses return rows in no fixed order: sort by entity so training does not depend
    # on it (LightGBM's float sums follow row order). Arrow sorts (stable, nulls last, as
    # pandas' stable sort) and hands its buffers over column by column: with the caller's
    # reference gone (FeatureSet.take_table) the rows are in memory twice at most, not four
    # times (pull, frame, sorted frame, features).
    table = table.sort_by([(key_col, "ascending")])
    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    del table
    keys = frame.pop(key_col)
    label = frame.pop(label_col)
    for col in drop:
        del frame[col]
    if label.isna().all():
        raise DataError(f"data.label={data_cfg.label!r} is null in every row")
    if label.isna().any():
        raise DataError(f"data.label={data_cfg.label!r} is null in {int(label.isna().sum())} rows: "
                        "filter them out in the feature definition")
    if label.nunique() < 2:
        raise DataError(f"data.label={data_cfg.label!r} is constant ({label.iloc[0]!r}): "
                        "nothing to learn")
    classes = None
    if objective == "binary":
        if not pd.api.types.is_numeric_dtype(label) and not pd.api.types.is_bool_dtype(label):
            raise DataError(f"data.label={data_cfg.label!r} has non-numeric values "
                            f"(e.g. {label.iloc[0]!r}); model.params.objective=binary needs 0/1")
        values = set(np.unique(label.astype(float)))
        if not values <= {0.0, 1.0}:
            raise DataError(f"data.label={data_cfg.label!r} must be 0/1 for "
                            f"model.params.objective=binary, got values {sorted(values)[:5]}")
        y = label.astype(float).to_numpy()
    elif objective == "multiclass":
        classes = sorted(label.unique().tolist())
        y = label.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=float)
    else:
        if not pd.api.types.is_numeric_dtype(label):
            raise DataError(f"data.label={data_cfg.label!r} is not numeric; "
                            "model.params.objective=regression needs a number")
        y = label.astype(float).to_numpy()
    X = frame
    categorical: List[str] = []
    categories: Dict[str, List[str]] = {}
    for col in X.columns:
        dtype = X[col].dtype
        if pd.api.types.is_bool_dtype(dtype):
            X[col] = X[col].astype(float)
        elif not pd.api.types.is_numeric_dtype(dtype):
            if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(X[col].iloc[0], (pd.Timestamp,)):
                raise DataError(f"feature column {col!r} is a date/time: turn it into a number in the "
                                "feature definition (e.g. days since) or list it in data.drop")
            # Integer codes over the sorted values: numeric inputs for the logged
            # model's signature; the code -> value map is logged with the run.
            values = sorted(X[col].dropna().astype(str).unique())
            codes = pd.Categorical(X[col].astype(str).where(X[col].notna()), categories=values).codes
            X[col] = np.where(codes < 0, np.nan, codes).astype(float)
            categories[col] = values
            categorical.append(col)
        elif dtype != np.float64:
            X[col] = X[col].astype(float)
    if X.shape[1] == 0:
        raise DataError("the feature result has no feature columns besides data.entity_key and data.label")
    keys = keys.to_numpy()
    which = split_labels(keys, data_cfg.split.valid, data_cfg.split.test, data_cfg.split.salt)
    parts = {}
    for name in ("train", "valid", "test"):
        mask = which == name
        if mask.sum() == 0:
            raise DataError(f"the {name} split is empty ({len(X)} rows): add rows or change "
                            "data.split.valid / data.split.test")
        parts[name] = (X[mask].reset_index(drop=True), y[mask], keys[mask])
    return Prepared(objective, list(X.columns), categorical, parts, classes, categories)


def datasets(prepared: Prepared, params: Dict[str, Any]):
    """Train and validation Datasets, built once per binning and reused.

    feature_pre_filter=False keeps every feature splittable so later trials may
    lower min_child_samples without rebuilding.
    """
    import lightgbm as lgb

    binning = tuple((k, repr(params.get(k))) for k in BINNING_PARAMS)
    if binning not in prepared.datasets:
        ds_params = {k: params[k] for k in BINNING_PARAMS if k in params}
        ds_params.update(feature_pre_filter=False, verbosity=-1)
        X, y, _ = prepared.parts["train"]
        dtrain = lgb.Dataset(X, y, params=ds_params, categorical_feature=prepared.categorical or "auto",
                             free_raw_data=False)
        Xv, yv, _ = prepared.parts["valid"]
        dvalid = lgb.Dataset(Xv, yv, reference=dtrain, categorical_feature=prepared.categorical or "auto",
                             free_raw_data=False)
        dtrain.construct()
        dvalid.construct()
        prepared.datasets[binning] = (dtrain, dvalid)
    return prepared.datasets[binning]


def train(prepared: Prepared, model_cfg, callbacks: Sequence[Callable] = ()) -> TrainResult:
    import lightgbm as lgb

    params = lgb_params(model_cfg, prepared)
    dtrain, dvalid = datasets(prepared, params)
    cbs = list(callbacks)
    if model_cfg.early_stopping_rounds and model_cfg.early_stopping_rounds > 0:
        cbs.append(lgb.early_stopping(model_cfg.early_stopping_rounds, verbose=False))
    try:
        booster = lgb.train(params, dtrain, num_boost_round=model_cfg.num_boost_round,
                            valid_sets=[dvalid], valid_names=["valid"], callbacks=cbs)
    except lgb.basic.LightGBMError as exc:
        raise ConfigError(f"LightGBM rejected model.params: {str(exc).splitlines()[0]}") from None
    best = booster.best_iteration or booster.current_iteration()
    metrics = {}
    for name in ("valid", "test"):
        X, y, _ = prepared.parts[name]
        metrics.update({f"{name}_{k}": v for k, v in
                        score(prepared, y, booster.predict(X, num_iteration=best)).items()})
    metrics["best_iteration"] = float(best)
    return TrainResult(booster, best, metrics, params)


def score(prepared: Prepared, y: np.ndarray, pred: np.ndarray) -> Dict[str, float]:
    from sklearn import metrics as m

    if prepared.objective == "binary":
        out = {"auc": m.roc_auc_score(y, pred) if len(set(y)) > 1 else float("nan"),
               "logloss": m.log_loss(y, np.clip(pred, 1e-15, 1 - 1e-15), labels=[0, 1]),
               "accuracy": m.accuracy_score(y, pred >= 0.5)}
    elif prepared.objective == "multiclass":
        labels = list(range(len(prepared.classes)))
        out = {"multi_logloss": m.log_loss(y, pred, labels=labels),
               "accuracy": m.accuracy_score(y, pred.argmax(axis=1)),
               "macro_f1": m.f1_score(y, pred.argmax(axis=1), average="macro")}
    else:
        out = {"rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
               "mae": m.mean_absolute_error(y, pred), "r2": m.r2_score(y, pred)}
    return {k: float(v) for k, v in out.items()}


def headline(objective: str) -> str:
    return {"binary": "auc", "multiclass": "multi_logloss", "regression": "rmse"}[objective]
