"""The model's charts as PNG bytes (matplotlib's Figure drawn by Agg: no display, no network).

Each function draws one figure from numbers already computed (runner/report/evaluation.py,
contrib.py, the training's learning curve) and returns it encoded; nothing here reads data.
"""

from __future__ import annotations

import io
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


def _figure(width: float = 5.0, height: float = 4.0, ncols: int = 1) -> Tuple[Any, Any]:
    """A Figure of its own, not pyplot's: no global backend switched in a user's notebook,
    and safe to draw from a background thread."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(1, ncols, sharey=ncols > 1)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def learning_curve(name: str, values: Sequence[float], best: int, rounds: Optional[Sequence[int]] = None) -> bytes:
    """values after each boosting round (rounds: their round numbers when thinned)."""
    steps = list(rounds) if rounds is not None else list(range(1, len(values) + 1))
    fig, ax = _figure(6, 3.5)
    ax.plot(steps, values, color="tab:blue")
    if best in steps:
        value = values[steps.index(best)]
        ax.axvline(best, color="tab:red", linestyle="--", label=f"best iteration {best}: {value:.5g}")
        ax.legend()
    ax.set_xlabel("boosting round")
    ax.set_ylabel(name)
    ax.set_title(f"learning curve ({name})")
    return _png(fig)


def importance(features: List[str], gain: np.ndarray, split: np.ndarray, top: int = 20) -> bytes:
    order = np.argsort(gain)[::-1][:top][::-1]
    fig, axes = _figure(10, max(3.0, 0.3 * len(order) + 1), ncols=2)
    names = [features[i] for i in order]
    axes[0].barh(names, gain[order], color="tab:blue")
    axes[0].set_title("gain")
    axes[1].barh(names, split[order], color="tab:gray")
    axes[1].set_title("split (times used)")
    fig.suptitle(f"feature importance (top {len(order)})")
    return _png(fig)


def roc(fpr: np.ndarray, tpr: np.ndarray, auc: float) -> bytes:
    fig, ax = _figure()
    ax.plot(fpr, tpr, label=f"ROC AUC {auc:.4f}")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC curve")
    ax.legend(loc="lower right")
    return _png(fig)


def precision_recall(recall: np.ndarray, precision: np.ndarray, auc: float, base_rate: float) -> bytes:
    fig, ax = _figure()
    ax.plot(recall, precision, label=f"PR AUC {auc:.4f}")
    ax.axhline(base_rate, color="gray", linestyle=":", label=f"positive rate {base_rate:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("precision-recall curve")
    ax.legend(loc="upper right")
    return _png(fig)


def lift(y: np.ndarray, proba: np.ndarray) -> bytes:
    """Cumulative gains: the share of positives found in the top share of rows by score."""
    order = np.argsort(-proba, kind="stable")
    found = np.cumsum(y[order]) / max(1, int(np.sum(y)))
    share = np.arange(1, len(y) + 1) / len(y)
    fig, ax = _figure()
    ax.plot(share, found, label="model")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="random")
    ax.set_xlabel("share of rows, highest scores first")
    ax.set_ylabel("share of positives found")
    ax.set_title("cumulative gains (lift)")
    ax.legend(loc="lower right")
    return _png(fig)


def calibration(mean_predicted: np.ndarray, fraction_positive: np.ndarray) -> bytes:
    fig, ax = _figure()
    ax.plot(mean_predicted, fraction_positive, marker="o", label="model (deciles of the prediction)")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfectly calibrated")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction of positives")
    ax.set_title("calibration")
    ax.legend(loc="upper left")
    return _png(fig)


def confusion(matrix: np.ndarray, labels: Sequence[str], title: str) -> bytes:
    n = len(labels)
    fig, ax = _figure(max(4.0, 0.6 * n + 2), max(3.5, 0.6 * n + 1.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels=list(labels), rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels=list(labels))
    top = matrix.max() if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{matrix[i, j]:,}",
                ha="center",
                va="center",
                color="white" if matrix[i, j] > top / 2 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    return _png(fig)


def predicted_vs_actual(y: np.ndarray, pred: np.ndarray) -> bytes:
    fig, ax = _figure()
    ax.scatter(y, pred, s=4, alpha=0.4)
    low, high = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([low, high], [low, high], color="gray", linestyle=":")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title("predicted against actual")
    return _png(fig)


def residuals(y: np.ndarray, pred: np.ndarray) -> bytes:
    fig, ax = _figure()
    ax.scatter(pred, y - pred, s=4, alpha=0.4)
    ax.axhline(0, color="gray", linestyle=":")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual - predicted")
    ax.set_title("residuals")
    return _png(fig)


DOTS = 1000  # rows drawn per feature in the contributions chart


def contributions(
    features: List[str], values: np.ndarray, data: Optional[np.ndarray], title: str, top: int = 15, drawn: int = DOTS
) -> bytes:
    """A summary of per-row contributions (rows x features): for the features with the
    largest mean |contribution|, each row's contribution (of the first `drawn` rows of the
    sample) as a dot, colored by the feature's value rank (lowest where missing)."""
    mean_abs = np.abs(values).mean(axis=0)
    order = np.argsort(mean_abs)[::-1][:top][::-1]
    fig, ax = _figure(7, max(3.0, 0.35 * len(order) + 1.2))
    rng = np.random.default_rng(0)
    rows = values[:drawn] if len(values) > drawn else values  # the table has them all
    xs = rows[:, order].T.ravel()  # one scatter (one artist) for every feature's dots
    ys = (np.arange(len(order))[:, None] + rng.uniform(-0.3, 0.3, size=(len(order), len(rows)))).ravel()
    color: Any = {"color": "tab:blue"}
    if data is not None:
        raw = data[: len(rows)][:, order].astype(float)
        filled = np.where(np.isfinite(raw), raw, np.nanmin(raw, axis=0, initial=np.inf, where=np.isfinite(raw)))
        filled = np.nan_to_num(filled, nan=0.0, posinf=0.0)
        ranks = np.argsort(np.argsort(filled, axis=0), axis=0) / max(1, len(rows) - 1)
        color = {"c": ranks.T.ravel(), "cmap": "coolwarm"}
    ax.scatter(xs, ys, s=3, alpha=0.6, **color)
    ax.axvline(0, color="gray", linewidth=0.8)
    ax.set_yticks(range(len(order)), labels=[f"{features[i]} ({mean_abs[i]:.3g})" for i in order])
    ax.set_xlabel("contribution to the raw score (color: the feature's value, low blue, high red)")
    ax.set_title(title)
    return _png(fig)


def histogram(edges: np.ndarray, counts: np.ndarray, title: str, quantiles: Dict[str, float], rows: int) -> bytes:
    """Counts per bin (every row), the median and p5/p95 (of the sample) as lines."""
    fig, ax = _figure(6, 3.5)
    ax.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.8)
    for name, style in (("p5", ":"), ("p50", "--"), ("p95", ":")):
        if name in quantiles and np.isfinite(quantiles[name]):
            ax.axvline(
                quantiles[name], color="tab:red", linestyle=style, linewidth=1, label=f"{name} {quantiles[name]:.4g}"
            )
    if quantiles:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel(title)
    ax.set_ylabel("rows")
    ax.set_title(f"predictions of {rows:,} rows")
    return _png(fig)
