"""The study's parent MLflow run, and what a killed process left behind.

- ensure_parent: reuse the study's parent run, or create it (once, under the study lock);
- fail_stale: trials left RUNNING by a dead owner -> Optuna FAIL, child run FAILED; child
  runs left RUNNING whose trial finished in Optuna -> ended as Optuna has them;
- close_parent: end the parent run, unless other workers still run trials of the study.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, Dict, Optional, Sequence, Set, Tuple

from optuna.trial import TrialState

from runner.errors import RunnerError
from runner.testhooks import barrier, kill_point

from ._budget import Budget
from ._display import say
from ._search_space import describe, mlflow_key
from ._state import Sweep
from ._storage import study_lock

log = logging.getLogger("runner.sweep")

# Study user attribute and parent-run tag that tie the two together before the run id is known.
PARENT_TOKEN = "runner.parent_token"
# Study user attribute {trial number: run id} for finished trials that got their run on a
# resume (Optuna does not let a finished trial's own attributes change).
TRIAL_RUNS = "runner.trial_runs"


def run_id_of(study, trial) -> Optional[str]:
    """The child run of a trial: its own mlflow_run_id, or the one a resume gave it."""
    return trial.user_attrs.get("mlflow_run_id") or (study.user_attrs.get(TRIAL_RUNS) or {}).get(str(trial.number))


def ensure_parent(sweep: Sweep, tracker, task_cfg, arguments: Sequence[str], tags: Dict[str, Any]) -> Tuple[str, bool]:
    """The study's parent run id, and whether it was reused. Created by exactly one of the
    workers that start the study together: the check-and-create runs under study_lock (an
    advisory lock on PostgreSQL), so a second worker waits, then finds and reuses the first
    one's id."""
    barrier("parent")  # test hook: every worker gets here before any creates
    with study_lock(sweep.storage_url, sweep.study.study_name):
        return _ensure_parent_locked(sweep, tracker, task_cfg, arguments, tags)


def _ensure_parent_locked(
    sweep: Sweep, tracker, task_cfg, arguments: Sequence[str], tags: Dict[str, Any]
) -> Tuple[str, bool]:
    from runner.job import base_tags

    study = sweep.study
    run_id = study.user_attrs.get("mlflow_parent_run_id")  # read inside the lock
    if run_id:
        run = tracker.get_run(run_id)
        if (
            run is not None
            and run.info.lifecycle_stage == "active"
            and run.info.experiment_id == tracker.experiment_id()
        ):
            if run.info.status != "RUNNING":
                tracker.reopen(run_id)
            tracker.log(run_id, tags={**tags, "runner.sweep.status": "RUNNING"})
            return run_id, True
        log.warning(
            "study %s: parent run %s is not in experiment %r of %s: starting a new parent run",
            study.study_name,
            run_id,
            tracker.cfg.experiment,
            tracker.display_uri,
        )
    # Idempotent across a kill at any point: the token goes into the study before the run is
    # created and onto the run, so a rerun finds a parent created but not yet recorded.
    token = study.user_attrs.get(PARENT_TOKEN)
    if token:
        found = tracker.search_runs(f"tags.`{PARENT_TOKEN}` = '{token}'", max_results=1)
        if found:
            run_id = found[0].info.run_id
            _log_parent_params(sweep, tracker, run_id, tags)  # the same values: accepted again
            study.set_user_attr("mlflow_parent_run_id", run_id)
            say(
                f"runner: study {study.study_name!r}: parent run {run_id} was created but not recorded "
                "(the process was stopped in between): reusing it"
            )
            return _ensure_parent_locked(sweep, tracker, task_cfg, arguments, tags)
    else:
        token = uuid.uuid4().hex
        study.set_user_attr(PARENT_TOKEN, token)
    all_tags = {**base_tags(task_cfg, arguments), **tags, "runner.sweep.status": "RUNNING", PARENT_TOKEN: token}
    run_id = tracker.start_run(study.study_name, all_tags)
    kill_point("parent")  # test hook: the parent exists, the study does not know it yet
    _log_parent_params(sweep, tracker, run_id, tags)
    study.set_user_attr("mlflow_parent_run_id", run_id)
    return run_id, False


def _log_parent_params(sweep: Sweep, tracker, run_id: str, tags: Dict[str, Any]) -> None:
    study = sweep.study
    params = {
        "study_name": study.study_name,
        "sampler": tags["optuna.sampler"],
        "pruner": tags["optuna.pruner"],
        "direction": ",".join(sweep.directions),
        "metric": ",".join(sweep.metrics),
        "storage": tags["optuna.storage"],
        "n_trials_at_start": tags["optuna.n_trials"],
    }
    params.update({f"space.{mlflow_key(k)}": v for k, v in describe(sweep.space).items()})
    tracker.log(run_id, params=params)


def end_stale(tracker, reaped) -> Set[str]:
    """Say so for each trial Budget.reap_stale failed, and end its child run FAILED; return
    those runs' ids."""
    ended: Set[str] = set()
    for t, reason in reaped:
        say(f"runner: trial {t.number} was left RUNNING ({reason}): marked FAIL")
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id:
            _end_child(tracker, run_id, reason)
            ended.add(run_id)
    return ended


