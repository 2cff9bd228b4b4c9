"""One trial: a child MLflow run of the parent, through runner.job.run_job.

The job knows nothing of Optuna: the JobHooks built here give the run its trial tags,
the pruning callback, a KILLED status for a pruned trial (status_of) and the optuna.*
tags of its end (final_tags).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence

from omegaconf import DictConfig

from runner.errors import RunnerError, first_line
from runner.names import Prefix, Tag, TrialAttr

from ._halving import Halving, RungTrainer
from ._pruning import PruningCallback, SweepStopped
from ._search_space import mlflow_key

if TYPE_CHECKING:
    from optuna.trial import Trial

    from runner.tracking import Tracker

log = logging.getLogger("runner.sweep")


@dataclass
class TrialContext:
    """What every trial of the sweep shares."""

    study_name: str
    parent_run_id: Optional[str]
    metrics: List[str]
    directions: List[str]
    report_every: int
    model_dir: Path
    stop: Optional[threading.Event] = None
    prune: bool = True  # False with NopPruner: no per-round report to the storage
    halving: Optional[Halving] = None  # the default strategy's rungs on row subsets (_halving.py)
    # The parent's artifact keeping the trials' base config (_lineage.keep_base_config); None
    # when a config group is searched: then each trial uploads its own config.
    base_config: Optional[str] = None
    # Held while a trial creates its run and while an interrupted sweep ends the runs left:
    # no trial starts a run the cleanup cannot see (_loop.end_unfinished).
    run_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Outcome:
    """How a trial ended, as told to Optuna (also the return value of a launcher job)."""

    state: str  # COMPLETE, PRUNED, FAIL
    values: Optional[List[float]] = None
    run_id: Optional[str] = None
    error: Optional[str] = None
    fatal: bool = False
    feature_queries: int = 0
    seconds: float = 0.0
    metrics: Dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


def _is_pruned(exc: BaseException) -> bool:
    import optuna

    return isinstance(exc, optuna.TrialPruned)


def pruned_status(exc: BaseException) -> Optional[str]:
    """JobHooks.status_of: a pruned trial's run ends KILLED, and so does one the sweep stopped
    (Ctrl-C, SIGTERM, a fatal error elsewhere); anything else: the job decides."""
    return "KILLED" if _is_pruned(exc) or isinstance(exc, SweepStopped) else None


def final_tags_for(
    values: Dict[str, Any], rungs: Optional[RungTrainer] = None
) -> Callable[[str, Optional[BaseException]], Dict[str, Any]]:
    """JobHooks.final_tags of a trial with sampled `values`: its optuna.* tags for the run's end
    (and, trained in rungs, the fraction of training rows it reached)."""

    def final_tags(status: str, exc: Optional[BaseException] = None) -> Dict[str, Any]:
        stopped = isinstance(exc, SweepStopped)
        state = "FAIL" if stopped else {"FINISHED": "COMPLETE", "KILLED": "PRUNED"}.get(status, "FAIL")
        tags: Dict[str, Any] = {Tag.TRIAL_STATE: state, Tag.TRIAL_PARAMS: json.dumps(values, default=str)}
        if rungs is not None:
            tags[Tag.ROW_FRACTION] = rungs.fraction
        tags.update({f"{Prefix.TRIAL_PARAM}{mlflow_key(k)}": v for k, v in values.items()})
        if stopped:
            tags[Tag.INTERRUPTED] = str(exc)[:500]
        elif status == "KILLED":
            tags[Tag.PRUNED] = str(exc if exc is not None else "")[:500] or "pruned"
        return tags

    return final_tags


def execute_trial(
    trial: Trial, cfg: DictConfig, overrides: Sequence[str], ctx: TrialContext, tracker: Tracker
) -> Outcome:
    """Run one trial as a child MLflow run; never raises for trial failures."""
    from runner.job import JobHooks, run_job
    from runner.model import OBJECTIVES

    started = time.perf_counter()
    values_sampled = dict(trial.params)
    lgb_metric = cfg.model.metric or OBJECTIVES.get(cfg.model.params.objective)
    wanted = ctx.metrics[0].split("_", 1)[1] if ctx.metrics[0].startswith("valid_") else lgb_metric
    rungs = RungTrainer(trial, ctx.halving, ctx.metrics[0]) if ctx.halving is not None else None
    callback = PruningCallback(
        trial,
        wanted,
        ctx.directions[0] == "maximize",
        ctx.report_every,
        stop=ctx.stop,
        prune=ctx.prune and len(ctx.directions) == 1 and rungs is None,
    )
    run_ids: List[str] = []

    def on_run(run_id: str) -> None:
        run_ids.append(run_id)
        trial.set_user_attr(TrialAttr.RUN_ID, run_id)

    @contextmanager
    def start_guard() -> Iterator[None]:
        with ctx.run_lock:
            if ctx.stop is not None and ctx.stop.is_set():
                raise SweepStopped("the sweep stopped before the trial's run started")
            yield

    hooks = JobHooks(
        run_name=f"trial-{trial.number}",
        tags={
            Tag.TRIAL_NUMBER: trial.number,
            Tag.STUDY_NAME: ctx.study_name,
            Tag.SWEEP: "runner_optuna",
            Tag.WORKER: f"{socket.gethostname()}:{os.getpid()}",
            **({Tag.BASE_CONFIG: ctx.base_config} if ctx.base_config else {}),
        },
        callbacks=[callback],
        log_model=False,
        log_config=not ctx.base_config,
        overrides=list(overrides),
        on_run=on_run,
        start_guard=start_guard,
        final_tags=final_tags_for(values_sampled, rungs),
        status_of=pruned_status,
        kind="trial",
        train=rungs,
    )
    try:
        result = run_job(cfg, tracker=tracker, parent_run_id=ctx.parent_run_id, hooks=hooks)
    except BaseException as exc:  # noqa: BLE001 - every outcome is reported to Optuna
        seconds = time.perf_counter() - started
        run_id = run_ids[0] if run_ids else None
        if _is_pruned(exc):
            return Outcome("PRUNED", run_id=run_id, error=first_line(exc), seconds=seconds)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        fatal = isinstance(exc, RunnerError)
        if not isinstance(exc, (RunnerError, SweepStopped)):
            log.warning("trial %d failed: %s", trial.number, first_line(exc), exc_info=True)
        return Outcome(
            "FAIL", run_id=run_id, error=f"{type(exc).__name__}: {first_line(exc)}", fatal=fatal, seconds=seconds
        )
    missing = [m for m in ctx.metrics if m not in result.metrics]
    if missing:
        return Outcome(
            "FAIL",
            run_id=result.run_id,
            fatal=True,
            seconds=time.perf_counter() - started,
            error=f"ConfigError: hydra.sweeper.metric={missing[0]!r} is not a metric of the job "
            f"(metrics: {', '.join(sorted(result.metrics))})",
        )
    model_path = ctx.model_dir / f"{trial.number}.txt"
    try:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        result.booster.save_model(str(model_path))
        trial.set_user_attr(TrialAttr.MODEL_PATH, str(model_path))
    except Exception as exc:  # the winner is retrained at the end if its file is missing
        log.warning("trial %d: model not saved locally: %s", trial.number, first_line(exc))
    return Outcome(
        "COMPLETE",
        values=[float(result.metrics[m]) for m in ctx.metrics],
        run_id=result.run_id,
        feature_queries=result.features.feature_queries,
        seconds=time.perf_counter() - started,
        metrics=dict(result.metrics),
    )
