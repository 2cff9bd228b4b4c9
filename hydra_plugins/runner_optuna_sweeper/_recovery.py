"""The study's parent MLflow run, and what a killed process left behind.

- parent_run: the parent's Tracker.run block (the study's run continued, or created once under
  the study lock; left RUNNING at its end while other workers still run trials of the study);
- fail_stale: trials left RUNNING by a dead owner -> Optuna FAIL, child run FAILED; child
  runs left RUNNING whose trial finished in Optuna -> ended as Optuna has them (Tracker.close);
- give_runs: finished trials without a run get one.
"""

from __future__ import annotations

import json
import logging
import uuid
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set, Tuple

from optuna.trial import TrialState

from runner.names import MlflowTag, Prefix, StudyAttr, Tag, TrialAttr
from runner.testhooks import barrier
from runner.tracking.lifecycle import LEFT_RUNNING, Run

from ._budget import Budget
from ._display import say
from ._search_space import describe, mlflow_key
from ._state import Sweep
from ._storage import study_lock

if TYPE_CHECKING:
    from mlflow.entities import Run as MlflowRun
    from omegaconf import DictConfig
    from optuna.study import Study
    from optuna.trial import FrozenTrial

    from runner.tracking import Tracker

log = logging.getLogger("runner.sweep")


def run_id_of(study: Study, trial: FrozenTrial) -> Optional[str]:
    """The child run of a trial: its own mlflow_run_id, or the one a resume gave it."""
    return trial.user_attrs.get(TrialAttr.RUN_ID) or (study.user_attrs.get(StudyAttr.TRIAL_RUNS) or {}).get(
        str(trial.number)
    )


def parent_run(
    sweep: Sweep, tracker: Tracker, task_cfg: DictConfig, arguments: Sequence[str], tags: Dict[str, Any], budget: Budget
) -> AbstractContextManager[Run]:
    """The study's parent run as a Tracker.run block: the study's own run continued, or created
    by exactly one of the workers that start the study together (the check-and-create runs
    under study_lock, an advisory lock on PostgreSQL: a second worker waits, then finds and
    continues the first one's run). The block ends it FINISHED, FAILED or KILLED, or leaves it
    RUNNING while other workers still run trials of the study: the last of them ends it."""
    from runner.job import base_tags

    barrier("parent")  # test hook: every worker gets here before any creates
    study = sweep.study

    def adopt(new_tags: Dict[str, Any]) -> Optional[str]:
        run_id = _recorded_parent(sweep, tracker, tags)
        if run_id is None:
            # Idempotent across a kill at any point: the token goes into the study before the
            # run is created and onto the run, so a rerun finds a parent created but not recorded.
            token = study.user_attrs.get(StudyAttr.PARENT_TOKEN) or uuid.uuid4().hex
            study.set_user_attr(StudyAttr.PARENT_TOKEN, token)
            new_tags[Tag.PARENT_TOKEN] = token
        return run_id

    def on_start(run: Run) -> None:
        sweep.parent_run_id = run.id
        run.end_tags = {Tag.SWEEP_STATUS: "FINISHED"}
        if not run.adopted:
            _log_parent_params(sweep, tracker, run.id, tags)
            study.set_user_attr(StudyAttr.PARENT_RUN_ID, run.id)

    def status_of(exc: BaseException) -> Optional[str]:
        try:
            if budget.leave():
                log.warning(
                    "parent run %s left RUNNING: other workers still run trials of the study", sweep.parent_run_id
                )
                return LEFT_RUNNING
        except Exception:  # noqa: BLE001 - the storage may be what failed: end the parent
            pass
        return None

    def final_tags(status: str, exc: Optional[BaseException]) -> Dict[str, Any]:
        return {Tag.SWEEP_STATUS: status, **({Tag.ERROR: budget.fatal} if budget.fatal else {})}

    return tracker.run(
        study.study_name,
        {**base_tags(task_cfg, arguments), **tags, Tag.SWEEP_STATUS: "RUNNING"},
        kind="parent",
        guard=lambda: study_lock(sweep.storage_url, study.study_name),
        adopt=adopt,
        on_start=on_start,
        status_of=status_of,
        final_tags=final_tags,
    )


