"""The sweep's one-page report (issue 27): the best trial's evaluation, charts and report on
its child run, and a page on the parent with the sweep's own sections (the study, the
optimization history, param importances, parallel coordinates, the ranking) followed by
the best trial's. Built from what MLflow and the study hold (any worker may write it);
a failure is one warning line, never a failed sweep."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple

from runner.names import TrialAttr
from runner.report import FOLDER, Report, build, files, safely
from runner.report import page as html
from runner.report.single import sections

if TYPE_CHECKING:
    import pandas as pd
    from optuna.trial import FrozenTrial

    from runner.tracking import Tracker

    from ._state import Sweep


def _curves(tracker: Tracker, run_id: str, names: List[str]) -> Dict[str, Tuple[List[int], List[float]]]:
    out = {}
    for name in names:
        points = sorted(tracker.client.get_metric_history(run_id, f"{name}_by_round"), key=lambda p: p.step)
        if points:
            out[name] = ([p.step for p in points], [p.value for p in points])
    return out


@dataclass
class TrialReport:
    """A trial's evaluation, charts and learning curves, drawn (not yet uploaded)."""

    number: int
    report: Report
    metrics: Dict[str, float]  # the trial's run's metrics, the evaluation's added
    params: Dict[str, Any]  # the run's model.params.*, without the prefix


def trial_report(tracker: Tracker, best: FrozenTrial, model: Callable[[], Tuple[Any, Any, Any]]) -> TrialReport:
    """The best trial's report from its model and its run's metrics (CPU, one read), its
    charts being drawn (runner/report/forked.py) while the sweep registers the model."""
    from runner.report import charts

    run_id = best.user_attrs.get(TrialAttr.RUN_ID)
    assert run_id
    booster, prepared, _ = model()
    run = tracker.get_run(run_id)
    metrics = dict(run.data.metrics)
    params = {k.removeprefix("model.params."): v for k, v in run.data.params.items() if k.startswith("model.params.")}
    best_iteration = int(metrics.get("best_iteration") or booster.best_iteration or booster.current_iteration())
    report = build(prepared, booster, best_iteration)
    curve_names = [k.removesuffix("_by_round") for k in metrics if k.endswith("_by_round")]
    for name, (rounds, values) in _curves(tracker, run_id, curve_names).items():
        draw = partial(charts.learning_curve, name, values, best_iteration, rounds)
        report.draw(f"learning_curve_{name}.png", draw)
    report.start()
    return TrialReport(best.number, report, {**metrics, **report.metrics}, params)


def start_report(tracker: Tracker, best: FrozenTrial, model: Callable[[], Tuple[Any, Any, Any]]) -> Any:
    """The best trial's report, its charts being drawn; None (one warning line) if it failed."""
    return safely("no sweep report", lambda: trial_report(tracker, best, model))


def report_sweep(
    sweep: Sweep,
    tracker: Tracker,
    best: FrozenTrial,
    drawn: TrialReport,
    model: Callable[[], Tuple[Any, Any, Any]],
    images: Dict[str, bytes],
    table: pd.DataFrame,
) -> None:
    """Upload the best trial's report, and the sweep's page."""
    safely("no sweep report", lambda: _report(sweep, tracker, best, drawn, model, images, table))


def _report(
    sweep: Any, tracker: Any, best: Any, drawn: TrialReport, model: Any, images: Dict[str, bytes], table: Any
) -> None:
    run_id = best.user_attrs.get(TrialAttr.RUN_ID)
    assert run_id and sweep.parent_run_id
    report, metrics = drawn.report, drawn.metrics
    _, prepared, features = model()
    tracker.log(run_id, metrics=report.metrics)
    facts = [("feature cache key", features.key), ("rows", sum(prepared.sizes.values()))]
    model_sections = sections(prepared, drawn.params, metrics, report, facts, features.sql)
    title = f"trial {best.number} of study {sweep.study.study_name!r} (run {run_id})"
    tracker.log_files(run_id, files(report, html.page(title, "the sweep's best trial", model_sections)), FOLDER)
    study = sweep.study
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    facts_sweep = [
        ("study", study.study_name),
        ("trials", ", ".join(f"{states.count(s)} {s.lower()}" for s in sorted(set(states)))),
        ("optimized", f"{sweep.metrics[0]} ({sweep.directions[0]})"),
        ("best trial", f"{best.number}: {best.values[0]:.6g} (run {run_id})"),
    ]
    sweep_sections = [
        ("Sweep", html.facts(facts_sweep)),
        ("Search", html.charts(images)),
        ("Ranking", html.table(list(table.columns), table.itertuples(index=False)) if len(table) else ""),
    ]
    parent_page = html.page(
        f"sweep {study.study_name!r} (run {sweep.parent_run_id})",
        f"runner: the sweep and its best trial {best.number}",
        sweep_sections + [(f"Best trial {best.number}: {h}", body) for h, body in model_sections],
    )
    tracker.log_files(sweep.parent_run_id, [("report.html", parent_page.encode())], FOLDER)
