"""The feature table as LightGBM inputs: rows sorted by entity, label and categories
encoded, split train/validation/test by the entity hash."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from ..allocator import give_back
from ..data.definition import find_column
from ..data.split import split_labels
from ..errors import ConfigError, DataError
from ..names import Tag
from .batches import KEEP_BYTES, Part, Rows
from .labels import encode_label
from .metrics import OBJECTIVES
from .rows import category_values, encode_column, kind_of

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from omegaconf import DictConfig


@dataclass
class Prepared:
    objective: str
    features: List[str]
    categorical: List[str]
    parts: Dict[str, Part]  # split name -> its rows (X read in batches, y, keys): batches.py
    classes: Optional[List[Any]] = None  # binary: [negative, positive]; multiclass: sorted (labels.py)
    categories: Dict[str, List[str]] = field(default_factory=dict)
    # feature -> kind of the raw column (runner/model/rows.py): what a logged model takes.
    kinds: Dict[str, str] = field(default_factory=dict)
    datasets: Dict[Any, Any] = field(default_factory=dict)
    owner: Optional[int] = None  # the thread that may use `datasets` (runner/job/memo.py)
    all_null: List[str] = field(default_factory=list)  # columns null in every row: not features

    @property
    def sizes(self) -> Dict[str, int]:
        return {name: len(part) for name, part in self.parts.items()}

    @property
    def in_batches(self) -> bool:
        """The training rows are read in batches, not kept in memory (a table over KEEP_BYTES)."""
        return self.parts["train"].kept is None


def _check_unique(keys: Any, column: str, setting: str) -> None:
    """Sorted entity keys must not repeat: a repeated key puts rows of one entity together
    in one split by its hash and gives scoring two predictions for one entity."""
    if len(keys) < 2:
        return
    repeated = keys[1:] == keys[:-1]
    if not repeated.any():
        return
    distinct = len(keys) - int(np.count_nonzero(repeated))
    example = keys[1:][repeated][0]
    shown = example.item() if hasattr(example, "item") else example  # 9.742, not np.float64(9.742)
    raise DataError(
        f"data.entity_key={setting!r} is not unique in the feature result ({len(keys)} rows, {distinct} "
        f"entities; e.g. {shown!r} in {int(np.count_nonzero(keys == example))} rows): the definition must "
        f"give one row per entity (column {column!r}), as the split hashes the key"
    )


def prepare(table: Any, data_cfg: DictConfig, objective: str, positive_class: Optional[str] = None) -> Prepared:
    """Split the feature table by entity hash and encode label and categories (positive_class:
    model.positive_class, for a binary label of two values other than 0/1; labels.py)."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"model.params.objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    import pyarrow.compute as pc

    names = table.column_names
    key_col = find_column(names, data_cfg.entity_key, "data.entity_key")
    label_col = find_column(names, data_cfg.label, "data.label")
    if key_col == label_col:
        raise ConfigError(
            f"data.entity_key and data.label are the same column {key_col!r}: the entity key identifies a row "
            "(the split hashes it), the label is what the model learns; set data.entity_key to an id column"
        )
    drop = {find_column(names, d, f"data.drop[{i}]") for i, d in enumerate(data_cfg.drop)}
    features = [c for c in names if c not in {key_col, label_col} | drop]
    if not features:
        raise DataError("the feature result has no feature columns besides data.entity_key and data.label")
    # Warehouses return rows in no fixed order unless asked: training takes them sorted by
    # entity (LightGBM's float sums follow row order). The pull asks for that order
    # (runner/data/pull.py), so the split's rows are read from the table in batches as they
    # are (runner/model/batches.py); a table in another order is sorted here (Arrow's sort is
    # stable, nulls last). `table` is a pyarrow Table or a cache Entry (runner/data/entry.py),
    # which reads one column at a time: only labels, keys and one column are in memory here.
    key_values = _integral(table[key_col])  # a cache entry reads each column as it is asked for
    order: Optional[np.ndarray] = None  # None: already in key order, the rows are read as they are
    if not _increasing(key_values):
        order = pc.sort_indices(key_values).to_numpy().astype(np.int64)
    keys = (key_values.take(order) if order is not None else key_values).to_pandas().to_numpy()
    del key_values
    _check_unique(keys, key_col, data_cfg.entity_key)
    label = table[label_col]
    y, classes = encode_label(
        (label.take(order) if order is not None else label).to_pandas(), objective, data_cfg.label, positive_class
    )
    del label
    which = split_labels(keys, data_cfg.split.valid, data_cfg.split.test, data_cfg.split.salt)
    kinds: Dict[str, str] = {}
    categories: Dict[str, List[str]] = {}
    all_null: List[str] = []
    for col in features:
        values = table[col].to_pandas()
        if values.isna().all():  # nothing to learn from, and no type to give the model's input
            all_null.append(col)
            continue
        kinds[col] = kind_of(values)
        encoded, cats = encode_feature(values, col)  # refused here, not halfway through training
        if cats is not None:
            categories[col] = cats
        del values, encoded
    give_back()
    if all_null:
        features = _without(features, all_null)
    rows = Rows(table, features, kinds, categories, order)
    parts: Dict[str, Part] = {}
    for name in ("train", "valid", "test"):
        mask = which == name
        if not mask.any():
            raise DataError(
                f"the {name} split is empty ({len(keys)} rows): add rows or change data.split.valid / data.split.test"
            )
        index = order[mask] if order is not None else np.flatnonzero(mask)
        parts[name] = Part(rows, index, y[mask], keys[mask])
    # Small splits are kept encoded, read once: the whole table when it is small (its Datasets
    # built from the matrix, as fast as before), else validation and test when they are (a
    # sweep predicts on them every trial). The training rows of a large table stay on disk.
    row_bytes = 8 * len(features)
    small = ("train", "valid", "test") if len(keys) * row_bytes <= KEEP_BYTES else ("valid", "test")
    if sum(len(parts[name]) for name in small) * row_bytes <= KEEP_BYTES:
        for name in small:
            parts[name].keep()
        give_back()  # the row groups read to fill them
    return Prepared(objective, features, list(categories), parts, classes, categories, kinds, all_null=all_null)


