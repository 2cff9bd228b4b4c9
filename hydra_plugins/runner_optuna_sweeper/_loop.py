"""Trials in this process: n_jobs worker threads, each asking the next trial as soon as
its last one ends (no batch barrier), and a heartbeat for the trials they run."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from runner.errors import first_line
from runner.interrupts import as_interrupted
from runner.names import Tag, TrialAttr
from runner.secrets import scrub
from runner.testhooks import kill_point

from ._budget import Budget
from ._compose import Composer
from ._lineage import trial_context
from ._recovery import end_stale
from ._trial import Outcome, TrialContext, execute_trial

if TYPE_CHECKING:
    from optuna.trial import Trial

    from runner.tracking import Tracker

# Seconds an interrupted sweep waits for its running trials to stop (a LightGBM round, a
# feature pull in progress) before it ends them itself.
STOP_WAIT = 10.0
# ... and at most this long for a trial being asked (SQLite storages wait up to 60 s for a lock).
ASK_WAIT = 60.0


def run_trial(trial: Trial, composer: Composer, ctx: TrialContext, tracker: Tracker) -> Outcome:
    """Compose a trial's config and run it here."""
    overrides = composer.trial_overrides(trial.params)
    try:
        trial.set_user_attr(TrialAttr.OVERRIDES, [scrub(o) for o in overrides])
        cfg = composer.trial_config(trial.params)
    except Exception as exc:
        return Outcome("FAIL", error=f"ConfigError: composing the trial's config failed: {first_line(exc)}", fatal=True)
    return execute_trial(trial, cfg, overrides, trial_context(ctx, composer, trial.params), tracker)


def run_threads(
    budget: Budget, n_jobs: int, composer: Composer, ctx: TrialContext, tracker: Tracker, heartbeat_interval: float
) -> None:
    """Run trials in n_jobs threads until the budget is spent or the sweep stops."""

    def worker() -> None:
        while not budget.stop.is_set() and not budget.timed_out():
            trial = budget.ask()
            if trial is False:
                return  # another process took the last slot
            if trial is None:
                if budget.counts()["finished"] >= budget.sweep.limit:
                    return
                end_stale(tracker, budget.reap_stale())  # a worker killed hard holds none
                budget.wait(1.0)  # for a running trial (ours or another process's) to end
                continue
            budget.tell(trial, run_trial(trial, composer, ctx, tracker))
            kill_point("between_trials")  # test hook (runner/testhooks.py)

    threads = [threading.Thread(target=worker, name=f"runner-optuna-{i}", daemon=True) for i in range(n_jobs)]
    for t in threads:
        t.start()
    start_heartbeat(budget, heartbeat_interval)
    try:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)
    except KeyboardInterrupt as exc:
        budget.stop.set()  # running trials stop at their next boosting round
        budget.stop_reason = f"interrupted by {as_interrupted(exc).name}"
        deadline = time.monotonic() + STOP_WAIT
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        # A thread still inside ask() (the storage may be busy with other workers) registers
        # its trial before this one ends what is left, so no trial is left RUNNING unowned.
        asking = budget.ask_lock.acquire(timeout=ASK_WAIT)
        # ... and a thread creating its run registers it first (the trial's start_guard).
        starting = ctx.run_lock.acquire(timeout=ASK_WAIT)
        try:
            end_unfinished(budget, tracker, budget.stop_reason)
        finally:
            if starting:
                ctx.run_lock.release()
            if asking:
                budget.ask_lock.release()
        raise


def start_heartbeat(budget: Budget, interval: float) -> threading.Thread:
    """A daemon thread writing runner.heartbeat on this process's running trials every
    `interval` seconds, until the sweep stops."""

    def beat() -> None:
        while not budget.stop.wait(interval):
            for number in list(budget.mine):
                try:
                    budget.sweep.set_trial_attr(number, TrialAttr.HEARTBEAT, time.time())
                except Exception:  # finished meanwhile
                    pass

    thread = threading.Thread(target=beat, name="runner-optuna-heartbeat", daemon=True)
    thread.start()
    return thread


def end_unfinished(budget: Budget, tracker: Tracker, reason: str) -> None:
    """Trials of this process still running after an interrupt (their thread did not stop in
    time): FAIL in Optuna, marked interrupted, so they are not counted and do not linger as
    RUNNING; their child runs KILLED."""
    for number in list(budget.mine):
        trial = next((t for t in budget.study.get_trials(deepcopy=False) if t.number == number), None)
        try:
            budget.sweep.fail_trial(number, TrialAttr.INTERRUPTED, True)
        except Exception:  # told meanwhile by its own thread
            continue
        finally:
            budget.mine.discard(number)
        run_id = trial.user_attrs.get(TrialAttr.RUN_ID) if trial is not None else None
        if run_id:
            tracker.close(run_id, "KILLED", tags={Tag.TRIAL_STATE: "FAIL", Tag.INTERRUPTED: reason})
