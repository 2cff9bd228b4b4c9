"""A split's feature rows read from the feature table in batches, never as one float matrix.

The pull orders rows by entity key (runner/data/pull.py), the order training takes them in,
so a split's rows are a subsequence of the cache entry's rows: they are read a Parquet row
group at a time, encoded (runner/model/rows.py) and handed on in batches. LightGBM builds its
binned Datasets from a `lightgbm.Sequence` over them (1 byte per feature and row at
max_bin <= 255, instead of 8 for the float64 matrix), and predictions run batch by batch.

A table whose rows are not in key order (an entry pulled before the pull ordered them, a
table given in memory) is one group: encoded whole, as before, then taken in key order.
Either way the rows, their order and their values are the same, so the Datasets and the
models are the same as from one matrix.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .rows import encode_column

if TYPE_CHECKING:
    import pandas as pd

BATCH_ROWS = 65_536  # rows per batch handed to LightGBM or to predict
# Splits kept encoded in memory (runner/model/prepare.py): all of them when the whole table
# is under this size as float64, else validation and test when they are (a sweep's trials
# predict on them every time).
KEEP_BYTES = 256 << 20


class Rows:
    """The feature table's rows, encoded: `table` is a cache Entry (read by row group) or an
    in-memory pyarrow Table; `order` the table's rows in key order (None: already in key order)."""

    def __init__(
        self,
        table: Any,
        features: List[str],
        kinds: Dict[str, str],
        categories: Dict[str, List[str]],
        order: Optional[np.ndarray],
    ) -> None:
        self.table = table
        self.features = features
        self.kinds = kinds
        self.categories = categories
        n = int(table.num_rows)
        self.in_order = order is None
        self.bounds = np.array(_group_bounds(table) if self.in_order else [0, n], dtype=np.int64)
        self._whole: Optional[np.ndarray] = None  # not in key order: the one group, shared
        self._lock = threading.Lock()

    def group(self, g: int) -> np.ndarray:
        """Group g's rows (in table order) as a float64 matrix, one row per table row."""
        if not self.in_order:
            with self._lock:  # encoded once for every reader (the whole table, as before)
                if self._whole is None:
                    self._whole = self._encode(0)
            return self._whole
        return self._encode(g)

    def _encode(self, g: int) -> np.ndarray:
        start, stop = int(self.bounds[g]), int(self.bounds[g + 1])
        raw = _read_rows(self.table, self.features, g, start, stop, len(self.bounds) - 1)
        out = np.empty((stop - start, len(self.features)), dtype=np.float64)
        for j, col in enumerate(self.features):
            values = raw.column(col).to_pandas()
            out[:, j] = encode_column(values, self.kinds[col], self.categories.get(col), col)
        return out

    def reader(self) -> Reader:
        return Reader(self)


class Reader:
    """Rows by table index, with the last group read kept (LightGBM asks for its bin sample one
    row at a time, in increasing order, then for batches in order). One per user: not shared
    between threads."""

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        self._g = -1
        self._matrix: Optional[np.ndarray] = None

    def row(self, i: int) -> np.ndarray:
        """Table row i as a float64 vector (LightGBM's bin sample asks for rows one by one)."""
        bounds = self.rows.bounds
        if not (self._g >= 0 and bounds[self._g] <= i < bounds[self._g + 1]):
            self._group(int(np.searchsorted(bounds, i, side="right") - 1))
        assert self._matrix is not None
        return self._matrix[i - bounds[self._g]]

    def take(self, index: np.ndarray) -> np.ndarray:
        """The rows at table indices `index` (in that order) as a C-order float64 matrix."""
        bounds = self.rows.bounds
        groups = np.searchsorted(bounds, index, side="right") - 1
        out = np.empty((len(index), len(self.rows.features)), dtype=np.float64)
        for g in _runs(groups):
            mine = groups == g
            out[mine] = self._group(int(g))[index[mine] - bounds[g]]
        return out

    def forget(self) -> None:
        """Drop the group held (a reader kept by a built Dataset holds no rows)."""
        self._g, self._matrix = -1, None

    def _group(self, g: int) -> np.ndarray:
        if g != self._g:
            self._matrix = None  # the previous group's memory goes before the next is read
            self._matrix, self._g = self.rows.group(g), g
        assert self._matrix is not None
        return self._matrix


