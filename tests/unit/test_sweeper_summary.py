"""The parent run's best-so-far history (hydra_plugins/.../_summary.py): a real in-memory Optuna
study, the real summary code, a local MLflow store (SQLite in a temp folder)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.runner_optuna_sweeper._budget import Budget
from hydra_plugins.runner_optuna_sweeper._search_space import SearchSpace
from hydra_plugins.runner_optuna_sweeper._state import Sweep
from hydra_plugins.runner_optuna_sweeper._summary import best_history, finish
from runner.names import StudyAttr

pytestmark = pytest.mark.unit

optuna.logging.set_verbosity(optuna.logging.WARNING)
T0 = datetime(2026, 12, 1, 9, 0, 0)
KEY = "best_valid_auc"


def trial(value, done_at: float, state=TrialState.COMPLETE) -> FrozenTrial:
    """A finished trial whose completion time is T0 + done_at seconds."""
    end = T0 + timedelta(seconds=done_at)
    return FrozenTrial(
        number=0,
        trial_id=0,
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        datetime_start=end - timedelta(seconds=1),
        datetime_complete=end,
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0.0, 1.0)},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
    )


def make_tracker(folder):
    from omegaconf import OmegaConf

    from runner.config import TrackerConfig
    from runner.tracking import Tracker

    logging.getLogger("alembic").setLevel(logging.WARNING)
    return Tracker(OmegaConf.merge(OmegaConf.structured(TrackerConfig), {"experiment": "unit", "dir": str(folder)}))


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    """One local SQLite store for the module (runner's tracker=local); a parent run per test."""
    return make_tracker(tmp_path_factory.mktemp("store"))


@pytest.fixture
def file_tracker(tmp_path, monkeypatch):
    """A tracker on MLflow's file store, which appends every row it is sent (duplicates
    included; SQL stores drop exact duplicates), so its history shows what each summary sent."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # maintenance mode in MLflow 3
    tracker = make_tracker(tmp_path / "sql")
    tracker.client = MlflowClient(tracking_uri=(tmp_path / "files").as_uri())
    return tracker


def make_sweep(tracker, direction: str = "maximize") -> Sweep:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction=direction)
    space = SearchSpace(distributions={"x": FloatDistribution(0.0, 1.0)})
    sweep = Sweep(
        study, "sqlite:///:memory:", ["valid_auc"], [direction], space, 10, time.perf_counter(), storage=storage
    )
    sweep.parent_run_id = tracker._create_run("sweep", {})  # a parent RUNNING as during a sweep
    return sweep


def summarize(sweep: Sweep, tracker) -> None:
    from omegaconf import OmegaConf

    budget = Budget(sweep, stop=threading.Event(), heartbeat_timeout=600.0, max_failures=0)
    task_cfg = OmegaConf.create({"tracker": {"log_model": False}})
    finish(sweep, budget, tracker, task_cfg, None, top_k=3, registered_model=None, loop_seconds=0.0)


def history(tracker, sweep: Sweep):
    return [(m.step, m.value, m.timestamp) for m in tracker.client.get_metric_history(sweep.parent_run_id, KEY)]


def ms(seconds: float) -> int:
    return int((T0 + timedelta(seconds=seconds)).timestamp() * 1000)


@pytest.mark.parametrize("direction,expected", [("maximize", [0.6, 0.6, 0.8, 0.8]), ("minimize", [0.6, 0.5, 0.5, 0.5])])
def test_one_point_per_complete_trial_in_completion_order(tracker, direction, expected):
    sweep = make_sweep(tracker, direction)
    # trial numbers 0..5; completion order 1, 0, pruned 2, 3, failed 4, 5
    sweep.study.add_trials(
        [
            trial(0.5, 20),
            trial(0.6, 10),
            trial(None, 25, TrialState.PRUNED),
            trial(0.8, 30),
            trial(None, 35, TrialState.FAIL),
            trial(0.7, 40),
        ]
    )
    assert [p[1] for p in best_history(sweep)] == expected
    summarize(sweep, tracker)
    assert history(tracker, sweep) == [
        (k, pytest.approx(v), ms(t)) for k, v, t in zip([1, 2, 3, 4], expected, [10, 20, 30, 40], strict=True)
    ]
    run = tracker.client.get_run(sweep.parent_run_id)
    assert run.data.metrics[KEY] == pytest.approx(expected[-1])  # the latest point is the best
    assert run.data.metrics["best_value"] == pytest.approx(expected[-1])


def test_resumed_sweep_adds_only_the_new_points(file_tracker):
    tracker = file_tracker
    sweep = make_sweep(tracker)
    sweep.study.add_trials([trial(0.5, 10), trial(0.7, 20)])
    summarize(sweep, tracker)
    summarize(sweep, tracker)  # same study state: nothing is sent again
    assert len(history(tracker, sweep)) == 2 and sweep.study.user_attrs[StudyAttr.BEST_HISTORY] == 2
    sweep.study.add_trials([trial(None, 25, TrialState.PRUNED)])
    summarize(sweep, tracker)  # a new state with no new complete trial: no new point
    assert len(history(tracker, sweep)) == 2
    sweep.study.add_trials([trial(0.6, 30), trial(0.9, 40)])  # the resumed session's trials
    summarize(sweep, tracker)
    assert history(tracker, sweep) == [
        (1, 0.5, ms(10)),
        (2, 0.7, ms(20)),
        (3, 0.7, ms(30)),
        (4, 0.9, ms(40)),
    ]
    assert tracker.client.get_run(sweep.parent_run_id).data.metrics[KEY] == 0.9


def test_a_batch_sent_again_after_a_crash_adds_no_rows(tracker):
    """Killed after the summary's batch, before the study recorded it: the rerun sends the same
    points (a function of the study), and MLflow's SQL store keeps each row once."""
    sweep = make_sweep(tracker)
    sweep.study.add_trials([trial(0.5, 10), trial(0.7, 20), trial(0.6, 30)])
    summarize(sweep, tracker)
    first = history(tracker, sweep)
    sweep.study.set_user_attr("runner.summary", None)  # as if the process died at kill_point("summary")
    sweep.study.set_user_attr(StudyAttr.BEST_HISTORY, 0)
    summarize(sweep, tracker)
    assert history(tracker, sweep) == first and len(first) == 3


def test_a_study_past_the_batch_limit_is_logged_whole(tracker):
    """5000 complete trials: more points than MLflow's 1000 per log_batch; its client splits."""
    sweep = make_sweep(tracker)
    sweep.study.add_trials([trial((i * 7919 % 5000) / 5000, i) for i in range(5000)])
    summarize(sweep, tracker)
    points = history(tracker, sweep)
    assert [p[0] for p in points] == list(range(1, 5001))
    values = [p[1] for p in points]
    assert values == sorted(values) and values[-1] == pytest.approx(4999 / 5000)
    assert sweep.study.user_attrs[StudyAttr.BEST_HISTORY] == 5000
