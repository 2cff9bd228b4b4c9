"""The label column as LightGBM's target: 0/1 for binary, class indices for multiclass, the
number for regression; and the classes, recorded with the model (encoding.json) so that its
predictions map back to the label's own values.

Binary: a label of 0/1 (or booleans) is used as it is. Any other two distinct values (text
such as 'malignant'/'benign', or numbers) are accepted too: the positive class, the one the
model's probability is of, is model.positive_class, else the value that sorts last; one line
says which. Multiclass: the classes are the label's distinct values, sorted; class i is the
i-th. Classes are recorded as plain JSON values (text, integer, float or boolean).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

POSITIVE_SETTING = "model.positive_class"


def encode_label(
    label: pd.Series, objective: str, name: str, positive_class: Optional[str] = None
) -> Tuple[np.ndarray, Optional[List[Any]]]:
    """The label column as floats for `objective` (class indices for multiclass) and the classes
    (binary: [negative, positive]; multiclass: sorted; regression: None)."""
    import pandas as pd

    if positive_class is not None and objective != "binary":
        raise ConfigError(
            f"{POSITIVE_SETTING}={positive_class!r} is set, but model.params.objective={objective}: it names the "
            "positive class of a binary label only; leave it unset (null)"
        )
    if label.isna().all():
        raise DataError(f"data.label={name!r} is null in every row")
    if label.isna().any():
        raise DataError(
            f"data.label={name!r} is null in {int(label.isna().sum())} rows: filter them out in the feature definition"
        )
    if label.nunique() < 2:
        raise DataError(f"data.label={name!r} is constant ({label.iloc[0]!r}): nothing to learn")
    if objective == "binary":
        return _binary(label, name, positive_class)
    if objective == "multiclass":
        classes = distinct_values(label)
        plain = plain_values(classes)
        texts = [str(c) for c in plain]
        if len(set(texts)) != len(texts):
            same = sorted({t for t in texts if texts.count(t) > 1})
            raise DataError(
                f"data.label={name!r} has distinct values with the same text ({', '.join(map(repr, same))}): "
                "the model names its classes by their text; cast the label to one type in the feature definition"
            )
        return label.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=float), plain
    if not pd.api.types.is_numeric_dtype(label):
        raise DataError(f"data.label={name!r} is not numeric; model.params.objective=regression needs a number")
    return label.astype(float).to_numpy(), None


def _binary(label: pd.Series, name: str, positive_class: Optional[str]) -> Tuple[np.ndarray, List[Any]]:
    import pandas as pd

    values = distinct_values(label)
    if len(values) != 2:
        shown = ", ".join(map(repr, plain_values(values[:5]))) + (", ..." if len(values) > 5 else "")
        raise DataError(
            f"data.label={name!r} has {len(values)} distinct values ({shown}): model.params.objective=binary needs "
            f"two (0/1, or two values of which {POSITIVE_SETTING} names the positive one); use "
            "model.params.objective=multiclass for more"
        )
    numeric = pd.api.types.is_numeric_dtype(label) or pd.api.types.is_bool_dtype(label)
    zero_one = numeric and {float(v) for v in values} == {0.0, 1.0}
    if positive_class is None:
        at, why = 1, f"the one that sorts last; {POSITIVE_SETTING} sets it"
    else:
        at, why = _named(positive_class, values, name), POSITIVE_SETTING
    negative, positive = values[1 - at], values[at]
    classes = plain_values([negative, positive])
    if zero_one and float(positive) == 1.0:
        y = label.astype(float).to_numpy()  # 0/1 as it is
    else:
        y = (label == positive).to_numpy(dtype=float)
    if not zero_one or positive_class is not None:
        print(f"runner: binary label {name}: positive class {classes[1]!r} ({why})", flush=True)
    return y, classes


def _named(setting: str, values: List[Any], name: str) -> int:
    """The index of the one of the label's two values that model.positive_class names: the
    same text, else the same text ignoring case, else the same number."""
    for same in (
        lambda v: str(plain_value(v)) == setting,
        lambda v: str(plain_value(v)).lower() == setting.lower(),
        lambda v: _number(v) is not None and _number(v) == _number(setting),
    ):
        found = [i for i, v in enumerate(values) if same(v)]
        if len(found) == 1:
            return found[0]
    shown = ", ".join(repr(v) for v in plain_values(values))
    raise ConfigError(
        f"{POSITIVE_SETTING}={setting!r} is not one of the values of data.label={name!r} ({shown}): "
        "set it to one of them, or leave it unset (null: the one that sorts last)"
    )


def _number(value: Any) -> Optional[float]:
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def distinct_values(label: pd.Series) -> List[Any]:
    """The label's distinct values, sorted (by their text when they do not compare)."""
    values = label.unique().tolist()
    try:
        return sorted(values)
    except TypeError:  # mixed types
        return sorted(values, key=str)


def plain_value(value: Any) -> Any:
    """A label value as plain JSON: text, integer, float or boolean (a Snowflake NUMBER arrives
    as a Decimal, other values as their text)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def plain_values(values: List[Any]) -> List[Any]:
    """plain_value of each; values of more than one type all as text (a model's predicted label
    column has one type)."""
    plain = [plain_value(v) for v in values]
    kinds = {bool if isinstance(v, bool) else float if isinstance(v, float) else type(v) for v in plain}
    if kinds == {int, float}:
        return [float(v) for v in plain]
    return [str(v) for v in plain] if len(kinds) > 1 else plain
