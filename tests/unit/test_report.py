"""runner/report: the evaluation of a real model (scikit-learn's bundled sets: breast_cancer
binary, wine multiclass, diabetes regression) against scikit-learn computed here, LightGBM's
contributions adding up to its raw score, and every chart a PNG."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from omegaconf import OmegaConf
from sklearn import datasets
from sklearn import metrics as m

from runner.config import ModelConfig
from runner.model import prepare, train
from runner.model.metrics import maximize
from runner.report import build
from runner.report.contrib import contributions
from runner.report.evaluation import best_f1_threshold, evaluate

pytestmark = pytest.mark.unit
PNG = b"\x89PNG\r\n\x1a\n"


def fitted(loader, objective: str):
    frame = loader(as_frame=True).frame
    frame.insert(0, "ID", range(len(frame)))
    data = OmegaConf.create({"entity_key": "ID", "label": "target", "drop": [], "split": {"valid": 0.2, "test": 0.2}})
    data.split.salt = "runner-split-v1"
    prepared = prepare(pa.Table.from_pandas(frame, preserve_index=False), data, objective)
    model = OmegaConf.structured(ModelConfig)
    model.num_boost_round = 60
    return prepared, train(prepared, model)


@pytest.fixture(scope="module")
def binary():
    return fitted(datasets.load_breast_cancer, "binary")


def test_binary_metrics_are_scikit_learns_at_both_thresholds(binary):
    prepared, result = binary
    X, y, _ = prepared.parts["test"]
    proba = result.booster.predict(X, num_iteration=result.best_iteration)
    Xv, yv, _ = prepared.parts["valid"]
    t = best_f1_threshold(yv, result.booster.predict(Xv, num_iteration=result.best_iteration))
    assert 0 < t < 1
    got = evaluate("binary", "test", y, proba, threshold=t).metrics
    assert got["test_roc_auc"] == pytest.approx(m.roc_auc_score(y, proba))
    assert got["test_roc_auc"] == pytest.approx(result.metrics["test_auc"])
    assert got["test_f1_score"] == pytest.approx(m.f1_score(y, proba >= 0.5))
    assert got["test_f1_score_at_best_threshold"] == pytest.approx(m.f1_score(y, proba >= t))
    assert got["test_best_f1_threshold"] == t and got["test_example_count"] == len(y)
    cells = [got[f"test_{k}"] for k in ("true_negatives", "false_positives", "false_negatives", "true_positives")]
    assert cells == m.confusion_matrix(y, proba >= 0.5).ravel().tolist()
    assert got["test_accuracy_score"] == pytest.approx(result.metrics["test_accuracy"])


def test_every_metric_has_a_direction_or_is_refused():
    for name in ("test_precision_score", "test_recall_score", "test_f1_score", "test_roc_auc", "test_r2_score"):
        assert maximize(name), name
    for name in ("test_log_loss", "test_mean_absolute_error", "test_max_error", "test_false_positives"):
        assert not maximize(name), name
    assert maximize("valid_f1_score_at_best_threshold") and maximize("valid_auc")


def test_contributions_add_up_to_the_raw_score(binary):
    prepared, result = binary
    X, _, _ = prepared.parts["test"]
    c = contributions(result.booster, X, result.best_iteration, sample=50)
    raw = result.booster.predict(X, num_iteration=result.best_iteration, raw_score=True)
    full = result.booster.predict(X, num_iteration=result.best_iteration, pred_contrib=True)
    rows = np.sort(np.random.default_rng(0).choice(len(X), size=50, replace=False))
    assert np.allclose(c.values[""], full[rows, :-1])
    assert np.allclose(full[rows].sum(axis=1), raw[rows])
    table = c.table()
    assert list(table.columns) == ["feature", "mean_abs_contribution"] and len(table) == len(prepared.features)
    assert table["mean_abs_contribution"].is_monotonic_decreasing


def test_a_binary_report_has_its_charts_as_pngs(binary):
    prepared, result = binary
    report = build(prepared, result.booster, result.best_iteration, result.curves)
    expected = {
        "learning_curve_valid_auc.png",
        "feature_importance.png",
        "roc_curve.png",
        "precision_recall_curve.png",
        "calibration_curve.png",
        "lift_curve.png",
        "confusion_matrix_0.5.png",
        "confusion_matrix_best_f1.png",
        "feature_contributions.png",
    }
    assert set(report.images) == expected and not report.skipped
    assert all(png.startswith(PNG) for png in report.images.values())


def test_multiclass_and_regression_reports():
    prepared, result = fitted(datasets.load_wine, "multiclass")
    report = build(prepared, result.booster, result.best_iteration)
    assert {"confusion_matrix.png", "feature_contributions_class_0.png"} <= set(report.images), set(report.images)
    per_class = pd.read_csv(pd.io.common.StringIO(report.tables["per_class_test.csv"]))
    assert per_class["rows"].sum() == len(prepared.parts["test"].y)
    assert report.metrics["test_log_loss"] == pytest.approx(result.metrics["test_multi_logloss"])
    prepared, result = fitted(datasets.load_diabetes, "regression")
    report = build(prepared, result.booster, result.best_iteration)
    assert {"predicted_vs_actual.png", "residuals.png"} <= set(report.images)
    assert report.metrics["test_root_mean_squared_error"] == pytest.approx(result.metrics["test_rmse"])


def test_a_chart_that_fails_is_left_out_with_a_warning(binary):
    prepared, result = binary
    said: list = []
    handler = logging.Handler()
    handler.emit = said.append  # type: ignore[method-assign]
    logging.getLogger("runner.report").addHandler(handler)
    try:
        report = build(prepared, result.booster, result.best_iteration, {"valid_auc": None})  # type: ignore[dict-item]
        skipped, images = report.skipped, report.images  # drawn (and said) once asked for
    finally:
        logging.getLogger("runner.report").removeHandler(handler)
    assert "learning_curve_valid_auc.png" in skipped and "roc_curve.png" in images
    assert any("chart learning_curve_valid_auc.png not drawn" in r.getMessage() for r in said)
