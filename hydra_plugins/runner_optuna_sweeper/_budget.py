"""The study's trial budget: ask a trial while it lasts, tell Optuna how each one ended.

n_trials counts COMPLETE + PRUNED trials of the whole study (every worker sharing its
storage, every resume); FAILed trials do not count, but max_failures of them in one
invocation, or one fatal failure, stop this process's sweep.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, Optional, Set, Tuple, Union

from optuna.trial import TrialState

from runner.errors import ConfigError
from runner.names import StudyAttr, TrialAttr

from ._liveness import is_mine, owner_info, stale_reason
from ._state import Sweep
from ._trial import Outcome

if TYPE_CHECKING:
    from optuna.trial import Trial

_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


class Budget:
    def __init__(
        self,
        sweep: Sweep,
        *,
        stop: threading.Event,
        heartbeat_timeout: float,
        max_failures: int,
        max_failure_rate: Optional[float] = None,
        timeout: Optional[float] = None,
        on_tell: Optional[Callable[[Budget, int, Outcome], None]] = None,
        extend: Optional[Callable[[Any], None]] = None,
    ) -> None:
        self.sweep = sweep
        self.study = sweep.study
        self.stop = stop
        self.heartbeat_timeout = heartbeat_timeout
        self.max_failures = max_failures
        self.max_failure_rate = max_failure_rate
        self.extend = extend  # hydra.sweeper.custom_search_space, called on each new trial
        self.session_told = 0  # trials of this invocation told, whatever their state
        self.timeout = timeout
        self.on_tell = on_tell  # after each tell (the progress line)
        self.ask_lock = threading.Lock()
        self._done = threading.Condition()
        self._reaped_at = 0.0
        self.mine: Set[int] = set()  # numbers of the trials running in this process
        self.session_done = 0  # COMPLETE + PRUNED trials of this invocation
        self.feature_queries = 0
        self.failures = 0
        self.fatal: Optional[str] = None  # a failure that stops the sweep with an error
        self.stop_reason: Optional[str] = None  # why the sweep stopped before its budget
        self._others: Optional[int] = None  # leave()'s answer

    def counts(self) -> Dict[str, Any]:
        """The study's trials by state, finished (complete + pruned) and best (value, number)."""
        directions = self.sweep.directions
        c: Dict[str, Any] = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "waiting": 0}
        best = None
        for t in self.study.get_trials(deepcopy=False):
            if t.state == TrialState.COMPLETE:
                c["complete"] += 1
                if len(directions) == 1 and t.values:
                    v = t.values[0]
                    if best is None or (v > best[0] if directions[0] == "maximize" else v < best[0]):
                        best = (v, t.number)
            elif t.state == TrialState.PRUNED:
                c["pruned"] += 1
            elif t.state == TrialState.FAIL:
                c["failed"] += 1
            elif t.state == TrialState.RUNNING:
                c["running"] += 1
            elif t.state == TrialState.WAITING:
                c["waiting"] += 1
        c["finished"] = c["complete"] + c["pruned"]
        c["best"] = best
        return c

    def add_unreported_pull(self, queries: int) -> None:
        """Feature queries this worker ran that none of its trials reported (other workers ran
        them all): kept in the study, so that the parent's total counts them."""
        if queries:
            self.study.set_user_attr(StudyAttr.FEATURE_QUERIES + _worker(owner_info()), queries)
            self.feature_queries += queries

    def leave(self) -> int:
        """Mark this worker as leaving the study, then count the other workers still in it:
        the live owner of a RUNNING trial and, while the budget is not spent, the live owner
        of a finished trial that has not left (between two trials: it asks the next one).
        Marked before counting: of two workers leaving at once, one sees the other gone and
        ends the parent run. The same answer on every call of this process."""
        if self._others is not None:
            return self._others
        me = owner_info()
        # One key per worker: marks of workers leaving at once cannot overwrite each other.
        self.study.set_user_attr(StudyAttr.LEFT + _worker(me), time.time())
        left = {k[len(StudyAttr.LEFT) :] for k in self.study.user_attrs if k.startswith(StudyAttr.LEFT)}
        trials = self.study.get_trials(deepcopy=False)  # one read of the storage
        spent = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) >= self.sweep.limit
        others: Set[str] = set()
        for t in trials:
            owner = t.user_attrs.get(TrialAttr.OWNER) or {}
            who = _worker(owner)
            if not owner or is_mine(t.user_attrs) or who in others:
                continue
            if t.state == TrialState.RUNNING:
                started = t.datetime_start.timestamp() if t.datetime_start else None
                if stale_reason(t.user_attrs, started, self.heartbeat_timeout) is None:
                    others.add(who)
            elif not spent and who not in left and t.datetime_complete is not None:
                told = t.datetime_complete.timestamp()  # the last sign of life of a worker between trials
                if stale_reason({TrialAttr.OWNER: owner}, told, self.heartbeat_timeout) is None:
                    others.add(who)
        self._others = len(others)
        return self._others

    def ask(self) -> Union[Trial, None, Literal[False]]:
        """A new trial; None when the budget is (about to be) spent; False when another
        process took the last slot meanwhile. Serialized in-process."""
        limit = self.sweep.limit
        with self.ask_lock:
            c = self.counts()
            if c["finished"] + c["running"] >= limit:  # WAITING trials (enqueued) are asked first
                return None
            trial = self.study.ask(self.sweep.space.distributions)
            trial.set_user_attr(TrialAttr.OWNER, owner_info())
            # Other processes may share the storage: count what is numbered before us.
            counted = [t for t in self.study.get_trials(deepcopy=False, states=_COUNTED) if t.number < trial.number]
            if len(counted) >= limit:
                trial.set_user_attr(TrialAttr.OVER_BUDGET, True)
                self.study.tell(trial, state=TrialState.FAIL)
                return False
            self.mine.add(trial.number)
            if self.extend is not None:
                try:
                    self.extend(trial)
                except ConfigError as exc:  # the user's hook failed: this trial fails, the sweep stops
                    self.mine.discard(trial.number)
                    trial.set_user_attr(TrialAttr.ERROR, str(exc)[:1000])
                    self._tell(trial, state=TrialState.FAIL)
                    self.fatal = self.fatal or str(exc)
                    self.stop.set()
                    return False
            return trial

    def tell(self, trial: Trial, outcome: Outcome) -> None:
        """Record a trial's outcome in the study, update this invocation's counts, maybe stop."""
        from optuna.exceptions import UpdateFinishedTrialError

        if trial.number not in self.mine:
            return  # already ended by an interrupt (the sweep did not wait for this thread)
        try:
            if outcome.feature_queries:  # summed over the study's trials for the parent run
                trial.set_user_attr(TrialAttr.FEATURE_QUERIES, outcome.feature_queries)
            if outcome.state == "COMPLETE":
                self._tell(trial, values=outcome.values)
            elif outcome.state == "PRUNED":
                self._tell(trial, state=TrialState.PRUNED)
            else:
                if outcome.error:
                    trial.set_user_attr(TrialAttr.ERROR, outcome.error[:1000])
                if outcome.error and outcome.error.startswith("SweepStopped"):
                    trial.set_user_attr(TrialAttr.INTERRUPTED, True)
                self._tell(trial, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            return  # ended by an interrupt meanwhile
        finally:
            self.mine.discard(trial.number)
        with self._done:
            self.session_done += outcome.state in ("COMPLETE", "PRUNED")
            self.session_told += 1
            self.feature_queries += outcome.feature_queries
            if outcome.state == "FAIL" and not (outcome.error or "").startswith("SweepStopped"):
                self.failures += 1
                if outcome.fatal and not self.fatal:
                    self.fatal = f"trial {trial.number}: {(outcome.error or '').split(': ', 1)[-1]}"
                    self.stop.set()
                if self.max_failures and self.failures >= self.max_failures and not self.stop.is_set():
                    self.stop_reason = (
                        f"{self.failures} trials failed (hydra.sweeper.max_failures="
                        f"{self.max_failures}); last: {outcome.error}"
                    )
                    self.stop.set()
                rate = self.max_failure_rate
                if rate is not None and self.failures > rate * self.session_told and not self.stop.is_set():
                    self.stop_reason = (
                        f"{self.failures} of {self.session_told} trials failed (hydra.sweeper.max_failure_rate="
                        f"{rate:g}); last: {outcome.error}"
                    )
                    self.stop.set()
            self._done.notify_all()
        if self.on_tell is not None:
            self.on_tell(self, trial.number, outcome)

    def _tell(self, trial: Trial, **kwargs: Any) -> None:
        """study.tell, minus the GridSampler's Study.stop() when its grid is done: that call
        is only allowed inside study.optimize, and the trial is told (saved) before it."""
        try:
            self.study.tell(trial, **kwargs)
        except RuntimeError as exc:
            if "Study.stop" not in str(exc):
                raise

    def reap_stale(self, every: float = 5.0) -> List[Tuple[Any, str]]:
        """RUNNING trials of other processes whose owner is gone (a worker killed hard): FAIL
        in Optuna, so the workers still running do not wait for them. At most every `every`
        seconds; returns (trial, reason) for the caller to end their child runs."""
        now = time.monotonic()
        if now - self._reaped_at < every:
            return []
        self._reaped_at = now
        reaped: List[Tuple[Any, str]] = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number in self.mine:
                continue
            started = t.datetime_start.timestamp() if t.datetime_start else None
            reason = stale_reason(t.user_attrs, started, self.heartbeat_timeout)
            if reason is None:
                continue
            try:
                self.sweep.fail_trial(t.number, TrialAttr.STALE, reason)
            except Exception:  # finished by its owner after all
                continue
            reaped.append((t, reason))
        return reaped

    def wake(self) -> None:
        """Wake every wait() now (a helper thread that is stopping)."""
        with self._done:
            self._done.notify_all()

    def wait(self, seconds: float) -> None:
        """Wait until a trial of this process is told (or `seconds` pass)."""
        with self._done:
            self._done.wait(timeout=seconds)

    def timed_out(self) -> bool:
        """Whether hydra.sweeper.timeout has passed (then no new trial starts)."""
        if self.timeout and time.perf_counter() - self.sweep.started > float(self.timeout):
            if not self.stop_reason:
                self.stop_reason = f"hydra.sweeper.timeout={self.timeout}s reached"
            return True
        return False


def _worker(owner: Dict[str, Any]) -> str:
    """A worker's name in the study: host, pid and process start."""
    return f"{owner.get('host')}:{owner.get('pid')}:{owner.get('start')}"
