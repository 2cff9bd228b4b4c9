"""runner/model/prepare.py: label and category encoding, and the split of a feature table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from omegaconf import OmegaConf

from runner.config import DataConfig
from runner.errors import ConfigError, DataError
from runner.model import encode_features, encode_label, prepare

pytestmark = pytest.mark.unit


def test_text_columns_become_codes_over_sorted_values_nulls_missing():
    X = pd.DataFrame(
        {
            "PLAN": ["pro", "basic", None, "team", "basic"],
            "N": [1, 2, 3, 4, 5],
            "FLAG": [True, False, True, False, True],
        }
    )
    categories = encode_features(X)
    assert categories == {"PLAN": ["basic", "pro", "team"]}
    assert X["PLAN"].tolist()[:2] == [1.0, 0.0] and math.isnan(X["PLAN"][2]) and X["PLAN"].tolist()[3:] == [2.0, 0.0]
    assert X["N"].dtype == np.float64 and X["FLAG"].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_dates_are_refused_naming_the_column():
    X = pd.DataFrame({"SEEN": pd.to_datetime(["2024-01-01", "2024-02-01"])})
    with pytest.raises(DataError, match="'SEEN' is a date/time"):
        encode_features(X)


@pytest.mark.parametrize(
    "values, objective, message",
    [
        ([1, None, 0], "binary", "null in 1 rows"),
        ([None, None], "binary", "null in every row"),
        ([1, 1, 1], "binary", "is constant"),
        ([0, 2, 1], "binary", r"has 3 distinct values \(0, 1, 2\)"),
        (["a", "b", "a", "c"], "binary", r"has 3 distinct values \('a', 'b', 'c'\)"),
        (["a", "b"], "regression", "is not numeric"),
    ],
)
def test_bad_labels_name_data_label(values, objective, message):
    with pytest.raises(DataError, match=rf"data\.label='Y'.*{message}|{message}"):
        encode_label(pd.Series(values), objective, "Y")


def test_multiclass_labels_are_class_indices():
    y, classes = encode_label(pd.Series(["b", "a", "c", "a"]), "multiclass", "Y")
    assert classes == ["a", "b", "c"] and y.tolist() == [1.0, 0.0, 2.0, 0.0]


def _cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {"table": "T", "entity_key": "ID", "label": "Y", **kw})


def test_prepare_sorts_by_entity_and_splits_every_row_once():
    n = 300
    ids = np.random.default_rng(0).permutation(n) + 1
    table = pa.table(
        {"ID": ids, "F": ids * 0.5, "C": ["x" if i % 2 else "y" for i in ids], "Y": ids % 2, "DROPPED": ids}
    )
    prepared = prepare(table, _cfg(drop=["dropped"]), "binary")
    assert prepared.features == ["F", "C"] and prepared.categorical == ["C"]
    keys = np.concatenate([prepared.parts[s].keys for s in ("train", "valid", "test")])
    assert sorted(keys.tolist()) == list(range(1, n + 1))
    for name in ("train", "valid", "test"):
        X, y, k = prepared.parts[name]
        assert list(k) == sorted(k) and (X["F"].to_numpy() == k * 0.5).all() and (y == k % 2).all()
    assert sum(prepared.sizes.values()) == n


def test_prepare_errors_name_the_setting():
    table = pa.table({"ID": [1, 2, 3], "Y": [0, 1, 0]})
    with pytest.raises(ConfigError, match="model.params.objective"):
        prepare(table, _cfg(), "ranking")
    with pytest.raises(DataError, match="no feature columns"):
        prepare(table, _cfg(), "binary")
    with pytest.raises(DataError, match="data.label='NOPE' is not a column"):
        prepare(table, _cfg(label="NOPE"), "binary")


def test_each_split_is_read_in_key_order_as_float64_batches():
    n = 1000
    rng = np.random.default_rng(1)
    table = pa.table(
        {
            "ID": pa.chunked_array([np.arange(500, 1000), np.arange(500)]),  # chunks, unsorted
            "I": rng.integers(0, 9, n),
            "F": pa.array(np.where(rng.random(n) < 0.1, np.nan, rng.random(n))).cast(pa.float32()),
            "B": rng.random(n) < 0.5,
            "Y": rng.integers(0, 2, n),
        }
    )
    prepared = prepare(table, _cfg(), "binary")
    assert prepared.kinds == {"I": "integer", "F": "float", "B": "boolean"}
    for name in ("train", "valid", "test"):
        part = prepared.parts[name]
        X, y, keys = part
        assert keys.tolist() == sorted(keys.tolist())
        batches = list(part.batches(size=64))
        assert [start for start, _ in batches] == list(range(0, len(part), 64))
        assert all(b.dtype == np.float64 and b.flags.c_contiguous for _, b in batches)  # what LightGBM pushes
        assert np.array_equal(np.concatenate([b for _, b in batches]), X.to_numpy(), equal_nan=True)
        rows = [int(np.flatnonzero(table["ID"].to_numpy() == k)[0]) for k in keys[:5]]
        assert X["I"].tolist()[:5] == [float(table["I"][r].as_py()) for r in rows]
        assert y.tolist()[:5] == [float(table["Y"][r].as_py()) for r in rows]


def test_a_number_key_splits_as_before_held_as_int64():
    """Snowflake's NUMBER(38, 0) arrives as decimal128: held as int64 (8 bytes a row, not a
    Python Decimal), split by the same text; a key beyond int64 stays a decimal."""
    from decimal import Decimal

    n = 400
    ids = np.random.default_rng(2).permutation(n) + 1
    as_int = pa.table({"ID": ids, "F": ids * 0.5, "Y": ids % 2})
    as_number = as_int.set_column(0, "ID", pa.array([Decimal(int(i)) for i in ids], pa.decimal128(38, 0)))
    by_int, by_number = prepare(as_int, _cfg(), "binary"), prepare(as_number, _cfg(), "binary")
    for name in ("train", "valid", "test"):
        assert by_number.parts[name].keys.dtype == np.int64
        assert by_number.parts[name].keys.tolist() == by_int.parts[name].keys.tolist()
        assert by_number.parts[name].frame().equals(by_int.parts[name].frame())
    huge = as_number.set_column(0, "ID", pa.array([Decimal(10**30 + int(i)) for i in ids], pa.decimal128(38, 0)))
    keys = prepare(huge, _cfg(), "binary").parts["train"].keys
    assert isinstance(keys[0], Decimal) and int(keys[0]) > 10**30


# ------------------------------------------------------------------ silent cases made errors
# On real data shipped with scikit-learn (no download): breast_cancer (569 rows), wine (178 rows,
# three classes).


def _sklearn_table(name: str, with_id: bool = True) -> pa.Table:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.upper().replace(" ", "_"))
    if with_id:
        frame.insert(0, "ID", np.arange(1, len(frame) + 1))
    return pa.Table.from_pandas(frame, preserve_index=False)


def test_a_repeated_entity_key_is_refused_with_its_counts():
    table = _sklearn_table("breast_cancer")
    distinct = len(set(table["MEAN_RADIUS"].to_pylist()))
    assert distinct < table.num_rows  # a real column with repeated values
    with pytest.raises(DataError) as err:
        prepare(table, _cfg(entity_key="MEAN_RADIUS", label="TARGET"), "binary")
    message = str(err.value)
    assert message.startswith("data.entity_key='MEAN_RADIUS' is not unique in the feature result")
    assert f"({table.num_rows} rows, {distinct} entities; e.g. " in message
    prepare(table, _cfg(label="TARGET"), "binary")  # the row id is unique: accepted


def test_the_entity_key_cannot_be_the_label():
    with pytest.raises(ConfigError, match="data.entity_key and data.label are the same column 'TARGET'"):
        prepare(_sklearn_table("wine"), _cfg(entity_key="TARGET", label="target"), "multiclass")


def test_num_class_set_to_another_count_than_the_label_has_is_refused():
    from runner.config import ModelConfig
    from runner.model import lgb_params

    prepared = prepare(_sklearn_table("wine"), _cfg(label="TARGET"), "multiclass")
    model = OmegaConf.structured(ModelConfig)
    model.params.objective = "multiclass"
    assert lgb_params(model, prepared)["num_class"] == 3  # unset (the schema's 1): counted
    model.params.num_class = 3
    assert lgb_params(model, prepared)["num_class"] == 3
    model.params.num_class = 5
    with pytest.raises(ConfigError, match=r"model.params.num_class=5, but the label has 3 classes \(0, 1, 2\)"):
        lgb_params(model, prepared)


def test_a_column_null_in_every_row_is_not_a_feature_and_is_said_once(capsys):
    """breast_cancer with an all-null text column (a field nobody filled in) and an all-null number."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.insert(0, "ID", range(len(frame)))
    frame["NOTES"] = pd.Series([None] * len(frame), dtype="object")
    frame["SCORE"] = float("nan")
    cfg = OmegaConf.create(
        {"entity_key": "ID", "label": "target", "drop": [], "split": {"valid": 0.2, "test": 0.2, "salt": "s"}}
    )
    prepared = prepare(pa.Table.from_pandas(frame, preserve_index=False), cfg, "binary")
    assert prepared.all_null == ["NOTES", "SCORE"]
    assert "NOTES" not in prepared.features and "SCORE" not in prepared.features and len(prepared.features) == 30
    X = prepared.parts["train"].frame()
    assert list(X.columns) == prepared.features
    assert X["mean radius"].notna().all()
    out = capsys.readouterr().out
    assert "not used as features: NOTES, SCORE (listed in tag runner.features.all_null)" in out