def _recorded_parent(sweep: Sweep, tracker: Tracker, tags: Dict[str, Any]) -> Optional[str]:
    """Inside the study lock: the parent run the study records (or created before a kill
    left it unrecorded), its tags brought up to date; None when there is none to continue."""
    study = sweep.study
    run_id = study.user_attrs.get(StudyAttr.PARENT_RUN_ID)
    if run_id:
        run = tracker.get_run(run_id)
        if (
            run is not None
            and run.info.lifecycle_stage == "active"
            and run.info.experiment_id == tracker.experiment_id()
        ):
            tracker.log(run_id, tags={**tags, Tag.SWEEP_STATUS: "RUNNING"})
            return run_id
        log.warning(
            "study %s: parent run %s is not in experiment %r of %s: starting a new parent run",
            study.study_name,
            run_id,
            tracker.cfg.experiment,
            tracker.display_uri,
        )
        return None
    token = study.user_attrs.get(StudyAttr.PARENT_TOKEN)
    found = tracker.search_runs(f"tags.`{Tag.PARENT_TOKEN}` = '{token}'", max_results=1) if token else []
    if not found:
        return None
    run_id = found[0].info.run_id
    _log_parent_params(sweep, tracker, run_id, tags)  # the same values: accepted again
    study.set_user_attr(StudyAttr.PARENT_RUN_ID, run_id)
    say(
        f"runner: study {study.study_name!r}: parent run {run_id} was created but not recorded "
        "(the process was stopped in between): reusing it"
    )
    return _recorded_parent(sweep, tracker, tags)


def _log_parent_params(sweep: Sweep, tracker: Tracker, run_id: str, tags: Dict[str, Any]) -> None:
    study = sweep.study
    params = {
        "study_name": study.study_name,
        "sampler": tags[Tag.SAMPLER],
        "pruner": tags[Tag.PRUNER],
        "direction": ",".join(sweep.directions),
        "metric": ",".join(sweep.metrics),
        "storage": tags[Tag.STORAGE],
        "n_trials_at_start": tags[Tag.N_TRIALS],
    }
    params.update({f"{Prefix.SPACE}{mlflow_key(k)}": v for k, v in describe(sweep.space).items()})
    tracker.log(run_id, params=params)


def end_stale(tracker: Tracker, reaped: List[Tuple[FrozenTrial, str]]) -> Set[str]:
    """Say so for each trial Budget.reap_stale failed, and end its child run FAILED; return
    those runs' ids."""
    ended: Set[str] = set()
    for t, reason in reaped:
        say(f"runner: trial {t.number} was left RUNNING ({reason}): marked FAIL")
        run_id = t.user_attrs.get(TrialAttr.RUN_ID)
        if run_id:
            _end_child(tracker, run_id, reason)
            ended.add(run_id)
    return ended


def fail_stale(sweep: Sweep, tracker: Tracker, budget: Budget) -> None:
    """Trials left RUNNING by a dead process: FAIL in Optuna, FAILED in MLflow."""
    study = sweep.study
    failed_runs = end_stale(tracker, budget.reap_stale(every=0))
    # Child runs created just before a kill, whose id never reached the study. Trial states
    # are read after the run list: other workers sharing the study start and finish trials
    # meanwhile, and only a child whose trial has FAILed (or is unknown) is an orphan.
    runs = tracker.search_runs(
        f"tags.`{MlflowTag.PARENT_RUN_ID}` = '{sweep.parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=1000,
    )
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    alive = {n for n, t in trials.items() if t.state != TrialState.FAIL}
    for run in runs:
        number = run.data.tags.get(Tag.TRIAL_NUMBER)
        t = trials.get(int(number)) if number is not None else None
        if (
            t is not None
            and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            and t.user_attrs.get(TrialAttr.RUN_ID) == run.info.run_id
        ):
            _finish_child(sweep, tracker, run, t)  # finished in Optuna; MLflow missed its end
            continue
        if run.info.run_id in failed_runs or (number is not None and int(number) in alive):
            continue
        say(
            f"runner: child run {run.info.run_id} (trial {number}) was left RUNNING but its trial "
            f"is {t.state.name if t is not None else 'unknown'} in Optuna: marked FAILED"
        )
        _end_child(tracker, run.info.run_id, "its trial is no longer running")


