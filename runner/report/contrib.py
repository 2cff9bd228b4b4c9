"""Feature contributions (SHAP values) from LightGBM itself: `Booster.predict(...,
pred_contrib=True)` on a sample of rows, no extra dependency.

Per row, the contributions of the features plus the expected value add up to the raw score
(log-odds for binary, per class for multiclass); the mean |contribution| per feature ranks
the features by how much they move predictions on these rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

SAMPLE_ROWS = 2000


@dataclass
class Contributions:
    features: List[str]
    values: Dict[str, np.ndarray]  # class name ("" for binary/regression) -> rows x features
    data: np.ndarray  # the sampled rows' feature values (categories as their codes)
    rows: int

    def table(self) -> Any:
        """Mean |contribution| per feature (a column per class), largest first."""
        import pandas as pd

        frame = pd.DataFrame({"feature": self.features})
        for name, values in self.values.items():
            frame[f"mean_abs_contribution{'_' + name if name else ''}"] = np.abs(values).mean(axis=0)
        return frame.sort_values(frame.columns[1], ascending=False, ignore_index=True)


def contributions(
    booster: Any, split: Any, best: int, classes: Optional[List[Any]] = None, sample: int = SAMPLE_ROWS, seed: int = 0
) -> Contributions:
    """Contributions on up to `sample` rows of a split (a DataFrame, or a Part read in batches:
    runner/model/batches.py), drawn by seed, at the best iteration."""
    n = len(split)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    part = split.iloc[rows] if hasattr(split, "iloc") else split.frame(rows)
    raw = np.asarray(booster.predict(part, num_iteration=best, pred_contrib=True))
    features = list(booster.feature_name())
    width = len(features) + 1  # the features, then the expected value
    per_class = booster.num_model_per_iteration()
    if per_class == 1:
        values = {"": raw[:, : width - 1]}
    else:
        blocks = raw.reshape(len(rows), per_class, width)
        names = [str(c) for c in (classes or range(per_class))]
        values = {name: blocks[:, k, : width - 1] for k, name in enumerate(names)}
    data = np.column_stack(
        [part[c].cat.codes.to_numpy() if str(part[c].dtype) == "category" else part[c].to_numpy() for c in part.columns]
    ).astype(float)
    return Contributions(features, values, data, len(rows))
