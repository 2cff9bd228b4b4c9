"""runner/model/labels.py and runner/score/output.py: binary labels of two values other than
0/1 and the positive-class rule (model.positive_class), multiclass classes, and the names
the classes get in a scoring table. On scikit-learn's bundled data sets (no download): breast
cancer ('malignant'/'benign', 569 rows), wine ('class_0'..'class_2'), iris (three species)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sklearn.datasets
from omegaconf import OmegaConf

from runner.config import DataConfig
from runner.errors import ConfigError, DataError
from runner.model import encode_label, prepare
from runner.score.output import probability_columns

pytestmark = pytest.mark.unit

DEFAULT_LINE = (
    "runner: binary label {name}: positive class {value!r} (the one that sorts last; model.positive_class sets it)"
)


def names_of(dataset: str) -> pd.Series:
    """The data set's label as its class names (`.target_names`), one row per sample."""
    bunch = getattr(sklearn.datasets, f"load_{dataset}")()
    return pd.Series(np.asarray(bunch.target_names)[bunch.target], name="DIAGNOSIS")


def target_of(dataset: str) -> np.ndarray:
    return getattr(sklearn.datasets, f"load_{dataset}")().target


def printed(capsys) -> list:
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("runner:")]


def test_two_strings_are_a_binary_label_whose_positive_class_sorts_last(capsys):
    label = names_of("breast_cancer")  # sklearn's target: 0 malignant, 1 benign
    y, classes = encode_label(label, "binary", "DIAGNOSIS")
    assert classes == ["benign", "malignant"]
    assert y.dtype == np.float64 and y.tolist() == (label == "malignant").astype(float).tolist()
    assert y.tolist() == (target_of("breast_cancer") == 0).astype(float).tolist() and 0 < y.sum() < len(y)
    assert printed(capsys) == [DEFAULT_LINE.format(name="DIAGNOSIS", value="malignant")]


def test_model_positive_class_picks_the_other_value(capsys):
    label = names_of("breast_cancer")
    y, classes = encode_label(label, "binary", "DIAGNOSIS", positive_class="benign")
    assert classes == ["malignant", "benign"]
    assert y.tolist() == target_of("breast_cancer").astype(float).tolist()  # benign is sklearn's 1
    assert printed(capsys) == ["runner: binary label DIAGNOSIS: positive class 'benign' (model.positive_class)"]
    # The same text ignoring case names it too.
    y2, _ = encode_label(label, "binary", "DIAGNOSIS", positive_class="BENIGN")
    assert np.array_equal(y, y2)


def test_a_positive_class_that_is_not_a_value_of_the_label_is_refused(capsys):
    with pytest.raises(ConfigError) as err:
        encode_label(names_of("breast_cancer"), "binary", "DIAGNOSIS", positive_class="maligant")
    assert str(err.value) == (
        "model.positive_class='maligant' is not one of the values of data.label='DIAGNOSIS' ('benign', 'malignant'): "
        "set it to one of them, or leave it unset (null: the one that sorts last)"
    )
    assert printed(capsys) == []


def test_a_positive_class_with_another_objective_is_refused():
    label = pd.Series(names_of("wine"))
    with pytest.raises(ConfigError, match=r"^model.positive_class='class_1' is set, but model.params.objective=multic"):
        encode_label(label, "multiclass", "CULTIVAR", positive_class="class_1")


def test_a_0_1_label_is_used_as_it_is(capsys):
    target = pd.Series(target_of("breast_cancer"))
    y, classes = encode_label(target, "binary", "TARGET")
    assert y.tolist() == target.astype(float).tolist() and classes == [0, 1]
    booleans, _ = encode_label(target == 1, "binary", "TARGET")
    assert booleans.tolist() == y.tolist()
    assert printed(capsys) == []  # nothing to say: 1 is the positive class, as always
    flipped, classes = encode_label(target, "binary", "TARGET", positive_class="0")
    assert flipped.tolist() == (1 - target).astype(float).tolist() and classes == [1, 0]
    assert printed(capsys) == ["runner: binary label TARGET: positive class 0 (model.positive_class)"]


