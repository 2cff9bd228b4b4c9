"""The distribution of a scoring's predictions in bounded memory, accumulated a chunk at a time:
counts in fixed bins over every row, exact count, mean, min and max, and a uniform sample of at
most SAMPLE_ROWS rows (key, prediction, label) for the quantiles and the evaluation charts.

The sample is a bottom-k sample of a seeded hash of the entity key: the rows whose key hashes
lowest. It is uniform, does not depend on the order the rows arrive in, and picks the same
entities in every scoring of the same keys. Up to SAMPLE_ROWS rows it is every row (quantiles
and evaluation exact); beyond, they are computed on the sample (min and max stay exact).

What is summarized per row (`kind`):
  binary      the predicted probability of the positive class, bins over [0, 1]
  multiclass  the top-class probability (the predicted class's), bins over [0, 1], and the
              count of rows per predicted class
  regression  the predicted value; its bins widen as values arrive (doubling, merging pairs)
  value       a model of unknown objective returning one number per row: as regression
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SAMPLE_ROWS = 100_000
BINS = 50  # even: widening merges bins in pairs
QUANTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)
SEED = "runner-sample-v1"  # pandas' hash_key: 16 bytes
KINDS = ("binary", "multiclass", "regression", "value")


@dataclass
class Histogram:
    """Counts in `bins` equal bins from `low`, of width `width`. bounded: values outside [low,
    high] go to the end bins; else the bins widen (doubling) to take them."""

    bins: int = BINS
    bounded: bool = False
    low: float = 0.0
    width: float = 0.0  # 0: no value yet (an unbounded histogram takes its range from the first)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def over(cls, low: float, high: float, bins: int = BINS) -> Histogram:
        return cls(bins, True, low, (high - low) / bins, np.zeros(bins, dtype=np.int64))

    @property
    def high(self) -> float:
        return self.low + self.bins * self.width

    @property
    def edges(self) -> np.ndarray:
        return self.low + self.width * np.arange(self.bins + 1)

    def add(self, values: np.ndarray) -> None:
        """values: finite floats."""
        if not len(values):
            return
        lo, hi = float(values.min()), float(values.max())
        if not self.width:
            span = hi - lo
            self.low = lo
            self.width = span / (self.bins - 1) if span > 0 else max(abs(lo), 1.0) * 1e-6
            self.counts = np.zeros(self.bins, dtype=np.int64)
        while not self.bounded and (lo < self.low or hi >= self.high):
            half = self.bins // 2
            merged = self.counts.reshape(half, 2).sum(axis=1)
            self.width *= 2
            if lo < self.low:
                self.counts = np.concatenate([np.zeros(half, dtype=np.int64), merged])
                self.low -= half * self.width
            else:
                self.counts = np.concatenate([merged, np.zeros(half, dtype=np.int64)])
        at = np.clip(np.floor((values - self.low) / self.width), 0, self.bins - 1).astype(np.int64)
        self.counts += np.bincount(at, minlength=self.bins)


@dataclass
class Sample:
    """Up to `size` rows: the lowest `priority` (a seeded hash of the key) seen so far."""

    size: int
    keys: Any = None  # numpy array
    priority: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    values: Any = None  # rows (binary, regression), or rows x classes (multiclass)
    labels: Any = None  # object array: the label as the warehouse returned it, None where unknown

    def __len__(self) -> int:
        return len(self.priority)

    def add(self, keys: np.ndarray, values: np.ndarray, labels: Optional[np.ndarray]) -> None:
        import pandas as pd

        priority = pd.util.hash_array(keys, hash_key=SEED)
        labels = labels if labels is not None else np.full(len(keys), None, dtype=object)
        if len(self) >= self.size:  # only rows that hash below the sample's largest can enter
            take = priority < self.priority.max()
            keys, values, labels, priority = keys[take], values[take], labels[take], priority[take]
        if not len(priority):
            return
        if self.keys is None:
            self.keys, self.values, self.labels, self.priority = keys, values, labels, priority
        else:
            self.keys = np.concatenate([self.keys, keys])
            self.values = np.concatenate([self.values, values])
            self.labels = np.concatenate([self.labels, labels.astype(object)])
            self.priority = np.concatenate([self.priority, priority])
        if len(self) > self.size:
            keep = np.argpartition(self.priority, self.size - 1)[: self.size]
            self.keys, self.values = self.keys[keep], self.values[keep]
            self.labels, self.priority = self.labels[keep], self.priority[keep]


@dataclass
class PredictionSummary:
    """The predictions of one scoring, a chunk at a time (add), labels after (add_labels)."""

    kind: str
    classes: List[str] = field(default_factory=list)  # multiclass: the model's class names
    sample_rows: int = SAMPLE_ROWS
    rows: int = 0
    finite: int = 0  # rows whose value is a finite number (the rest: not in bins, quantiles)
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    histogram: Histogram = field(default_factory=Histogram)
    class_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    sample: Sample = field(default_factory=lambda: Sample(SAMPLE_ROWS))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r}: one of {', '.join(KINDS)}")
        if self.kind in ("binary", "multiclass"):
            self.histogram = Histogram.over(0.0, 1.0)
        self.class_counts = np.zeros(len(self.classes), dtype=np.int64)
        self.sample = Sample(self.sample_rows)

    def add(self, keys: np.ndarray, predictions: np.ndarray, labels: Optional[np.ndarray] = None) -> None:
        """A chunk: the entity keys, the predictions (rows; multiclass: rows x classes, the
        probabilities in class order) and, if known, the labels (as the warehouse has them)."""
        values = np.asarray(predictions, dtype=float)
        if self.kind == "multiclass":
            if values.ndim != 2 or values.shape[1] != len(self.classes):
                raise ValueError(f"multiclass predictions of shape {values.shape}: rows x {len(self.classes)} classes")
            if len(values):
                self.class_counts += np.bincount(values.argmax(axis=1), minlength=len(self.classes))
        elif values.ndim != 1:
            raise ValueError(f"{self.kind} predictions of shape {values.shape}: one value per row")
        if len(values) != len(keys) or (labels is not None and len(labels) != len(keys)):
            raise ValueError(
                f"{len(keys)} keys, {len(values)} predictions, labels {None if labels is None else len(labels)}"
            )
        shown = self.shown(values)
        ok = shown[np.isfinite(shown)]
        self.rows += len(values)
        self.finite += len(ok)
        if len(ok):
            self.total += float(ok.sum())
            self.low, self.high = min(self.low, float(ok.min())), max(self.high, float(ok.max()))
        self.histogram.add(ok)
        self.sample.add(np.asarray(keys), values, None if labels is None else np.asarray(labels, dtype=object))

    def add_labels(self, keys: Any, labels: Any) -> int:
        """The labels of some rows by key (a chunk of a key-and-label query: keys a numpy array,
        labels a numpy or Arrow array); rows not in the sample are passed over. Returns how many
        sampled rows got their label."""
        import pandas as pd

        if not len(self.sample) or not len(keys):
            return 0
        at = pd.Index(self.sample.keys).get_indexer(pd.Index(np.asarray(keys)))
        picked = np.flatnonzero(at >= 0)
        values = labels.take(picked)
        values = values.to_pylist() if hasattr(values, "to_pylist") else list(values)  # Arrow: None for null
        column = np.empty(len(values), dtype=object)
        column[:] = values
        self.sample.labels[at[picked]] = column
        return len(picked)

    def shown(self, values: np.ndarray) -> np.ndarray:
        """The value per row that the histogram and quantiles describe."""
        if self.kind == "multiclass":
            return values.max(axis=1) if len(values) else np.zeros(0)
        return values

    @property
    def name(self) -> str:
        """The metric stem of that value: scored_<name>_p50."""
        return "top_proba" if self.kind == "multiclass" else "prediction"

    @property
    def title(self) -> str:
        return {
            "binary": "predicted probability of the positive class",
            "multiclass": "top-class probability (the predicted class's)",
        }.get(self.kind, "predicted value")

    @property
    def labelled_rows(self) -> int:
        """Sampled rows whose label is known (null labels are none)."""
        labels = self.sample.labels
        return 0 if labels is None else int((~_nulls(labels)).sum())

    @property
    def sampled(self) -> bool:
        """The quantiles and evaluation are on a sample, not every row."""
        return self.rows > len(self.sample)

    def quantiles(self) -> Dict[str, float]:
        """p<q> for q in QUANTILES: the sample's (every row's up to sample_rows); p0 and p100 the
        exact min and max."""
        if not self.finite:
            return {}
        shown = self.shown(self.sample.values)
        shown = shown[np.isfinite(shown)]
        out = {f"p{q}": float(np.quantile(shown, q / 100)) if len(shown) else math.nan for q in QUANTILES}
        out["p0"], out["p100"] = self.low, self.high
        return out

    def metrics(self, prefix: str = "scored") -> Dict[str, float]:
        """scored_<name>_p<q>, scored_<name>_mean, scored_sample_rows."""
        out = {f"{prefix}_{self.name}_{q}": v for q, v in self.quantiles().items()}
        if self.finite:
            out[f"{prefix}_{self.name}_mean"] = self.total / self.finite
        out[f"{prefix}_sample_rows"] = float(len(self.sample))
        return out

    def histogram_table(self) -> pd.DataFrame:
        """Every row's count per bin: bin_low, bin_high, rows."""
        import pandas as pd

        edges = self.histogram.edges if self.histogram.width else np.zeros(1)
        return pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:], "rows": self.histogram.counts})

    def class_table(self) -> pd.DataFrame:
        """Multiclass: rows per predicted class, of every row."""
        import pandas as pd

        share = self.class_counts / max(1, self.rows)
        return pd.DataFrame({"class": self.classes, "rows": self.class_counts, "share": share})

    def labelled(self, classes: Optional[Sequence[Any]] = None) -> Tuple[np.ndarray, np.ndarray, int]:
        """The sampled rows with a label the model knows: (target, predictions, unknown), target
        as runner's evaluation takes it (binary 0/1 of classes [negative, positive]; multiclass
        the class index, `classes` defaulting to the model's; regression the number); unknown:
        labelled rows whose label is none of the classes (or not a number), left out."""
        labels = self.sample.labels
        if labels is None:
            return np.zeros(0), np.zeros(0), 0
        target = label_targets(self.kind, labels, list(classes if classes is not None else self.classes))
        known = np.isfinite(target)
        unknown = int((~known & ~_nulls(labels)).sum())
        return target[known], self.sample.values[known], unknown


def _nulls(labels: np.ndarray) -> np.ndarray:
    import pandas as pd

    return np.asarray(pd.isna(labels), dtype=bool)


def label_targets(kind: str, labels: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """Labels (as the warehouse returned them) as runner's training encodes them, NaN where
    null or not one of `classes` (binary: [negative, positive]; multiclass: the model's)."""
    import pandas as pd

    out = np.full(len(labels), np.nan)
    nulls = _nulls(labels)
    if kind in ("regression", "value"):
        numbers = pd.to_numeric(pd.Series(labels[~nulls], dtype=object), errors="coerce").to_numpy(dtype=float)
        out[~nulls] = numbers
        return out
    codes = {_text(c): i for i, c in enumerate(classes)}
    numeric = {n: i for i, c in enumerate(classes) if (n := _number(c)) is not None}
    for at in np.flatnonzero(~nulls):
        value = labels[at]
        found = codes.get(_text(value))
        if found is None and (n := _number(value)) is not None:
            found = numeric.get(n)
        if found is not None:
            out[at] = found
    return out


def _text(value: Any) -> str:
    from ..model.labels import plain_value

    return str(plain_value(value))


def _number(value: Any) -> Optional[float]:
    from ..model.labels import plain_value

    value = plain_value(value)
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
