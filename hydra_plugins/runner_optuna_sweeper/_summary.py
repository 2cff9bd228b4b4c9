"""The end of a sweep: the parent run's summary (best values/params, study totals, top-k
table, plots), the best trial's model registered, and the summary on stdout.

Callers hold study_lock: workers sharing a study may each reach the end, and the summary
of a given study state is written once (a later identical one is only printed).

The parent's `best_<metric>` (the first objective) is a metric history, the optimization
curve in MLflow's charts: one point per COMPLETE trial in completion order, step = how many
trials had completed (1, 2, ...), value = the best so far, timestamp = the trial's
completion time. It goes in the summary's batch; a resumed sweep sends only the points after
those the study records as sent (`runner.best_history`), and the points are a function of
the study, so a batch re-sent after a crash repeats identical rows, which MLflow's SQL
stores keep once.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from optuna.trial import TrialState

from runner.errors import first_line
from runner.names import Prefix, StudyAttr, Tag, TrialAttr
from runner.secrets import redact_url
from runner.testhooks import kill_point

from ._budget import Budget
from ._compose import Composer
from ._display import markdown, text_table
from ._report import report_sweep, start_report
from ._search_space import mlflow_key
from ._state import Sweep

if TYPE_CHECKING:
    import lightgbm as lgb
    from omegaconf import DictConfig
    from optuna.trial import FrozenTrial

    from runner.model.prepare import Prepared
    from runner.report.forked import Drawing
    from runner.tracking import Tracker

log = logging.getLogger("runner.sweep")


def ranked(sweep: Sweep) -> List[Any]:
    """COMPLETE trials best first (multi-objective: the Pareto front first, by the first metric)."""
    study, directions = sweep.study, sweep.directions
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    front = {t.number for t in study.best_trials} if len(directions) > 1 else set()

    def first(t: FrozenTrial) -> float:
        return -t.values[0] if directions[0] == "maximize" else t.values[0]

    if len(directions) > 1:
        return sorted(done, key=lambda t: (t.number not in front, first(t)))
    return sorted(done, key=first)


def best_history(sweep: Sweep) -> List[Tuple[int, float, int]]:
    """(step, best value so far, timestamp ms) per COMPLETE trial of the first objective, in
    completion order (ties by trial number); step k = the k-th completed trial."""
    done = [t for t in sweep.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    done.sort(key=lambda t: (t.datetime_complete or datetime.max, t.number))
    better = max if sweep.directions[0] == "maximize" else min
    points: List[Tuple[int, float, int]] = []
    best: Optional[float] = None
    for k, t in enumerate(done, 1):
        best = t.values[0] if best is None else better(best, t.values[0])
        when = t.datetime_complete or datetime.now()  # Optuna's times are naive local times
        points.append((k, float(best), int(when.timestamp() * 1000)))
    return points


def finish(
    sweep: Sweep,
    budget: Budget,
    tracker: Tracker,
    task_cfg: DictConfig,
    composer: Composer,
    *,
    top_k: int,
    registered_model: Optional[str],
    loop_seconds: float,
) -> Dict[str, Any]:
    """Write the summary to the parent run (once per study state), register the best model,
    print the summary; returns the sweep's result."""
    import pandas as pd

    study = sweep.study
    c = budget.counts()
    order = ranked(sweep)
    best = order[0] if order else None
    rows = []
    for rank, t in enumerate(order[:top_k], 1):
        row = {"rank": rank, "trial": t.number, "state": t.state.name}
        row.update({m: v for m, v in zip(sweep.metrics, t.values, strict=False)})
        row["run_id"] = t.user_attrs.get(TrialAttr.RUN_ID, "")
        row.update({k: t.params.get(k) for k in sweep.space.distributions})
        rows.append(row)
    table = pd.DataFrame(rows)
    pid = sweep.parent_run_id
    assert pid is not None  # set once the parent run exists (_recovery.parent_run), before any trial
    metrics: Dict[str, float] = {
        "trials_complete": c["complete"],
        "trials_pruned": c["pruned"],
        "trials_failed": c["failed"],
        "sweep_seconds": time.perf_counter() - sweep.started,
        "trial_loop_seconds": loop_seconds,
    }
    # Study totals (every worker's trials), not just this process's.
    finished = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    study_queries = sum(int(t.user_attrs.get(TrialAttr.FEATURE_QUERIES) or 0) for t in study.get_trials(deepcopy=False))
    study_queries += sum(int(v) for k, v in study.user_attrs.items() if k.startswith(StudyAttr.FEATURE_QUERIES))
    tags: Dict[str, Any] = {Tag.FEATURE_QUERIES: study_queries or budget.feature_queries}
    workers: Dict[str, int] = {}
    for t in finished:
        owner = t.user_attrs.get(TrialAttr.OWNER) or {}
        name = f"{owner.get('host', '?')}:{owner.get('pid', '?')}"
        workers[name] = workers.get(name, 0) + 1
    if len(workers) > 1:
        tags[Tag.WORKERS] = json.dumps(workers)
    if best is not None:
        for m, v in zip(sweep.metrics[1:], best.values[1:], strict=False):
            metrics[f"best_{m}"] = v
        metrics["best_value"] = best.values[0]
        tags.update(
            {
                Tag.BEST_TRIAL: best.number,
                Tag.BEST_RUN_ID: best.user_attrs.get(TrialAttr.RUN_ID, ""),
                Tag.BEST_PARAMS: json.dumps(best.params, default=str),
            }
        )
        tags.update({f"{Prefix.BEST_PARAM}{mlflow_key(k)}": v for k, v in best.params.items()})
    if len(sweep.directions) > 1:
        tags[Tag.BEST_PARETO] = ",".join(str(t.number) for t in study.best_trials)
    state_key = {
        "finished": c["finished"],
        "complete": c["complete"],
        "pruned": c["pruned"],
        "best": best.number if best else None,
    }
    if study.user_attrs.get(StudyAttr.SUMMARY) != state_key:
        history = best_history(sweep)
        sent = int(study.user_attrs.get(StudyAttr.BEST_HISTORY) or 0)  # points a summary before sent
        new = {f"best_{sweep.metrics[0]}": history[sent:]} if len(history) > sent else None
        tracker.log(pid, metrics=metrics, tags=tags, step=c["finished"], history=new)
        if new:
            study.set_user_attr(StudyAttr.BEST_HISTORY, len(history))
        kill_point("summary")  # test hook (runner/testhooks.py)
        if rows:
            tracker.log_text(pid, table.to_csv(index=False), "optuna/top_trials.csv")
            tracker.log_text(pid, markdown(table), "optuna/top_trials.md")
        # The charts are drawn in forked processes while the model is saved and registered.
        drawing = start_plots(sweep, c)
        model = functools.lru_cache(maxsize=1)(lambda: best_model(composer, best))
        reporting = task_cfg.tracker.get("report", True)
        drawn = start_report(tracker, best, model) if best is not None and reporting else None
        registered = register(sweep, tracker, task_cfg, best, registered_model, model)
        images = log_plots(sweep, tracker, drawing)
        if drawn is not None and best is not None:
            report_sweep(sweep, tracker, best, drawn, model, images, table)
        study.set_user_attr(StudyAttr.SUMMARY, state_key)
    else:
        done = study.user_attrs.get(StudyAttr.REGISTERED_MODEL) or {}
        registered = _already(done) if best is not None and done.get("trial") == best.number else None

    # the summary on stdout
    took = time.perf_counter() - sweep.started
    lines = [
        f"runner: study {study.study_name!r}: {c['finished']}/{sweep.limit} trials finished "
        f"({c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed) - this run "
        f"{budget.session_done} trials in {took:.1f}s (trial loop {loop_seconds:.1f}s), "
        f"{budget.feature_queries} feature queries",
        f"  parent run {pid} in {tracker.display_uri} (experiment {tracker.cfg.experiment!r})",
        f"  open the UI: {tracker.ui_command(run_id=pid)}",
    ]
    if budget.stop_reason:
        lines.append(f"  stopped early: {budget.stop_reason}")
    if len(workers) > 1:
        lines.append("  trials per worker: " + ", ".join(f"{k} {v}" for k, v in sorted(workers.items())))
    if rows:
        lines.append(text_table(table))
    if registered:
        lines.append(f"  best model registered: {registered}")
    lines.append(f"  storage {redact_url(sweep.storage_url)} (run the same command again to resume)")
    print("\n".join(lines), flush=True)
    return summary(sweep, best)


