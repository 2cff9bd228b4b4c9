"""A model's evaluation on one split, with the names of MLflow's default evaluator
(`mlflow.models.evaluate`: precision_score, roc_auc, mean_absolute_error, ...) after runner's
split prefix (test_precision_score), and the curves and matrices its charts draw.

Binary: the decision threshold is 0.5 (what runner's accuracy uses) and, beside it, the one
that maximizes F1 on the validation split (`best_f1_threshold`), both stated with their
confusion matrices. Multiclass: weighted precision/recall/F1 (the default evaluator's
average) and a per-class table. Regression: the default evaluator's error metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

import numpy as np


@dataclass
class Evaluation:
    split: str
    objective: str
    metrics: Dict[str, float]  # <split>_<name>
    curves: Dict[str, Any] = field(default_factory=dict)  # what the charts draw
    tables: Dict[str, Any] = field(default_factory=dict)  # name -> pandas DataFrame


def best_f1_threshold(y: np.ndarray, proba: np.ndarray) -> float:
    """The probability threshold with the largest F1 on (y, proba); 0.5 if none is defined."""
    from sklearn.metrics import precision_recall_curve

    if len(set(y.tolist())) < 2:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y, proba)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def _binary(y: np.ndarray, proba: np.ndarray, threshold: float) -> Evaluation:
    from sklearn import metrics as m
    from sklearn.calibration import calibration_curve

    both = len(set(y.tolist())) > 1
    out: Dict[str, float] = {"example_count": float(len(y))}
    matrices = {}
    for name, t in (("", 0.5), ("_at_best_threshold", threshold)):
        pred = (proba >= t).astype(int)
        tn, fp, fn, tp = m.confusion_matrix(y, pred, labels=[0, 1]).ravel()
        matrices[t] = np.array([[tn, fp], [fn, tp]])
        out[f"accuracy_score{name}"] = m.accuracy_score(y, pred)
        out[f"precision_score{name}"] = m.precision_score(y, pred, zero_division=0)
        out[f"recall_score{name}"] = m.recall_score(y, pred, zero_division=0)
        out[f"f1_score{name}"] = m.f1_score(y, pred, zero_division=0)
        if not name:
            out.update(true_negatives=tn, false_positives=fp, false_negatives=fn, true_positives=tp)
    out["best_f1_threshold"] = threshold
    out["log_loss"] = m.log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1])
    curves: Dict[str, Any] = {"confusion": matrices, "thresholds": (0.5, threshold)}
    if both:
        fpr, tpr, _ = m.roc_curve(y, proba)
        precision, recall, _ = m.precision_recall_curve(y, proba)
        out["roc_auc"] = m.roc_auc_score(y, proba)
        out["precision_recall_auc"] = m.auc(recall, precision)
        frac, mean = calibration_curve(y, proba, n_bins=10, strategy="quantile")
        curves.update(roc=(fpr, tpr), pr=(recall, precision), calibration=(mean, frac), lift=(y, proba))
    return Evaluation("", "binary", {k: float(v) for k, v in out.items()}, curves)


def _multiclass(y: np.ndarray, proba: np.ndarray, classes: List[Any]) -> Evaluation:
    import pandas as pd
    from sklearn import metrics as m

    labels = list(range(len(classes)))
    pred = proba.argmax(axis=1)
    out = {
        "example_count": float(len(y)),
        "accuracy_score": m.accuracy_score(y, pred),
        "log_loss": m.log_loss(y, proba, labels=labels),
    }
    for name, fn in (
        ("precision_score", m.precision_score),
        ("recall_score", m.recall_score),
        ("f1_score", m.f1_score),
    ):
        out[name] = fn(y, pred, labels=labels, average="weighted", zero_division=0)
    p, r, f, n = m.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    per_class = pd.DataFrame({"class": [str(c) for c in classes], "precision": p, "recall": r, "f1": f, "rows": n})
    matrix = m.confusion_matrix(y, pred, labels=labels)
    return Evaluation(
        "", "multiclass", {k: float(v) for k, v in out.items()}, {"confusion": {None: matrix}}, {"per_class": per_class}
    )


def _regression(y: np.ndarray, pred: np.ndarray) -> Evaluation:
    from sklearn import metrics as m

    mse = m.mean_squared_error(y, pred)
    out = {
        "example_count": float(len(y)),
        "mean_absolute_error": m.mean_absolute_error(y, pred),
        "mean_squared_error": mse,
        "root_mean_squared_error": float(np.sqrt(mse)),
        "sum_on_target": float(np.sum(y)),
        "mean_on_target": float(np.mean(y)),
        "r2_score": m.r2_score(y, pred),
        "max_error": m.max_error(y, pred),
        "mean_absolute_percentage_error": m.mean_absolute_percentage_error(y, pred),
    }
    return Evaluation("", "regression", {k: float(v) for k, v in out.items()}, {"residuals": (y, pred)})


def evaluate(objective: str, split: str, y: np.ndarray, pred: np.ndarray, **context: Any) -> Evaluation:
    """The evaluation of predictions `pred` (probabilities for classifiers) against labels y.
    context: threshold (binary, from the validation split), classes (multiclass)."""
    if objective == "binary":
        result = _binary(y, pred, float(context.get("threshold", 0.5)))
    elif objective == "multiclass":
        result = _multiclass(y, pred, list(context["classes"]))
    else:
        result = _regression(y, pred)
    result.split = split
    result.metrics = {f"{split}_{k}": v for k, v in result.metrics.items()}
    return result
