"""What a scoring run shows (`python -m runner.score`): the distribution of its predictions and,
where the scored rows have their label, the evaluation a single run's report makes of its test
split (evaluation.py, charts.py, build.py), named with the split `scored`; as the files of the
scoring run's `evaluation/` artifacts and a one-page report.

Built from a bounded summary of the predictions (runner/score/summary.py): the histogram of
every row, the quantiles and the evaluation of its sample. A chart that fails is a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

from . import page
from .build import Report, draw_evaluation
from .charts import histogram
from .evaluation import evaluate

if TYPE_CHECKING:
    from ..score.summary import PredictionSummary

SPLIT = "scored"
THRESHOLD_METRIC = "test_best_f1_threshold"  # the training run's (evaluation.py: test_ + best_f1_threshold)
HISTOGRAM = "prediction_histogram"


@dataclass
class Classes:
    """What draw_evaluation reads of a split's preparation: the class names."""

    classes: Optional[List[Any]]


def build_scoring(
    summary: PredictionSummary, classes: Optional[Sequence[Any]] = None, threshold: Optional[float] = None
) -> Tuple[Report, str]:
    """The report of a scoring: its metrics (scored_<name>_p<q>, and where labels are known
    scored_<evaluator name>), charts and tables; and a sentence on the sample, for the page.
    classes: binary [negative, positive] (the model's encoding); multiclass defaults to the
    summary's. threshold: the training run's best-F1 threshold (binary; None: 0.5)."""
    report = Report()
    report.metrics.update(summary.metrics(SPLIT))
    quantiles = summary.quantiles()
    if summary.histogram.width:
        edges, counts = summary.histogram.edges, summary.histogram.counts
        draw = partial(histogram, edges, counts, summary.title, quantiles, summary.finite)
        report.draw(f"{HISTOGRAM}.png", draw)
        report.tables[f"{HISTOGRAM}.csv"] = summary.histogram_table().to_csv(index=False)
    if summary.kind == "multiclass":
        report.tables["predicted_classes.csv"] = summary.class_table().to_csv(index=False)
    n = len(summary.sample)
    about = (
        f"Quantiles and evaluation on a uniform sample of {n:,} of the {summary.rows:,} rows (seeded by the "
        "entity key); the histogram, mean, p0 and p100 of every row."
        if summary.sampled
        else f"Every one of the {summary.rows:,} rows."
    )
    if summary.kind == "value":
        return report, about
    names = list(classes) if classes is not None else list(summary.classes)
    y, pred, unknown = summary.labelled(names)
    if unknown:
        report.notes.append(f"{unknown:,} sampled rows have a label that is none of the model's classes: left out.")
    if not len(y):
        return report, about
    result = evaluate(summary.kind, SPLIT, y, pred, classes=names, threshold=0.5 if threshold is None else threshold)
    report.metrics.update(result.metrics)
    notes = len(report.notes)
    draw_evaluation(report, result, Classes(names or None), y, SPLIT)
    del report.notes[notes:]  # its words are the test split's; the scored rows' follow
    for name, frame in result.tables.items():
        report.tables[f"{name}_{SPLIT}.csv"] = frame.to_csv(index=False)
    if summary.kind == "binary":
        m = result.metrics
        report.notes.append(
            "Thresholds: 0.5 (runner's accuracy) and "
            + (
                f"{threshold:.4f} (the training run's {THRESHOLD_METRIC}, the largest F1 on its validation split): "
                f"F1 {m[f'{SPLIT}_f1_score_at_best_threshold']:.4f} against {m[f'{SPLIT}_f1_score']:.4f} at 0.5."
                if threshold is not None
                else f"0.5 again (the training run recorded no {THRESHOLD_METRIC})."
            )
        )
    return report, about


def scoring_page(
    title: str, report: Report, summary: PredictionSummary, facts: Sequence[Tuple[str, Any]], about: str
) -> str:
    """The scoring's one page: its facts, the distribution, the evaluation if any."""
    mine = f"{SPLIT}_{summary.name}_"
    quantile_rows = [[k[len(mine) :], v] for k, v in report.metrics.items() if k.startswith(mine)]
    evaluation = [
        [k[len(SPLIT) + 1 :], v] for k, v in report.metrics.items() if not k.startswith((mine, f"{SPLIT}_sample_rows"))
    ]
    distribution = {k: v for k, v in report.images.items() if k.startswith(HISTOGRAM)}
    others = {k: v for k, v in report.images.items() if k not in distribution}
    classes = report.tables.get("predicted_classes.csv", "")
    sections = [
        ("Scoring", page.facts(facts) + f'<p class="muted">{page.esc(about)}</p>'),
        (
            f"Predictions: {summary.title}",
            page.table(["quantile", "value"], quantile_rows) + page.charts(distribution) + _csv_table(classes),
        ),
        (
            "Evaluation on the scored rows with a label",
            (page.table(["metric", SPLIT], evaluation) + page.charts(others) if evaluation else "")
            + "".join(f"<p>{page.esc(n)}</p>" for n in report.notes),
        ),
    ]
    subtitle = "runner.score: the predictions of a batch scoring and, where the label is known, their evaluation"
    return page.page(title, subtitle, sections)


def _csv_table(text: str) -> str:
    if not text:
        return ""
    import io

    import pandas as pd

    frame = pd.read_csv(io.StringIO(text), keep_default_na=False)
    return page.table(list(frame.columns), frame.itertuples(index=False))
