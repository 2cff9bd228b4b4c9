"""runner/score/summary.py: the bounded summary of a scoring's predictions, fed a chunk at a time
with a real model's predictions on scikit-learn's bundled sets (breast_cancer binary, wine
multiclass, diabetes regression), against numpy and scikit-learn computed here on every row;
and runner/report/scoring.py's report of it (the metrics of runner/report/evaluation.py with
the split `scored`, every chart a PNG, the page)."""

from __future__ import annotations

from decimal import Decimal

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest
from sklearn import datasets
from sklearn import metrics as m

from runner.report.scoring import build_scoring, scoring_page
from runner.score.summary import QUANTILES, PredictionSummary, label_targets

pytestmark = pytest.mark.unit
PNG = b"\x89PNG\r\n\x1a\n"


def predictions(loader, objective: str, **params):
    """A LightGBM model's predictions on every row of a bundled set, and its labels."""
    X, y = loader(return_X_y=True)
    booster = lgb.train({"objective": objective, "verbose": -1, "seed": 0, **params}, lgb.Dataset(X, y), 20)
    return np.asarray(booster.predict(X)), y


@pytest.fixture(scope="module")
def cancer():
    return predictions(datasets.load_breast_cancer, "binary")


def chunks(n: int, size: int, seed: int = 0):
    """Row positions in a shuffled order, cut into chunks (the order result chunks arrive in)."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[i : i + size] for i in range(0, n, size)]


def test_every_row_is_counted_and_quantiles_are_exact_within_the_sample(cancer):
    proba, _ = cancer
    keys = np.arange(len(proba)) + 1000
    summary = PredictionSummary("binary")
    for part in chunks(len(proba), 97):
        summary.add(keys[part], proba[part])
    assert summary.rows == summary.finite == len(proba) == len(summary.sample) and not summary.sampled
    expected, edges = np.histogram(proba, bins=50, range=(0.0, 1.0))
    np.testing.assert_array_equal(summary.histogram.counts, expected)
    np.testing.assert_allclose(summary.histogram.edges, edges)
    got = summary.metrics()
    for q in QUANTILES:
        assert got[f"scored_prediction_p{q}"] == pytest.approx(np.quantile(proba, q / 100), rel=1e-12)
    assert got["scored_prediction_mean"] == pytest.approx(proba.mean())
    assert got["scored_sample_rows"] == len(proba)
    table = summary.histogram_table()
    assert table["rows"].sum() == len(proba) and list(table.columns) == ["bin_low", "bin_high", "rows"]


def test_the_sample_is_bounded_and_the_same_rows_whatever_the_order(cancer):
    proba, _ = cancer
    keys = np.array([f"patient-{i}" for i in range(len(proba))], dtype=object)
    picked = []
    for seed, size in ((0, 50), (1, 333), (2, len(proba))):
        summary = PredictionSummary("binary", sample_rows=200)
        for part in chunks(len(proba), size, seed):
            summary.add(keys[part], proba[part])
        assert len(summary.sample) == 200 and summary.sampled and summary.rows == len(proba)
        assert summary.histogram.counts.sum() == len(proba)  # the histogram: every row
        picked.append(set(summary.sample.keys))
        # Each sampled key keeps its own prediction; quantiles are the sample's, p0/p100 exact.
        at = np.array([int(k.split("-")[1]) for k in summary.sample.keys])
        np.testing.assert_array_equal(summary.sample.values, proba[at])
        q = summary.quantiles()
        assert q["p50"] == pytest.approx(np.quantile(proba[at], 0.5))
        assert (q["p0"], q["p100"]) == (proba.min(), proba.max())
    assert picked[0] == picked[1] == picked[2]
    # Spread over the rows (a hash of the key, not the first rows that came).
    ids = np.array(sorted(int(k.split("-")[1]) for k in picked[0]))
    assert 0.3 < np.mean(ids < len(proba) / 2) < 0.7


def test_unbounded_bins_widen_to_every_value_either_way():
    pred, _ = predictions(datasets.load_diabetes, "regression")
    for order in (np.argsort(pred), np.argsort(-pred)):  # values arrive rising, then falling
        summary = PredictionSummary("regression")
        for i in range(0, len(pred), 40):
            summary.add(order[i : i + 40], pred[order[i : i + 40]])
        hist = summary.histogram
        assert hist.counts.sum() == len(pred) and len(hist.counts) == 50
        assert hist.low <= pred.min() and pred.max() < hist.high
        # Every value is counted in the bin its final edges give it.
        at = np.clip(np.floor((pred - hist.low) / hist.width), 0, 49).astype(int)
        np.testing.assert_array_equal(hist.counts, np.bincount(at, minlength=50))
        assert summary.metrics()["scored_prediction_p50"] == pytest.approx(np.median(pred))


def test_labels_found_by_key_give_the_evaluation_of_runner_report(cancer):
    proba, y = cancer
    keys = np.arange(len(proba), dtype=np.int64)
    summary = PredictionSummary("binary")
    for part in chunks(len(proba), 128):
        summary.add(keys[part], proba[part])
    # A key-and-label query: its own order and key type, labels as the connector gives them
    # (Arrow ints, a null, NUMBER as Decimal); rows of other entities are passed over.
    order = np.random.default_rng(5).permutation(len(proba))
    labels = [int(v) for v in y[order]]
    labels[0] = None
    found = summary.add_labels(order[:300].astype(np.int32), pa.array(labels[:300]))
    decimals = np.array([Decimal(v) for v in labels[300:]] + [Decimal(1)], dtype=object)
    found += summary.add_labels(np.append(order[300:], 10**9), decimals)
    assert found == len(proba) and summary.labelled_rows == len(proba) - 1

    report, about = build_scoring(summary, [0, 1], threshold=0.3)
    known = np.ones(len(proba), dtype=bool)
    known[order[0]] = False
    got = report.metrics
    assert got["scored_example_count"] == len(proba) - 1
    assert got["scored_roc_auc"] == pytest.approx(m.roc_auc_score(y[known], proba[known]))
    assert got["scored_f1_score"] == pytest.approx(m.f1_score(y[known], proba[known] >= 0.5))
    assert got["scored_f1_score_at_best_threshold"] == pytest.approx(m.f1_score(y[known], proba[known] >= 0.3))
    assert got["scored_best_f1_threshold"] == 0.3 and got["scored_prediction_p100"] == proba.max()
    names = {
        "prediction_histogram.png",
        "roc_curve.png",
        "precision_recall_curve.png",
        "calibration_curve.png",
        "lift_curve.png",
        "confusion_matrix_0.5.png",
        "confusion_matrix_best_f1.png",
    }
    assert set(report.images) == names and all(png.startswith(PNG) for png in report.images.values())
    assert not report.skipped and "training run's test_best_f1_threshold" in report.notes[-1]
    assert about == f"Every one of the {len(proba):,} rows."
    html = scoring_page("scoring run x", report, summary, [("model", "runs:/x/model")], about)
    assert html.count("data:image/png;base64,") == len(names) and "roc_auc" in html and "<script" not in html


def test_text_classes_and_labels_the_model_does_not_know():
    labels = np.array(["malignant", "benign", None, "unknown", "benign", float("nan")], dtype=object)
    np.testing.assert_array_equal(
        label_targets("binary", labels, ["benign", "malignant"]), [1, 0, np.nan, np.nan, 0, np.nan]
    )
    numbers = np.array([Decimal(1), 0.0, True, "1", 2], dtype=object)
    np.testing.assert_array_equal(label_targets("binary", numbers, [0, 1]), [1, 0, np.nan, 1, np.nan])
    np.testing.assert_array_equal(label_targets("regression", numbers[:2], []), [1.0, 0.0])

    proba = np.array([0.9, 0.2, 0.5, 0.7, 0.1, 0.4])
    summary = PredictionSummary("binary")
    summary.add(np.arange(6), proba, labels)
    report, _ = build_scoring(summary, ["benign", "malignant"])
    assert report.metrics["scored_example_count"] == 3
    assert any("1 sampled rows have a label that is none of the model's classes" in n for n in report.notes)
    assert "0.5 again (the training run recorded no test_best_f1_threshold)" in report.notes[-1]


def test_multiclass_top_class_probability_classes_and_evaluation():
    X, y = datasets.load_wine(return_X_y=True)
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(X, y), 20)
    proba = booster.predict(X)
    classes = ["class_0", "class_1", "class_2"]
    text = np.array([classes[i] for i in y], dtype=object)  # the label as the warehouse has it
    summary = PredictionSummary("multiclass", classes)
    for part in chunks(len(y), 50):
        summary.add(np.arange(len(y))[part], proba[part], text[part])  # labels in the same pass
    top = proba.max(axis=1)
    got = summary.metrics()
    assert got["scored_top_proba_p50"] == pytest.approx(np.median(top))
    assert got["scored_top_proba_mean"] == pytest.approx(top.mean())
    table = summary.class_table()
    np.testing.assert_array_equal(table["rows"], np.bincount(proba.argmax(axis=1), minlength=3))

    report, _ = build_scoring(summary)
    pred = proba.argmax(axis=1)
    assert report.metrics["scored_accuracy_score"] == pytest.approx(m.accuracy_score(y, pred))
    assert report.metrics["scored_f1_score"] == pytest.approx(m.f1_score(y, pred, average="weighted"))
    assert set(report.images) == {"prediction_histogram.png", "confusion_matrix.png"}
    assert set(report.tables) == {"prediction_histogram.csv", "predicted_classes.csv", "per_class_scored.csv"}
    assert report.tables["per_class_scored.csv"].splitlines()[1].startswith("class_0,")
    with pytest.raises(ValueError, match="rows x 3 classes"):
        summary.add(np.arange(3), np.zeros(3))


def test_regression_evaluation_and_a_value_without_objective():
    pred, y = predictions(datasets.load_diabetes, "regression")
    keys = np.arange(len(y))
    summary = PredictionSummary("regression")
    summary.add(keys, pred, y.astype(object))
    report, _ = build_scoring(summary)
    assert report.metrics["scored_mean_absolute_error"] == pytest.approx(m.mean_absolute_error(y, pred))
    assert report.metrics["scored_r2_score"] == pytest.approx(m.r2_score(y, pred))
    assert set(report.images) == {"prediction_histogram.png", "predicted_vs_actual.png", "residuals.png"}

    unknown = PredictionSummary("value")  # a pyfunc model of unknown objective: no evaluation
    unknown.add(keys, pred, y.astype(object))
    report, _ = build_scoring(unknown)
    assert set(report.images) == {"prediction_histogram.png"} and "scored_example_count" not in report.metrics