def test_two_numbers_other_than_0_1_are_a_binary_label(capsys):
    target = pd.Series(target_of("wine"))
    two = target[target > 0]  # classes 1 and 2
    y, classes = encode_label(two, "binary", "CULTIVAR")
    assert classes == [1, 2] and y.tolist() == (two == 2).astype(float).tolist()
    y1, classes1 = encode_label(two, "binary", "CULTIVAR", positive_class="1")
    assert classes1 == [2, 1] and y1.tolist() == (1 - y).tolist()
    assert printed(capsys)[0] == DEFAULT_LINE.format(name="CULTIVAR", value=2)


def test_a_binary_label_of_three_values_is_refused_pointing_at_multiclass():
    with pytest.raises(DataError) as err:
        encode_label(names_of("wine"), "binary", "CULTIVAR")
    message = str(err.value)
    assert message.startswith("data.label='CULTIVAR' has 3 distinct values ('class_0', 'class_1', 'class_2'): ")
    assert "model.params.objective=binary needs two" in message and "model.params.objective=multiclass" in message


def test_multiclass_class_names_are_sorted_and_indexed():
    label = names_of("iris")
    y, classes = encode_label(label, "multiclass", "SPECIES")
    assert classes == ["setosa", "versicolor", "virginica"]
    assert y.tolist() == target_of("iris").astype(float).tolist()  # sklearn's order is sorted too


def test_multiclass_values_with_the_same_text_are_refused():
    with pytest.raises(DataError, match=r"data.label='Y' has distinct values with the same text \('1'\)"):
        encode_label(pd.Series([1, "1", 2, 2], dtype=object), "multiclass", "Y")


def test_prepare_passes_the_setting_and_records_the_classes(capsys):
    bunch = sklearn.datasets.load_breast_cancer(as_frame=True)
    frame = bunch.frame.drop(columns="target")
    frame.columns = [c.upper().replace(" ", "_") for c in frame.columns]
    frame.insert(0, "ID", np.arange(1, len(frame) + 1))
    frame["DIAGNOSIS"] = np.asarray(bunch.target_names)[bunch.target]
    data = OmegaConf.merge(OmegaConf.structured(DataConfig), {"table": "T", "entity_key": "ID", "label": "DIAGNOSIS"})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    prepared = prepare(table, data, "binary", "benign")
    assert prepared.classes == ["malignant", "benign"]
    for name in ("train", "valid", "test"):
        _, y, keys = prepared.parts[name]
        assert y.tolist() == (frame.set_index("ID").loc[keys, "DIAGNOSIS"] == "benign").astype(float).tolist()
    assert "positive class 'benign' (model.positive_class)" in capsys.readouterr().out


def test_probability_columns_are_identifiers_derived_from_the_labels():
    assert probability_columns(["setosa", "versicolor", "virginica"]) == [
        "PROBA_SETOSA",
        "PROBA_VERSICOLOR",
        "PROBA_VIRGINICA",
    ]
    assert probability_columns([0, 1, 2]) == ["PROBA_0", "PROBA_1", "PROBA_2"]
    assert probability_columns([1.5, True, "a / b"]) == ["PROBA_1_5", "PROBA_TRUE", "PROBA_A___B"]
    # Other characters become _; a name taken gets _2, _3 in class order (deterministic).
    assert probability_columns(["a b", "a-b", "A_B", "a_b_2", "crème", "Ω"]) == [
        "PROBA_A_B",
        "PROBA_A_B_2",
        "PROBA_A_B_3",
        "PROBA_A_B_2_2",
        "PROBA_CR_ME",
        "PROBA__",
    ]
    long = probability_columns(["x" * 300, "x" * 301])
    assert long[0] != long[1] and all(len(c) <= 255 for c in long)
