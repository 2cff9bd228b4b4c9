"""What a run shows of its model: the evaluation metrics of the test split, the charts, the
contribution table and the one-page report, as files for the run's `evaluation/` artifacts.

Built for a single run and for a sweep's best trial (not for every trial: trials stay
cheap). Every chart is drawn on its own: one that fails is a warning line and is left out,
never a failed run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import charts
from .contrib import contributions
from .evaluation import best_f1_threshold, evaluate
from .forked import Drawing, Job

log = logging.getLogger("runner.report")

FOLDER = "evaluation"


@dataclass
class Report:
    metrics: Dict[str, float] = field(default_factory=dict)  # test_<default evaluator's name>
    tables: Dict[str, str] = field(default_factory=dict)  # file name -> CSV text
    notes: List[str] = field(default_factory=list)  # what the charts say in words (the report)
    jobs: List[Job] = field(default_factory=list)  # charts to draw: (file name, () -> PNG)
    drawing: Optional[Drawing] = None

    def draw(self, name: str, fn: Callable[[], bytes]) -> None:
        """Add a chart; `start()` begins drawing them (in forked processes: forked.py)."""
        self.jobs.append((name, fn))

    def start(self) -> None:
        if self.drawing is None:
            self.drawing = Drawing(self.jobs)

    @property
    def images(self) -> Dict[str, bytes]:
        """file name -> PNG of every chart drawn (waits for them; a failed one is a warning)."""
        self.start()
        assert self.drawing is not None
        return self.drawing.wait()

    @property
    def skipped(self) -> List[str]:
        drawn = self.images
        return [name for name, _ in self.jobs if name not in drawn]


def _labels(prepared: Any) -> List[str]:
    return [str(c) for c in (prepared.classes or [0, 1])]


def build(
    prepared: Any,
    booster: Any,
    best: int,
    curves: Optional[Dict[str, List[float]]] = None,
    sample: int = 2000,
    split: str = "test",
) -> Report:
    """The report of `booster` (at iteration `best`) on the prepared split `split`: every
    number computed here, its charts drawn once `start()` is called (or their images asked for)."""
    report = Report()
    part = prepared.parts[split]
    y = part.y
    objective = prepared.objective
    pred = part.predict(booster, num_iteration=best)
    context: Dict[str, Any] = {"classes": prepared.classes}
    if objective == "binary":
        valid = prepared.parts["valid"]
        context["threshold"] = best_f1_threshold(valid.y, valid.predict(booster, num_iteration=best))
    result = evaluate(objective, split, y, pred, **context)
    report.metrics = result.metrics
    for name, curve in (curves or {}).items():
        report.draw(f"learning_curve_{name}.png", partial(charts.learning_curve, name, curve, best))
    features = list(booster.feature_name())
    gain = booster.feature_importance("gain", iteration=best)
    used = booster.feature_importance("split", iteration=best)
    report.draw("feature_importance.png", lambda: charts.importance(features, gain, used))
    draw_evaluation(report, result, prepared, y, split)
    for name, frame in result.tables.items():
        report.tables[f"{name}_{split}.csv"] = frame.to_csv(index=False)
    try:
        contrib = contributions(booster, part, best, prepared.classes if objective == "multiclass" else None, sample)
    except Exception as exc:
        log.warning("runner: warning: feature contributions not computed: %s", str(exc).splitlines()[0])
    else:
        report.tables["feature_contributions.csv"] = contrib.table().to_csv(index=False)
        for cls, values in contrib.values.items():
            suffix = f"_class_{cls}" if cls else ""
            shown = f"{charts.DOTS} of {contrib.rows}" if contrib.rows > charts.DOTS else f"{contrib.rows}"
            title = f"feature contributions on {shown} {split} rows" + (f", class {cls}" if cls else "")
            draw = partial(charts.contributions, contrib.features, values, contrib.data, title)
            report.draw(f"feature_contributions{suffix}.png", draw)
    return report


def draw_evaluation(report: Report, result: Any, prepared: Any, y: np.ndarray, split: str) -> None:
    m, c = result.metrics, result.curves
    if result.objective == "binary":
        if "roc" in c:
            (fpr, tpr), (recall, precision) = c["roc"], c["pr"]
            rate = float(np.mean(y))
            report.draw("roc_curve.png", partial(charts.roc, fpr, tpr, m[f"{split}_roc_auc"]))
            pr_auc = m[f"{split}_precision_recall_auc"]
            report.draw("precision_recall_curve.png", partial(charts.precision_recall, recall, precision, pr_auc, rate))
            report.draw("calibration_curve.png", partial(charts.calibration, *c["calibration"]))
            report.draw("lift_curve.png", partial(charts.lift, *c["lift"]))
        low, best = c["thresholds"]
        labels = _labels(prepared)
        for name, t, how in (("0.5", low, "runner's threshold"), ("best_f1", best, "best F1 on valid")):
            title = f"confusion at threshold {t:.3f} ({how})"
            report.draw(f"confusion_matrix_{name}.png", partial(charts.confusion, c["confusion"][t], labels, title))
        report.notes.append(
            f"Thresholds: 0.5 (runner's accuracy) and {best:.4f} (the largest F1 on the validation split: "
            f"{m[f'{split}_f1_score_at_best_threshold']:.4f} on {split} against {m[f'{split}_f1_score']:.4f} at 0.5)."
        )
    elif result.objective == "multiclass":
        labels = _labels(prepared)
        report.draw(
            "confusion_matrix.png", lambda: charts.confusion(c["confusion"][None], labels, "confusion (argmax)")
        )
    else:
        truth, pred = c["residuals"]
        report.draw("predicted_vs_actual.png", lambda: charts.predicted_vs_actual(truth, pred))
        report.draw("residuals.png", lambda: charts.residuals(truth, pred))


def files(report: Report, html: str) -> List[Tuple[str, bytes]]:
    """The report's artifacts as (path under FOLDER, content)."""
    out = [(name, png) for name, png in report.images.items()]
    out += [(name, text.encode()) for name, text in report.tables.items()]
    return out + [("report.html", html.encode())]