def _without(features: List[str], all_null: List[str]) -> List[str]:
    """The features without the columns null in every row, said in one line."""
    print(
        f"runner: warning: null in every row of the feature result, not used as features: {', '.join(all_null)} "
        f"(listed in tag {Tag.ALL_NULL})",
        flush=True,
    )
    keep = [col for col in features if col not in all_null]
    if not keep:
        raise DataError(
            "every feature column is null in every row of the feature result: check data.table / data.query / "
            "data.features"
        )
    return keep


def _increasing(values: pa.ChunkedArray) -> bool:
    """Every key greater than the one before (no nulls): the rows are in the order the sort
    would give."""
    import pyarrow.compute as pc

    if values.null_count or len(values) < 2:
        return not values.null_count
    try:
        return bool(pc.all(pc.greater(values[1:], values[:-1])).as_py())
    except (NotImplementedError, TypeError, ValueError) as exc:  # a type Arrow cannot compare
        log.debug("keys not compared (%s): sorted", exc)
        return False


def _integral(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """An integer key as int64: Snowflake's NUMBER(p, 0) arrives as a decimal, which pandas
    makes a Python Decimal per row (140 bytes each, kept for the split). Its text, what the
    split hashes, is the same; a value beyond int64 keeps the decimal."""
    import pyarrow as pa

    if pa.types.is_decimal(values.type) and values.type.scale == 0:
        try:
            return values.cast(pa.int64())
        except pa.ArrowInvalid:
            pass
    return values


def encode_feature(values: pd.Series, col: str) -> Tuple[np.ndarray, Optional[List[str]]]:
    """One feature column (a pandas Series) as float64 and its categories (None unless text).

    Text columns become integer codes over their sorted values (nulls stay missing); the
    code -> value map is returned (logged, and carried by the logged model, which encodes raw
    rows with the same rule: runner/model/rows.py). Booleans become 0/1; dates are refused
    (turn them into numbers in the definition).
    """
    import pandas as pd

    kind = kind_of(values)
    if kind == "category":
        if pd.api.types.is_datetime64_any_dtype(values.dtype) or isinstance(values.iloc[0], (pd.Timestamp,)):
            raise DataError(
                f"feature column {col!r} is a date/time: turn it into a number in the "
                "feature definition (e.g. days since) or list it in data.drop"
            )
        categories = category_values(values)
        return encode_column(values, kind, categories, col), categories
    return encode_column(values, kind, None, col), None


def encode_features(X: pd.DataFrame) -> Dict[str, List[str]]:
    """Every feature column of frame X as float64, in place (encode_feature); the categories."""
    categories: Dict[str, List[str]] = {}
    for col in X.columns:
        X[col], cats = encode_feature(X[col], col)
        if cats is not None:
            categories[col] = cats
    return categories
