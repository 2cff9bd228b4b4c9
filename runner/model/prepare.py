"""The feature table as LightGBM inputs: rows sorted by entity, label and categories
encoded, split train/validation/test by the entity hash."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..data.definition import find_column
from ..data.split import split_labels
from ..errors import ConfigError, DataError
from .metrics import OBJECTIVES
from .rows import category_values, encode_column, kind_of


@dataclass
class Prepared:
    objective: str
    features: List[str]
    categorical: List[str]
    parts: Dict[str, Any]  # split name -> (X DataFrame, y ndarray, keys)
    classes: Optional[List[Any]] = None
    categories: Dict[str, List[str]] = field(default_factory=dict)
    # feature -> kind of the raw column (runner/model/rows.py): what a logged model takes.
    kinds: Dict[str, str] = field(default_factory=dict)
    datasets: Dict[Any, Any] = field(default_factory=dict)
    owner: Optional[int] = None  # the thread that may use `datasets` (runner/job/memo.py)

    @property
    def sizes(self) -> Dict[str, int]:
        return {name: len(part[1]) for name, part in self.parts.items()}


def prepare(table, data_cfg, objective: str) -> Prepared:
    """Split the feature table by entity hash and encode label and categories."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"model.params.objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
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
    y, classes = encode_label(label, objective, data_cfg.label)
    X = frame
    kinds = {col: kind_of(X[col]) for col in X.columns}
    categories = encode_features(X)
    if X.shape[1] == 0:
        raise DataError("the feature result has no feature columns besides data.entity_key and data.label")
    keys = keys.to_numpy()
    which = split_labels(keys, data_cfg.split.valid, data_cfg.split.test, data_cfg.split.salt)
    parts = {}
    for name in ("train", "valid", "test"):
        mask = which == name
        if mask.sum() == 0:
            raise DataError(
                f"the {name} split is empty ({len(X)} rows): add rows or change data.split.valid / data.split.test"
            )
        parts[name] = (X[mask].reset_index(drop=True), y[mask], keys[mask])
    return Prepared(objective, list(X.columns), list(categories), parts, classes, categories, kinds)


def encode_label(label, objective: str, name: str) -> Tuple[np.ndarray, Optional[List[Any]]]:
    """The label column as floats for `objective` (class indices for multiclass) and the classes."""
    import pandas as pd

    if label.isna().all():
        raise DataError(f"data.label={name!r} is null in every row")
    if label.isna().any():
        raise DataError(
            f"data.label={name!r} is null in {int(label.isna().sum())} rows: filter them out in the feature definition"
        )
    if label.nunique() < 2:
        raise DataError(f"data.label={name!r} is constant ({label.iloc[0]!r}): nothing to learn")
    if objective == "binary":
        if not pd.api.types.is_numeric_dtype(label) and not pd.api.types.is_bool_dtype(label):
            raise DataError(
                f"data.label={name!r} has non-numeric values "
                f"(e.g. {label.iloc[0]!r}); model.params.objective=binary needs 0/1"
            )
        values = set(np.unique(label.astype(float)))
        if not values <= {0.0, 1.0}:
            raise DataError(
                f"data.label={name!r} must be 0/1 for model.params.objective=binary, got values {sorted(values)[:5]}"
            )
        return label.astype(float).to_numpy(), None
    if objective == "multiclass":
        classes = sorted(label.unique().tolist())
        return label.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=float), classes
    if not pd.api.types.is_numeric_dtype(label):
        raise DataError(f"data.label={name!r} is not numeric; model.params.objective=regression needs a number")
    return label.astype(float).to_numpy(), None


def encode_features(X) -> Dict[str, List[str]]:
    """Turn every feature column of frame X into float64, in place; return the categories.

    Text columns become integer codes over their sorted values (nulls stay missing); the
    code -> value map is returned (logged, and carried by the logged model, which encodes raw
    rows with the same rule: runner/model/rows.py). Booleans become 0/1; dates are refused
    (turn them into numbers in the definition).
    """
    import pandas as pd

    categories: Dict[str, List[str]] = {}
    for col in X.columns:
        dtype = X[col].dtype
        kind = kind_of(X[col])
        if kind == "category":
            if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(X[col].iloc[0], (pd.Timestamp,)):
                raise DataError(
                    f"feature column {col!r} is a date/time: turn it into a number in the "
                    "feature definition (e.g. days since) or list it in data.drop"
                )
            categories[col] = category_values(X[col])
            X[col] = encode_column(X[col], kind, categories[col], col)
        elif dtype != np.float64:
            X[col] = encode_column(X[col], kind, None, col)
    return categories
