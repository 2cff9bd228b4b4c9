"""runner/model/rows.py: raw rows <-> LightGBM inputs, the rule training and the logged model share."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from runner.model import encode_features
from runner.model.rows import category_values, decode_frame, encode_column, encode_frame, kind_of

pytestmark = pytest.mark.unit


def nan_equal(a, b) -> bool:
    return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float), equal_nan=True)


def training_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "PLAN": pd.Series(["pro", "basic", None, "team", "basic"], dtype="str"),
            "N": [1, 2, 3, 4, 5],
            "AMOUNT": [1.5, np.nan, 3.0, 4.25, 5.0],
            "FLAG": [True, False, True, False, True],
        }
    )


def spec_of(frame: pd.DataFrame):
    kinds = {c: kind_of(frame[c]) for c in frame.columns}
    X = frame.copy()
    categories = encode_features(X)
    return {"features": list(frame.columns), "kinds": kinds, "categories": categories}, X


def test_kinds_follow_the_warehouse_types():
    frame = training_frame()
    assert {c: kind_of(frame[c]) for c in frame.columns} == {
        "PLAN": "category",
        "N": "integer",
        "AMOUNT": "float",
        "FLAG": "boolean",
    }
    assert kind_of(pd.Series([1, None], dtype="Int64")) == "integer"
    assert kind_of(pd.Series(["a", None], dtype=object)) == "category"


def test_serving_encodes_raw_rows_exactly_as_training_did():
    frame = training_frame()
    spec, X = spec_of(frame)
    assert spec["categories"] == {"PLAN": ["basic", "pro", "team"]}
    assert nan_equal(encode_frame(frame, spec).to_numpy(), X.to_numpy())


def test_unseen_categories_and_nulls_are_missing_not_errors():
    spec, _ = spec_of(training_frame())
    rows = pd.DataFrame(
        {
            "PLAN": ["enterprise", None, "pro"],
            "N": [None, 2, 3],
            "AMOUNT": [None, 1.0, 2.0],
            "FLAG": [None, True, False],
        }
    )
    out = encode_frame(rows, spec)
    assert math.isnan(out["PLAN"][0]) and math.isnan(out["PLAN"][1]) and out["PLAN"][2] == 1.0
    assert math.isnan(out["N"][0]) and math.isnan(out["AMOUNT"][0]) and math.isnan(out["FLAG"][0])
    assert out["FLAG"].tolist()[1:] == [1.0, 0.0]


def test_any_column_order_and_extra_columns_are_ignored():
    frame = training_frame()
    spec, X = spec_of(frame)
    shuffled = frame[["FLAG", "AMOUNT", "PLAN", "N"]].assign(ID=range(5), LABEL=0)
    out = encode_frame(shuffled, spec)
    assert list(out.columns) == spec["features"] and nan_equal(out.to_numpy(), X.to_numpy())


def test_a_missing_feature_column_is_named():
    spec, _ = spec_of(training_frame())
    with pytest.raises(ValueError, match="'AMOUNT'"):
        encode_frame(training_frame().drop(columns=["AMOUNT"]), spec)


@pytest.mark.parametrize(
    "values",
    [
        pd.Series([1, 2, 3]),  # int64 as the warehouse returns it
        pd.Series([1.0, 2.0, 3.0]),  # float64 (a nullable integer column)
        pd.Series([1, 2, 3], dtype="Int32"),
        pd.Series([1, 2, 3], dtype=object),  # JSON records
        pd.Series(["1", "2", "3"], dtype=object),  # CSV read as text
    ],
)
def test_integer_columns_take_every_shape_they_arrive_in(values):
    assert encode_column(values, "integer").tolist() == [1.0, 2.0, 3.0]


def test_integer_column_with_nulls_and_a_bad_value():
    assert nan_equal(encode_column(pd.Series([1, None, 3], dtype=object), "integer"), [1.0, np.nan, 3.0])
    assert nan_equal(encode_column(pd.Series([1, None, 3], dtype="Int64"), "integer"), [1.0, np.nan, 3.0])
    with pytest.raises(ValueError, match="column 'N' is numeric"):
        encode_column(pd.Series(["1", "lots"], dtype=object), "integer", name="N")


def test_booleans_from_python_json_and_csv():
    assert nan_equal(encode_column(pd.Series([True, None, False], dtype=object), "boolean"), [1.0, np.nan, 0.0])
    assert encode_column(pd.Series(["true", "False"], dtype=object), "boolean").tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="column 'F' is boolean"):
        encode_column(pd.Series(["maybe"], dtype=object), "boolean", name="F")


def test_decode_gives_back_the_raw_rows():
    frame = training_frame()
    spec, X = spec_of(frame)
    raw = decode_frame(X, spec)
    assert raw["PLAN"].tolist() == ["pro", "basic", None, "team", "basic"]
    assert raw["N"].dtype == np.int64 and raw["N"].tolist() == [1, 2, 3, 4, 5]
    assert raw["FLAG"].tolist() == [True, False, True, False, True]
    assert nan_equal(raw["AMOUNT"], frame["AMOUNT"])
    assert nan_equal(encode_frame(raw, spec).to_numpy(), X.to_numpy())


def test_category_values_are_sorted_text():
    assert category_values(pd.Series(["b", None, "a", "b"])) == ["a", "b"]
    assert category_values(pd.Series([None, None], dtype=object)) == []
    assert nan_equal(encode_column(pd.Series(["x", None]), "category", []), [np.nan, np.nan])