def summary(sweep: Sweep, best: Optional[FrozenTrial]) -> Dict[str, Any]:
    """What the sweep returns to Hydra (and runner.sweep() to its caller)."""
    return {
        "study_name": sweep.study.study_name,
        "parent_run_id": sweep.parent_run_id,
        "metric": sweep.metrics[0],
        "best_trial": best.number if best else None,
        "best_values": best.values if best else None,
        "best_params": dict(best.params) if best else {},
        "best_run_id": best.user_attrs.get(TrialAttr.RUN_ID) if best else None,
    }


def start_plots(sweep: Sweep, c: Dict[str, Any]) -> Optional[Drawing]:
    """Optimization history and (2+ complete trials) param importances and the top trials'
    parallel coordinates, being drawn (runner/report/forked.py) from a copy of the study's
    trials in memory (a forked process must not use the storage's connections)."""
    import optuna

    from runner.report.forked import Drawing

    if c["complete"] < 1:
        return None
    try:
        plt, ovm = plotting()
    except ImportError as exc:
        log.warning("plots skipped: %s", exc)
        return None
    try:  # the plots read COMPLETE trials only
        study = optuna.create_study(directions=sweep.study.directions, study_name=sweep.study.study_name)
        study.add_trials(sweep.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    except Exception as exc:
        log.warning("plots skipped: %s", first_line(exc))
        return None
    target: Dict[str, Any] = (
        {} if len(sweep.directions) == 1 else {"target": lambda t: t.values[0], "target_name": sweep.metrics[0]}
    )

    def png(plot: Callable[[], Any]) -> bytes:
        import io
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax: Any = plot()  # pyplot's figure: Optuna draws through pyplot
        fig: Any = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(9, 5.5)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        return buf.getvalue()

    jobs = [("optimization_history.png", lambda: png(lambda: ovm.plot_optimization_history(study, **target)))]
    if c["complete"] >= 2:
        jobs.append(("param_importances.png", lambda: png(lambda: ovm.plot_param_importances(study, **target))))
        jobs.append(("parallel_coordinate.png", lambda: png(lambda: ovm.plot_parallel_coordinate(study, **target))))
    return Drawing(jobs)


def log_plots(sweep: Sweep, tracker: Tracker, drawing: Optional[Drawing]) -> Dict[str, bytes]:
    """The plots as parent artifacts optuna/*.png; returns them (name -> PNG)."""
    images = drawing.wait() if drawing is not None else {}
    if images:
        assert sweep.parent_run_id is not None  # the summary is written inside the parent run
        tracker.log_files(sweep.parent_run_id, list(images.items()), "optuna")
    return images


def plotting() -> Tuple[Any, Any]:
    """pyplot (Agg, unless a notebook imported pyplot with its own backend) and Optuna's
    matplotlib plots; also what the param importances import (fANOVA: scikit-learn's forest),
    so that importing them during the last trials (_ahead.py) leaves nothing to import at the end."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    try:
        import sklearn.ensemble  # noqa: F401
    except ImportError:  # Optuna says so when it needs it
        pass
    return plt, ovm


def warm() -> None:
    """What the end loads, loaded while the last trials run (_ahead.py): the plots' and the
    report's imports and what saving the best model loads."""
    from runner.report import warm as warm_report

    plotting()
    warm_report()


def register(
    sweep: Sweep,
    tracker: Tracker,
    task_cfg: DictConfig,
    best: Optional[FrozenTrial],
    setting: Optional[str],
    model: Callable[[], Tuple[lgb.Booster, Prepared, Any]],
) -> Optional[str]:
    """Log the best trial's model on its child run and register it (by default).

    The model is the single runs' (runner/tracking/model.py: pyfunc on raw rows, LightGBM flavor,
    signature, input example), from the booster file the trial saved (else retrained), as an
    MLflow 3 logged model of the trial's run where the store has them. Registered under
    runner.tracking.model.registered_name: hydra.sweeper.registered_model, else
    tracker.registered_model, else tracker.experiment; tracker.register=false: not registered;
    tracker.log_model=false: neither. The study's `registered_model` attribute records what was
    done for which trial, so a resumed sweep with the same best adds nothing.
    """
    from runner.tracking.model import LoggedModelRef, registered_name

    if best is None or not task_cfg.tracker.get("log_model", True):
        return None
    run_id = best.user_attrs.get(TrialAttr.RUN_ID)
    if not run_id:
        return None
    name = registered_name(task_cfg.tracker, setting)
    study = sweep.study
    done = study.user_attrs.get(StudyAttr.REGISTERED_MODEL) or {}
    same_trial = done.get("trial") == best.number
    if same_trial and done.get("name") == name and (done.get("model_uri") or name):
        return _already(done)
    if same_trial and done.get("model_uri"):  # logged before, registered now (or under a new name)
        ref = LoggedModelRef(done["model_uri"], done.get("model_id"), done.get("model_location"))
    else:
        booster, prepared, _ = model()
        ref = tracker.log_logged_model(
            run_id,
            booster,
            prepared,
            tags={Tag.STUDY_NAME: study.study_name, Tag.TRIAL_NUMBER: best.number},
            params=best.params,
        )
    version = tracker.register(name, run_id, ref.source, ref.model_id) if name else None
    kill_point("register")  # test hook: registered, not yet recorded in the study
    record = {"name": name, "version": version.version if version else None, "trial": best.number}
    logged = {"model_uri": ref.uri, "model_id": ref.model_id, "model_location": ref.location}
    study.set_user_attr(StudyAttr.REGISTERED_MODEL, {**record, **logged})
    tags: Dict[str, Any] = {Tag.BEST_MODEL_URI: ref.uri}
    if ref.model_id:
        tags[Tag.BEST_MODEL_ID] = ref.model_id
    if version is not None:
        tags.update({Tag.BEST_REGISTERED_MODEL: name, Tag.BEST_REGISTERED_VERSION: version.version})
    assert sweep.parent_run_id is not None  # the summary is written inside the parent run
    tracker.log(sweep.parent_run_id, tags=tags)
    if version is None:
        return f"no (tracker.register=false); model {ref.uri}"
    return f"{name} v{version.version} ({ref.uri})"


def best_model(composer: Composer, best: Optional[FrozenTrial]) -> Tuple[lgb.Booster, Prepared, Any]:
    """The best trial's booster (its saved file, else retrained), its prepared data and its
    FeatureSet."""
    import lightgbm as lgb

    from runner.job import prepared_data
    from runner.model import train

    assert best is not None
    cfg = composer.config_of(best)
    features, prepared = prepared_data(cfg)
    path = best.user_attrs.get(TrialAttr.MODEL_PATH)
    if path and Path(path).exists():
        booster = lgb.Booster(model_file=path)
    else:
        log.warning("trial %d's model file is missing: retraining it", best.number)
        booster = train(prepared, cfg.model).booster
    return booster, prepared, features


def _already(done: Dict[str, Any]) -> str:
    """The summary line of a registration done before (this study, same best trial)."""
    if not done.get("name"):
        return f"no (tracker.register=false); model {done.get('model_uri')} (already, trial {done.get('trial')})"
    return f"{done.get('name')} v{done.get('version')} (already, trial {done.get('trial')})"
