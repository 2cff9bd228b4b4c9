"""LightGBM training on a prepared split: Datasets built once per binning, early stopping,
validation and test scores."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Sequence, Tuple

from ..allocator import give_back, reuse_large_blocks
from ..config import to_dict
from ..errors import ConfigError
from .metrics import OBJECTIVES, score
from .prepare import Prepared

if TYPE_CHECKING:
    import lightgbm as lgb
    from omegaconf import DictConfig

# The histogram layout a job trains with (lgb_params decides it when the config leaves both null).
LAYOUT_PARAMS = ("force_row_wise", "force_col_wise")
# Parameters that change how a Dataset is binned: a cached Dataset is reused
# only while these stay the same.
BINNING_PARAMS = (
    "max_bin",
    "min_data_in_bin",
    "bin_construct_sample_cnt",
    "use_missing",
    "zero_as_missing",
    "categorical_feature",
    "max_bin_by_feature",
    "linear_tree",
    # The sample the bins are found on (bin_construct_sample_cnt rows, 200,000 by default) is
    # drawn from the seed: without it a Dataset built before lgb.train would use LightGBM's
    # default data_random_seed, not model.params.seed, and differ from plain lgb.train.
    "seed",
    "data_random_seed",
)


# Parallel trials of a sweep share one Prepared: a Dataset missing from it is built by one
# trial while the others wait (not twice at once, each holding a copy of the bins).
_BUILDING = threading.Lock()


@dataclass
class TrainResult:
    booster: Any
    best_iteration: int
    metrics: Dict[str, float]
    params: Dict[str, Any]
    # The validation metric(s) after every boosting round (round 1 first): valid_<metric> -> values.
    curves: Dict[str, List[float]] = field(default_factory=dict)


def lgb_params(model_cfg: DictConfig, prepared: Prepared) -> Dict[str, Any]:
    params = to_dict(model_cfg.params)
    extra = params.pop("extra", {}) or {}
    params.update(extra)
    params["objective"] = prepared.objective
    if prepared.objective == "multiclass":
        found = len(prepared.classes or [])
        given = params.get("num_class")
        if given not in (None, 1, found):  # 1: the schema's default, not set by the user
            shown = ", ".join(map(str, (prepared.classes or [])[:10]))
            raise ConfigError(
                f"model.params.num_class={given}, but the label has {found} classes ({shown}): leave "
                "model.params.num_class unset (runner counts the classes) or check data.label"
            )
        params["num_class"] = found
    else:
        params.pop("num_class", None)
    params["metric"] = model_cfg.metric or OBJECTIVES[prepared.objective]
    row, col = params.get("force_row_wise"), params.get("force_col_wise")
    if row is None and col is None:
        # Row-wise histograms hold a row-major copy of every bin beside the Dataset's (at
        # 20M x 100 rows, 1.6 GB more): a table read in batches trains col-wise.
        row, col = not prepared.in_batches, prepared.in_batches
    params["force_row_wise"], params["force_col_wise"] = bool(row), bool(col)
    return params


def datasets(prepared: Prepared, params: Dict[str, Any]) -> Tuple[lgb.Dataset, lgb.Dataset]:
    """Train and validation Datasets, built once per binning and reused.

    feature_pre_filter=False keeps every feature splittable so later trials may
    lower min_child_samples without rebuilding.
    """
    import lightgbm as lgb

    binning = tuple((k, repr(params.get(k))) for k in BINNING_PARAMS)
    with _BUILDING:
        if binning not in prepared.datasets:
            ds_params = {k: params[k] for k in BINNING_PARAMS if k in params}
            ds_params.update(feature_pre_filter=False, verbosity=-1)
            if "seed" in ds_params and "data_random_seed" not in ds_params and "data_seed" not in ds_params:
                # Built from a Sequence, LightGBM draws the bin sample with only its Dataset
                # parameters, `seed` not among them: the seed `seed` gives, as from a matrix.
                ds_params["data_random_seed"] = data_random_seed(int(ds_params["seed"]))
            # A split kept in memory (a small table) is built from its matrix; a large one from
            # its rows in batches (a lightgbm.Sequence), keeping only the bins, never a float
            # matrix of the training rows (runner/model/batches.py). Same Datasets either way.
            train, valid = prepared.parts["train"], prepared.parts["valid"]
            names: Any = {"feature_name": prepared.features, "categorical_feature": prepared.categorical or "auto"}
            dtrain = lgb.Dataset(train.data(), train.y, params=ds_params, free_raw_data=False, **names)
            # The reference's params again: LightGBM takes them from the reference anyway, and
            # warns ("Overriding the parameters from Reference Dataset") when they differ.
            dvalid = lgb.Dataset(
                valid.data(), valid.y, params=ds_params, reference=dtrain, free_raw_data=False, **names
            )
            dtrain.construct()
            dvalid.construct()
            give_back()  # the row groups read for the bins (Arrow's pool keeps freed blocks)
            reuse_large_blocks()
            prepared.datasets[binning] = (dtrain, dvalid)
    return prepared.datasets[binning]


def data_random_seed(seed: int) -> int:
    """The data_random_seed LightGBM derives from `seed` (its Config::Set: the first draw of
    its Random(seed), a 32-bit linear congruential generator, as a 15-bit short)."""
    x = (214013 * (seed & 0xFFFFFFFF) + 2531011) & 0xFFFFFFFF
    return ((x >> 16) & 0x7FFF) % 32767


def row_subset(prepared: Prepared, dtrain: lgb.Dataset, binning: Any, fraction: float, seed: int) -> lgb.Dataset:
    """The training Dataset restricted to a sample of `fraction` of its rows (fixed by seed),
    sharing the full Dataset's bins (LightGBM's Dataset.subset); built once per sample."""
    import numpy as np

    if not 0 < fraction <= 1:
        raise ConfigError(f"model.row_fraction must be in (0, 1], got {fraction}")
    n = dtrain.num_data()
    size = max(1, int(round(fraction * n)))
    if size >= n:
        return dtrain
    key = (binning, "rows", size, seed)
    with _BUILDING:
        if key not in prepared.datasets:
            rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)).astype(np.int32)
            subset = dtrain.subset(rows.tolist(), params=dtrain.get_params())
            subset.construct()
            prepared.datasets[key] = subset
    return prepared.datasets[key]


def train(prepared: Prepared, model_cfg: DictConfig, callbacks: Sequence[Callable] = ()) -> TrainResult:
    import lightgbm as lgb

    params = lgb_params(model_cfg, prepared)
    dtrain, dvalid = datasets(prepared, params)
    fraction = float(model_cfg.get("row_fraction", 1.0) or 1.0)
    if fraction != 1.0:
        binning = tuple((k, repr(params.get(k))) for k in BINNING_PARAMS)
        dtrain = row_subset(prepared, dtrain, binning, fraction, int(model_cfg.get("row_seed", 0)))
    evals: Dict[str, Dict[str, List[float]]] = {}
    cbs = [*callbacks, lgb.record_evaluation(evals)]
    if model_cfg.early_stopping_rounds and model_cfg.early_stopping_rounds > 0:
        cbs.append(lgb.early_stopping(model_cfg.early_stopping_rounds, verbose=False))
    try:
        booster = lgb.train(
            params,
            dtrain,
            num_boost_round=model_cfg.num_boost_round,
            valid_sets=[dvalid],
            valid_names=["valid"],
            callbacks=cbs,
        )
    except lgb.basic.LightGBMError as exc:
        raise ConfigError(f"LightGBM rejected model.params: {str(exc).splitlines()[0]}") from None
    best = booster.best_iteration or booster.current_iteration()
    metrics: Dict[str, float] = {}
    for name in ("valid", "test"):
        part = prepared.parts[name]
        pred: Any = part.predict(booster, num_iteration=best)
        metrics.update({f"{name}_{k}": v for k, v in score(prepared, part.y, pred).items()})
    metrics["best_iteration"] = float(best)
    curves = {f"valid_{name}": [float(v) for v in values] for name, values in evals.get("valid", {}).items()}
    return TrainResult(booster, best, metrics, params, curves)