def fail_stale(sweep: Sweep, tracker, budget: Budget) -> None:
    """Trials left RUNNING by a dead process: FAIL in Optuna, FAILED in MLflow."""
    study = sweep.study
    failed_runs = end_stale(tracker, budget.reap_stale(every=0))
    # Child runs created just before a kill, whose id never reached the study. Trial states
    # are read after the run list: other workers sharing the study start and finish trials
    # meanwhile, and only a child whose trial has FAILed (or is unknown) is an orphan.
    runs = tracker.search_runs(
        f"tags.`mlflow.parentRunId` = '{sweep.parent_run_id}' and attributes.status = 'RUNNING'", max_results=1000
    )
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    alive = {n for n, t in trials.items() if t.state != TrialState.FAIL}
    for run in runs:
        number = run.data.tags.get("optuna.trial_number")
        t = trials.get(int(number)) if number is not None else None
        if (
            t is not None
            and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            and t.user_attrs.get("mlflow_run_id") == run.info.run_id
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


def give_runs(sweep: Sweep, tracker, task_cfg) -> None:
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
    linked = dict(study.user_attrs.get(TRIAL_RUNS) or {})
    children = tracker.search_runs(f"tags.`mlflow.parentRunId` = '{sweep.parent_run_id}'", max_results=5000)
    existing = {run.data.tags.get("optuna.trial_number"): run.info.run_id for run in children}
    for t in missing:
        run_id = existing.get(str(t.number))
        if run_id is None:
            tags = {
                **base_tags(task_cfg, t.user_attrs.get("overrides") or []),
                "runner.sweep": "runner_optuna",
                "optuna.trial_number": t.number,
                "optuna.study_name": study.study_name,
                "optuna.state": t.state.name,
                "optuna.params": json.dumps(t.params, default=str),
                "runner.resume.filled": "created",
            }
            tags.update({f"optuna.param.{mlflow_key(k)}": v for k, v in t.params.items()})
            run_id = tracker.start_run(f"trial-{t.number}", tags, parent_run_id=sweep.parent_run_id)
            tracker.log(
                run_id,
                params={mlflow_key(k): v for k, v in t.params.items()},
                metrics={m: v for m, v in zip(sweep.metrics, t.values or [], strict=False)},
            )
            tracker.end(run_id, "FINISHED" if t.state == TrialState.COMPLETE else "KILLED")
        linked[str(t.number)] = run_id
        say(
            f"runner: trial {t.number} finished in Optuna ({t.state.name}) without an MLflow run: "
            f"recorded it as child run {run_id}"
        )
    study.set_user_attr(TRIAL_RUNS, linked)


def _finish_child(sweep: Sweep, tracker, run, t) -> None:
    """A trial finished in Optuna whose child run never got its end (e.g. a tracking outage):
    fill what is missing from the study and end it as Optuna has it."""
    status = "FINISHED" if t.state == TrialState.COMPLETE else "KILLED"
    metrics = {m: v for m, v in zip(sweep.metrics, t.values or [], strict=False) if m not in run.data.metrics}
    params = {k: v for k, v in t.params.items() if k not in run.data.params}
    try:
        tracker.log(
            run.info.run_id,
            metrics=metrics,
            params=params,
            tags={
                "optuna.state": t.state.name,
                "runner.resume.filled": "end" + "".join(f",{k}" for k in [*metrics, *params]),
            },
        )
        tracker.end(run.info.run_id, status)
    except RunnerError as exc:
        log.warning("could not end child run %s of trial %d: %s", run.info.run_id, t.number, exc)
        return
    say(
        f"runner: trial {t.number} finished in Optuna ({t.state.name}) but its MLflow run "
        f"{run.info.run_id} was left RUNNING: ended {status}"
        + (f", filled missing {', '.join([*metrics, *params])}" if metrics or params else "")
    )


def _end_child(tracker, run_id: str, reason: str) -> None:
    try:
        tracker.log(run_id, tags={"optuna.state": "FAIL", "runner.error": f"stale trial: {reason}"})
        tracker.end(run_id, "FAILED")
    except RunnerError as exc:
        log.warning("could not end stale child run %s: %s", run_id, exc)


def close_parent(tracker, parent_run_id: str, status: Optional[str], budget: Budget) -> None:
    """End the parent run with `status` (None: leave it to the last worker of the study).

    A sweep that did not finish leaves the parent RUNNING while other workers still run
    trials of the study: the last of them ends it."""
    if status not in (None, "FINISHED"):
        try:
            if budget.others_running():
                log.warning("parent run %s left RUNNING: other workers still run trials of the study", parent_run_id)
                status = None
        except Exception:
            pass
    if status is None:
        return
    try:
        tracker.log(
            parent_run_id,
            tags={"runner.sweep.status": status, **({"runner.error": budget.fatal} if budget.fatal else {})},
        )
        tracker.end(parent_run_id, status)
    except RunnerError as exc:
        log.error("%s", exc)
