"""Raw feature rows <-> LightGBM inputs: the one encoding rule of training and of the logged model.

Self-contained on purpose (numpy and pandas, no runner import): the logged model carries a
copy of this file (code/runner_rows.py), so it scores raw rows without runner installed.

Each feature column has a kind, decided from the training frame as the warehouse returned it:

- "category": text; code = index of the value in the sorted training values (`categories`);
  null or a value unseen in training -> NaN (LightGBM's missing);
- "boolean": 0/1, null -> NaN;
- "integer", "float": the number as float64, null -> NaN.

An encoding (`spec`) is a dict: features (in the booster's order), kinds, categories, the
objective and the classes (binary: [negative, positive]; multiclass: sorted).

The model's output (`model_output`): binary, the probability of the positive class, and
regression, the value, as LightGBM predicts them (one float per row); multiclass, a DataFrame
of the predicted label (`prediction`, the label's own value: the most probable class) and
one probability column per class, `proba_<label>` (the label as text), in class order.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

KINDS = ("category", "boolean", "integer", "float")
PREDICTION = "prediction"  # multiclass output: the predicted label
PROBA_PREFIX = "proba_"  # multiclass output: proba_<label>, one column per class
_BOOLEANS = {True: 1.0, False: 0.0, "true": 1.0, "false": 0.0, "True": 1.0, "False": 0.0, "TRUE": 1.0, "FALSE": 0.0}


def kind_of(values: Any) -> str:
    """The kind of a training column (a pandas Series) as the warehouse returned it."""
    import pandas as pd

    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_numeric_dtype(dtype):
        return "float"
    return "category"


def category_values(values: Any) -> List[str]:
    """The sorted distinct values (as text) of a training column: code i is values[i]."""
    return sorted(values.dropna().astype(str).unique())


def encode_column(values: Any, kind: str, categories: Optional[List[str]] = None, name: str = "") -> np.ndarray:
    """One column (a pandas Series) as float64 LightGBM input; nulls and unseen categories -> NaN."""
    import pandas as pd

    if kind == "category":
        text = np.asarray(values.astype(str).where(values.notna()), dtype=object)  # nulls: NaN, never found
        codes = pd.Index(np.asarray(categories or [], dtype=object)).get_indexer(text)  # -1: null or unseen
        return np.where(codes < 0, np.nan, codes).astype(float)
    if kind == "boolean":
        if pd.api.types.is_bool_dtype(values.dtype) and not values.hasnans:
            return values.to_numpy(dtype=float)
        out = values.astype(object).map(lambda v: np.nan if _is_null(v) else _BOOLEANS.get(v, "bad"))
        bad = out.map(lambda v: isinstance(v, str))
        if bad.any():
            raise ValueError(f"column {name!r} is boolean: {values[bad].iloc[0]!r} is not true/false")
        return out.to_numpy(dtype=float)
    if kind in ("integer", "float"):
        if values.dtype == np.float64:
            return values.to_numpy()
        if pd.api.types.is_numeric_dtype(values.dtype):  # ints, float32, nullable Int64 (bool: above)
            return values.to_numpy(dtype=float, na_value=np.nan)
        try:  # objects (None for nulls), text from a CSV
            return pd.to_numeric(values.astype(object).where(values.notna(), None)).to_numpy(dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {name!r} is numeric ({kind}): {exc}") from None
    raise ValueError(f"column {name!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")


def encode_frame(frame: Any, spec: Dict[str, Any]) -> Any:
    """Raw rows (a DataFrame with the feature columns in any order, extra columns ignored) as
    the booster's float64 input, columns in the booster's order."""
    import pandas as pd

    features = spec["features"]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise ValueError(f"the rows lack feature column(s) {', '.join(map(repr, missing))}")
    kinds, categories = spec["kinds"], spec.get("categories") or {}
    return pd.DataFrame(
        {c: encode_column(frame[c], kinds[c], categories.get(c), c) for c in features}, index=frame.index
    )


def decode_frame(X: Any, spec: Dict[str, Any]) -> Any:
    """Encoded rows back to raw rows as the warehouse returns them (text for categories, int64
    for integer columns without nulls, None for nulls in text and boolean columns)."""
    import pandas as pd

    kinds, categories = spec["kinds"], spec.get("categories") or {}
    out = {}
    for c in spec["features"]:
        v = X[c]
        kind = kinds[c]
        if kind == "category":
            table = np.asarray([*(categories.get(c) or []), None], dtype=object)  # code -1 -> None
            codes = v.fillna(-1).astype(int).to_numpy()
            out[c] = pd.Series(table[codes], index=X.index, dtype=object)
        elif kind == "boolean":
            out[c] = v.astype(bool) if not v.hasnans else v.map(lambda x: None if np.isnan(x) else bool(x))
        elif kind == "integer" and not v.hasnans:
            out[c] = v.astype("int64")
        else:
            out[c] = v
    return pd.DataFrame(out, index=X.index)


def class_columns(classes: List[Any]) -> List[str]:
    """The multiclass output's probability columns: proba_<label> per class, in class order."""
    return [f"{PROBA_PREFIX}{c}" for c in classes]


def model_output(pred: Any, spec: Dict[str, Any], index: Any = None) -> Any:
    """The booster's predictions (pred) as the model returns them: multiclass as a DataFrame
    (`prediction` and `proba_<label>` per class), else as they are."""
    import pandas as pd

    if spec.get("objective") != "multiclass" or not spec.get("classes"):
        return pred
    classes = spec["classes"]
    proba = np.asarray(pred, dtype=float).reshape(len(pred), len(classes))
    labels = pd.Series(classes).to_numpy()  # one dtype: int64, float64, bool or text
    out = pd.DataFrame(proba, columns=class_columns(classes), index=index)
    out.insert(0, PREDICTION, labels[proba.argmax(axis=1)] if len(proba) else labels[:0])
    return out


def _is_null(v: Any) -> bool:
    try:
        return bool(v is None or v != v)
    except (TypeError, ValueError):  # pd.NA and friends
        return True