def give_runs(sweep: Sweep, tracker: Tracker, task_cfg: DictConfig) -> None:
    """Finished trials with no MLflow run (added with study.add_trial, told by other code, or
    whose run never reached the server): a child run made from what the study recorded, so
    every trial the budget counts is in MLflow."""
    from runner.job import base_tags

    study = sweep.study
    missing = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if not run_id_of(study, t)
    ]
    if not missing:
        return
    linked = dict(study.user_attrs.get(StudyAttr.TRIAL_RUNS) or {})
    children = tracker.search_runs(f"tags.`{MlflowTag.PARENT_RUN_ID}` = '{sweep.parent_run_id}'", max_results=5000)
    existing = {run.data.tags.get(Tag.TRIAL_NUMBER): run.info.run_id for run in children}
    for t in missing:
        run_id = existing.get(str(t.number))
        if run_id is None:
            tags = {
                **base_tags(task_cfg, t.user_attrs.get(TrialAttr.OVERRIDES) or []),
                Tag.SWEEP: "runner_optuna",
                Tag.TRIAL_NUMBER: t.number,
                Tag.STUDY_NAME: study.study_name,
                Tag.TRIAL_STATE: t.state.name,
                Tag.TRIAL_PARAMS: json.dumps(t.params, default=str),
                Tag.RESUME_FILLED: "created",
            }
            tags.update({f"{Prefix.TRIAL_PARAM}{mlflow_key(k)}": v for k, v in t.params.items()})
            with tracker.run(f"trial-{t.number}", tags, parent=sweep.parent_run_id, kind="filled") as run:
                run.log(
                    params={mlflow_key(k): v for k, v in t.params.items()},
                    metrics={m: v for m, v in zip(sweep.metrics, t.values or [], strict=False)},
                )
                run.status = "FINISHED" if t.state == TrialState.COMPLETE else "KILLED"
            run_id = run.id
        linked[str(t.number)] = run_id
        say(
            f"runner: trial {t.number} finished in Optuna ({t.state.name}) without an MLflow run: "
            f"recorded it as child run {run_id}"
        )
    study.set_user_attr(StudyAttr.TRIAL_RUNS, linked)


def _finish_child(sweep: Sweep, tracker: Tracker, run: MlflowRun, t: FrozenTrial) -> None:
    """A trial finished in Optuna whose child run never got its end (e.g. a tracking outage):
    fill what is missing from the study and end it as Optuna has it."""
    status = "FINISHED" if t.state == TrialState.COMPLETE else "KILLED"
    metrics = {m: v for m, v in zip(sweep.metrics, t.values or [], strict=False) if m not in run.data.metrics}
    params = {k: v for k, v in t.params.items() if k not in run.data.params}
    filled = "end" + "".join(f",{k}" for k in [*metrics, *params])
    tags = {Tag.TRIAL_STATE: t.state.name, Tag.RESUME_FILLED: filled}
    if not tracker.close(run.info.run_id, status, metrics=metrics, params=params, tags=tags):
        return
    say(
        f"runner: trial {t.number} finished in Optuna ({t.state.name}) but its MLflow run "
        f"{run.info.run_id} was left RUNNING: ended {status}"
        + (f", filled missing {', '.join([*metrics, *params])}" if metrics or params else "")
    )


def _end_child(tracker: Tracker, run_id: str, reason: str) -> None:
    tracker.close(run_id, "FAILED", tags={Tag.TRIAL_STATE: "FAIL", Tag.ERROR: f"stale trial: {reason}"})
