"""The sweeper's ask/tell budget on an in-memory Optuna study (hydra_plugins/.../_budget.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hydra_plugins.runner_optuna_sweeper._budget import Budget
from hydra_plugins.runner_optuna_sweeper._liveness import owner_info
from hydra_plugins.runner_optuna_sweeper._search_space import SearchSpace
from hydra_plugins.runner_optuna_sweeper._state import Sweep
from hydra_plugins.runner_optuna_sweeper._trial import Outcome

pytestmark = pytest.mark.unit

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_budget(
    limit: int, *, max_failures: int = 0, timeout=None, direction: str = "maximize", on_tell=None
) -> Budget:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction=direction, sampler=optuna.samplers.RandomSampler(seed=0))
    space = SearchSpace(distributions={"x": FloatDistribution(0.0, 1.0)})
    sweep = Sweep(
        study, "sqlite:///:memory:", ["valid_auc"], [direction], space, limit, time.perf_counter(), storage=storage
    )
    return Budget(
        sweep,
        stop=threading.Event(),
        heartbeat_timeout=600.0,
        max_failures=max_failures,
        timeout=timeout,
        on_tell=on_tell,
    )


def states(budget: Budget):
    return [t.state for t in budget.study.get_trials(deepcopy=False)]


def test_ask_stops_at_the_budget_counting_running_trials():
    budget = make_budget(3)
    trials = [budget.ask() for _ in range(3)]
    assert all(t not in (None, False) for t in trials)
    assert budget.ask() is None  # 3 running: nothing more to ask
    assert sorted(budget.mine) == [0, 1, 2]
    assert trials[0].user_attrs["runner.owner"] == owner_info()
    assert budget.counts()["running"] == 3


def test_counts_complete_and_pruned_but_not_failed():
    told = []
    budget = make_budget(3, on_tell=lambda b, number, outcome: told.append((number, outcome.state)))
    a, b, c = budget.ask(), budget.ask(), budget.ask()
    budget.tell(a, Outcome("COMPLETE", values=[0.7], feature_queries=2))
    budget.tell(b, Outcome("PRUNED", error="pruned at round 10"))
    budget.tell(c, Outcome("FAIL", error="ValueError: boom"))
    counts = budget.counts()
    assert {k: counts[k] for k in ("complete", "pruned", "failed", "running", "finished")} == {
        "complete": 1,
        "pruned": 1,
        "failed": 1,
        "running": 0,
        "finished": 2,
    }
    assert counts["best"] == (0.7, 0)
    assert states(budget) == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert budget.session_done == 2 and budget.feature_queries == 2 and budget.failures == 1
    assert budget.study.trials[0].user_attrs["feature_queries"] == 2
    assert budget.study.trials[2].user_attrs["error"] == "ValueError: boom"
    assert told == [(0, "COMPLETE"), (1, "PRUNED"), (2, "FAIL")]
    assert not budget.mine
    # the failed trial freed its slot: one more, then the budget is spent
    d = budget.ask()
    assert d is not None and d is not False and d.number == 3
    budget.tell(d, Outcome("COMPLETE", values=[0.9]))
    assert budget.counts()["finished"] == 3 and budget.counts()["best"] == (0.9, 3)
    assert budget.ask() is None


def test_best_follows_the_direction():
    budget = make_budget(5, direction="minimize")
    for value in (0.5, 0.2, 0.8):
        budget.tell(budget.ask(), Outcome("COMPLETE", values=[value]))
    assert budget.counts()["best"] == (0.2, 1)


def test_trial_asked_past_the_budget_by_another_process_is_failed_over_budget():
    budget = make_budget(1)
    study = budget.study
    real_ask = study.ask

    def racing_ask(*args, **kwargs):
        real_ask(*args, **kwargs)  # another worker of the study takes the last slot meanwhile
        return real_ask(*args, **kwargs)

    study.ask = racing_ask
    assert budget.ask() is False
    ours = study.trials[1]
    assert ours.state == TrialState.FAIL and ours.user_attrs["over_budget"] is True
    assert study.trials[0].state == TrialState.RUNNING
    assert not budget.mine


def test_max_failures_stops_the_sweep():
    budget = make_budget(10, max_failures=2)
    budget.tell(budget.ask(), Outcome("FAIL", error="ValueError: one"))
    assert not budget.stop.is_set() and budget.stop_reason is None
    budget.tell(budget.ask(), Outcome("FAIL", error="ValueError: two"))
    assert budget.stop.is_set()
    assert budget.stop_reason == "2 trials failed (hydra.sweeper.max_failures=2); last: ValueError: two"
    assert budget.fatal is None


def test_a_stopped_trial_is_not_a_failure():
    budget = make_budget(10, max_failures=1)
    trial = budget.ask()
    budget.tell(trial, Outcome("FAIL", error="SweepStopped: the sweep is stopping"))
    assert budget.failures == 0 and not budget.stop.is_set()
    frozen = budget.study.trials[0]
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["interrupted"] is True


def test_fatal_failure_stops_with_its_message():
    budget = make_budget(10)  # max_failures 0: only a fatal failure stops
    budget.tell(budget.ask(), Outcome("FAIL", error="ValueError: plain"))
    assert not budget.stop.is_set()
    budget.tell(
        budget.ask(),
        Outcome("FAIL", fatal=True, error="ConfigError: hydra.sweeper.metric='x' is not a metric of the job"),
    )
    assert budget.stop.is_set()
    assert budget.fatal == "trial 1: hydra.sweeper.metric='x' is not a metric of the job"
    budget.tell(budget.ask(), Outcome("FAIL", fatal=True, error="ConfigError: later"))
    assert budget.fatal.startswith("trial 1: ")  # the first one is kept


def test_timeout():
    assert not make_budget(3).timed_out()  # no timeout
    budget = make_budget(3, timeout=0.05)
    assert not budget.timed_out()
    time.sleep(0.06)
    assert budget.timed_out()
    assert budget.stop_reason == "hydra.sweeper.timeout=0.05s reached"


def _other(study, pid: int, *, beat: float, host: str = "elsewhere.invalid"):
    trial = study.ask()
    trial.set_user_attr("runner.owner", {"host": host, "pid": pid, "start": "1"})
    trial.set_user_attr("runner.heartbeat", beat)
    return trial


def test_leave_counts_other_workers_with_a_live_running_trial():
    budget = make_budget(5)
    budget.ask()  # ours: not counted
    _other(budget.study, 1, beat=time.time())
    _other(budget.study, 2, beat=time.time() - 3600)  # no heartbeat for an hour: gone
    assert budget.leave() == 1
    assert budget.leave() == 1  # one answer per process
    assert any(k.startswith("runner.left.") for k in budget.study.user_attrs)


def test_leave_counts_a_worker_between_two_trials_while_the_budget_lasts():
    budget = make_budget(5)
    budget.study.tell(_other(budget.study, 1, beat=time.time() - 3600), 0.5)  # just told: alive
    assert budget.leave() == 1  # it asks its next trial: the parent stays RUNNING for it


def test_leave_does_not_count_a_worker_that_left_or_a_spent_budget():
    left = make_budget(5)
    left.study.tell(_other(left.study, 1, beat=time.time()), 0.5)
    left.study.set_user_attr("runner.left.elsewhere.invalid:1:1", time.time())
    assert left.leave() == 0
    spent = make_budget(1)
    spent.study.tell(_other(spent.study, 1, beat=time.time()), 0.5)
    assert spent.leave() == 0  # nothing left to ask: it ends too


def test_leave_checks_a_worker_on_this_host_by_its_process():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    budget = make_budget(5)
    budget.study.tell(_other(budget.study, gone.pid, beat=time.time(), host=socket.gethostname()), 0.5)
    assert budget.leave() == 0


def test_a_pull_no_trial_reported_is_kept_in_the_study():
    budget = make_budget(5)
    budget.add_unreported_pull(0)
    assert not budget.study.user_attrs
    budget.add_unreported_pull(1)
    [(key, value)] = budget.study.user_attrs.items()
    assert key.startswith("runner.feature_queries.") and value == 1 and budget.feature_queries == 1


def test_wait_returns_when_a_trial_is_told():
    budget = make_budget(2)
    trial = budget.ask()
    threading.Timer(0.1, budget.tell, (trial, Outcome("COMPLETE", values=[0.5]))).start()
    started = time.monotonic()
    budget.wait(5.0)
    assert time.monotonic() - started < 2
    assert budget.counts()["finished"] == 1