@dataclass
class Part:
    """One split: labels and entity keys in memory; features read from `rows` at table
    indices `index` (the split's rows in key order)."""

    rows: Rows
    index: np.ndarray
    y: np.ndarray
    keys: np.ndarray
    kept: Optional[np.ndarray] = None  # the whole split encoded, when small (see keep)

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self) -> Iterator[Any]:
        """(X, y, keys), X the whole split as a DataFrame: for small data and interactive use."""
        return iter((self.frame(), self.y, self.keys))

    @property
    def features(self) -> List[str]:
        return self.rows.features

    def keep(self) -> None:
        """Hold the split encoded in memory (a sweep predicts on it in every trial)."""
        if self.kept is None:
            self.kept = np.ascontiguousarray(self.matrix())

    def matrix(self, positions: Optional[np.ndarray] = None) -> np.ndarray:
        """The split's rows at `positions` (all by default) as a float64 matrix."""
        if self.kept is not None:
            return self.kept if positions is None else self.kept[positions]
        index = self.index if positions is None else self.index[positions]
        return self.rows.reader().take(index)

    def frame(self, positions: Optional[np.ndarray] = None) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.matrix(positions), columns=self.features, copy=False)

    def head(self, n: int) -> pd.DataFrame:
        return self.frame(np.arange(min(n, len(self))))

    def batches(self, size: int = BATCH_ROWS) -> Iterator[Tuple[int, np.ndarray]]:
        """(start position, rows) batches of the split in order."""
        reader = self.rows.reader()
        for start in range(0, len(self), size):
            stop = min(start + size, len(self))
            yield start, (self.kept[start:stop] if self.kept is not None else reader.take(self.index[start:stop]))

    def predict(self, booster: Any, **kwargs: Any) -> np.ndarray:
        """booster.predict over the split, batch by batch (one array, as on the whole split)."""
        if self.kept is not None:
            return np.asarray(booster.predict(self.kept, **kwargs))
        out = [np.asarray(booster.predict(rows, **kwargs)) for _, rows in self.batches()]
        return np.concatenate(out) if out else np.asarray(booster.predict(self.matrix(), **kwargs))

    def data(self) -> Any:
        """What a Dataset is built from: the kept matrix, else the rows as a Sequence."""
        return self.kept if self.kept is not None else self.sequence()

    def sequence(self) -> Any:
        """The split as a lightgbm.Sequence (what a Dataset is built from in batches)."""
        return _sequence(self)


def _sequence(part: Part, index: Optional[np.ndarray] = None) -> Any:
    import lightgbm as lgb

    rows = part.index if index is None else index

    class SplitSequence(lgb.Sequence):
        batch_size = BATCH_ROWS

        def __init__(self) -> None:
            self.reader = part.rows.reader()

        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, idx: Any) -> Any:
            if isinstance(idx, slice):
                out = self.reader.take(rows[idx])
                if idx.stop is None or idx.stop >= len(rows):
                    self.reader.forget()  # the last batch: the Dataset keeps this object, not its rows
                return out
            if isinstance(idx, (list, np.ndarray)):  # Dataset.subset's rows: a view, not a copy
                return _sequence(part, rows[np.asarray(idx, dtype=np.int64)])
            return self.reader.row(int(rows[idx]))  # float64, as LightGBM needs (#5045)

    return SplitSequence()


def _runs(groups: np.ndarray) -> List[int]:
    """The distinct values of `groups` in order of first appearance."""
    if not len(groups):
        return []
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    seen: Dict[int, None] = dict.fromkeys(int(g) for g in groups[starts])
    return list(seen)


def _group_bounds(table: Any) -> List[int]:
    """Row offsets of the table's groups: a cache entry's Parquet row groups, an in-memory
    table in slices of BATCH_ROWS."""
    if hasattr(table, "group_rows"):  # a cache Entry
        sizes = table.group_rows
    else:
        n = int(table.num_rows)
        sizes = [min(BATCH_ROWS, n - s) for s in range(0, n, BATCH_ROWS)] or [0]
    return [0, *np.cumsum(sizes).tolist()]


def _read_rows(table: Any, features: List[str], g: int, start: int, stop: int, groups: int) -> Any:
    """Rows [start, stop) of the table (group g of `groups`) with the feature columns."""
    if hasattr(table, "row_group"):  # a cache Entry
        return table.read(features) if groups == 1 else table.row_group(g, features)
    return table.select(features).slice(start, stop - start)
