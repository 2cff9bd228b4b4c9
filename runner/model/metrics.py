"""Validation metric and scores for each objective."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

# objective -> LightGBM's validation metric and runner's headline metric.
OBJECTIVES = {"binary": "auc", "multiclass": "multi_logloss", "regression": "rmse"}


# Metric names (after a valid_/test_ prefix) that are better when larger; the rest are losses.
# runner's own (auc, accuracy, macro_f1, r2), LightGBM's (map, ndcg) and MLflow's default
# evaluator's (accuracy_score, precision_score, recall_score, f1_score, r2_score, roc_auc,
# precision_recall_auc, true_positives, true_negatives; its errors, log_loss and
# false_positives/false_negatives are losses), also `<name>_at_best_threshold`.
MAXIMIZE_SUFFIXES = (
    "auc",
    "accuracy",
    "r2",
    "f1",
    "precision",
    "recall",
    "map",
    "ndcg",
    "_score",
    "true_positives",
    "true_negatives",
)
# Not a quality: a sweep cannot optimize them.
NEITHER = ("example_count", "sum_on_target", "mean_on_target", "best_f1_threshold", "best_iteration")


def headline(objective: str) -> str:
    return OBJECTIVES[objective]


def maximize(metric: str) -> bool:
    """Is a larger value of this metric (e.g. valid_auc) better?"""
    name = metric.split("_", 1)[1] if metric.startswith(("valid_", "test_")) else metric
    return name.removesuffix("_at_best_threshold").endswith(MAXIMIZE_SUFFIXES)


def score(prepared: Any, y: np.ndarray, pred: np.ndarray) -> Dict[str, float]:
    from sklearn import metrics as m

    if prepared.objective == "binary":
        out = {
            "auc": m.roc_auc_score(y, pred) if len(set(y)) > 1 else float("nan"),
            "logloss": m.log_loss(y, np.clip(pred, 1e-15, 1 - 1e-15), labels=[0, 1]),
            "accuracy": m.accuracy_score(y, pred >= 0.5),
        }
    elif prepared.objective == "multiclass":
        labels = list(range(len(prepared.classes)))
        out = {
            "multi_logloss": m.log_loss(y, pred, labels=labels),
            "accuracy": m.accuracy_score(y, pred.argmax(axis=1)),
            "macro_f1": m.f1_score(y, pred.argmax(axis=1), average="macro"),
        }
    else:
        out = {
            "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
            "mae": m.mean_absolute_error(y, pred),
            "r2": m.r2_score(y, pred),
        }
    return {k: float(v) for k, v in out.items()}
