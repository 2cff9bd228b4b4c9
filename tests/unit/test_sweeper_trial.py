"""One trial through runner.job.run_job's hooks (hydra_plugins/.../_trial.py), with run_job faked."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution, IntDistribution

import runner.job
from hydra_plugins.runner_optuna_sweeper._pruning import PruningCallback
from hydra_plugins.runner_optuna_sweeper._trial import (
    Outcome,
    TrialContext,
    execute_trial,
    final_tags_for,
    pruned_status,
)
from runner.errors import DataError

pytestmark = pytest.mark.unit

optuna.logging.set_verbosity(optuna.logging.WARNING)
VALUES = {"model.params.num_leaves": 31, "model.params.learning_rate": 0.05}


def test_final_tags_per_status():
    final_tags = final_tags_for(VALUES)
    common = {
        "optuna.params": json.dumps(VALUES),
        "optuna.param.model.params.num_leaves": 31,
        "optuna.param.model.params.learning_rate": 0.05,
    }
    assert final_tags("FINISHED", None) == {"optuna.state": "COMPLETE", **common}
    assert final_tags("FAILED", ValueError("x")) == {"optuna.state": "FAIL", **common}
    pruned = optuna.TrialPruned("pruned at round 12: valid auc=0.71234")
    assert final_tags("KILLED", pruned) == {
        "optuna.state": "PRUNED",
        **common,
        "runner.pruned": "pruned at round 12: valid auc=0.71234",
    }
    assert final_tags("KILLED", optuna.TrialPruned())["runner.pruned"] == "pruned"
    assert len(final_tags("KILLED", optuna.TrialPruned("p" * 900))["runner.pruned"]) == 500


def test_only_a_pruned_trial_gets_its_own_status():
    assert pruned_status(optuna.TrialPruned("x")) == "KILLED"
    assert pruned_status(ValueError("x")) is None
    assert pruned_status(KeyboardInterrupt()) is None


@pytest.fixture
def trial():
    study = optuna.create_study(direction="maximize")
    return study.ask(
        {"model.params.num_leaves": IntDistribution(15, 63), "model.params.learning_rate": FloatDistribution(0.01, 0.3)}
    )


@pytest.fixture
def ctx(tmp_path):
    return TrialContext("runner-test", "parent123", ["valid_auc"], ["maximize"], 5, tmp_path / "models")


CFG = OmegaConf.create({"model": {"metric": None, "params": {"objective": "binary"}}})


def fake_job(monkeypatch, behaviour):
    calls = []

    def run_job(cfg, *, tracker=None, parent_run_id=None, hooks=None):
        calls.append(SimpleNamespace(cfg=cfg, tracker=tracker, parent_run_id=parent_run_id, hooks=hooks))
        hooks.on_run("run-1")
        return behaviour(hooks)

    monkeypatch.setattr(runner.job, "run_job", run_job)
    return calls


def test_pruned_trial(monkeypatch, trial, ctx):
    def prune(hooks):
        raise optuna.TrialPruned("pruned at round 10: valid auc=0.61000")

    calls = fake_job(monkeypatch, prune)
    outcome = execute_trial(trial, CFG, ["a=1"], ctx, tracker="the-tracker")
    assert (outcome.state, outcome.run_id) == ("PRUNED", "run-1")
    assert outcome.error == "pruned at round 10: valid auc=0.61000"
    assert trial.user_attrs["mlflow_run_id"] == "run-1"
    call = calls[0]
    assert call.tracker == "the-tracker" and call.parent_run_id == "parent123"
    hooks = call.hooks
    assert hooks.run_name == f"trial-{trial.number}"
    assert hooks.tags == {
        "optuna.trial_number": trial.number,
        "optuna.study_name": "runner-test",
        "runner.sweep": "runner_optuna",
        "runner.worker": f"{socket.gethostname()}:{os.getpid()}",
    }
    assert hooks.log_model is False and list(hooks.overrides) == ["a=1"]
    (callback,) = hooks.callbacks
    assert isinstance(callback, PruningCallback)
    assert (callback.metric, callback.maximize, callback.every, callback.prune) == ("auc", True, 5, True)
    assert hooks.status_of(optuna.TrialPruned("x")) == "KILLED"
    assert hooks.tags_at_end("FINISHED")["optuna.state"] == "COMPLETE"
    assert json.loads(hooks.tags_at_end("FINISHED")["optuna.params"]) == trial.params


def test_complete_trial_saves_its_model(monkeypatch, trial, ctx):
    class Booster:
        def save_model(self, path):
            Path(path).write_text("model")

    result = SimpleNamespace(
        run_id="run-1",
        metrics={"valid_auc": 0.8, "train_auc": 0.9},
        booster=Booster(),
        features=SimpleNamespace(feature_queries=1),
    )
    fake_job(monkeypatch, lambda hooks: result)
    outcome = execute_trial(trial, CFG, [], ctx, tracker=None)
    assert isinstance(outcome, Outcome)
    assert (outcome.state, outcome.values, outcome.run_id, outcome.feature_queries) == ("COMPLETE", [0.8], "run-1", 1)
    assert outcome.metrics == {"valid_auc": 0.8, "train_auc": 0.9}
    path = ctx.model_dir / f"{trial.number}.txt"
    assert trial.user_attrs["model_path"] == str(path) and path.read_text() == "model"


def test_missing_metric_is_fatal(monkeypatch, trial, ctx):
    result = SimpleNamespace(
        run_id="run-1", metrics={"valid_rmse": 0.3}, booster=None, features=SimpleNamespace(feature_queries=0)
    )
    fake_job(monkeypatch, lambda hooks: result)
    outcome = execute_trial(trial, CFG, [], ctx, tracker=None)
    assert (outcome.state, outcome.fatal, outcome.run_id) == ("FAIL", True, "run-1")
    assert outcome.error == (
        "ConfigError: hydra.sweeper.metric='valid_auc' is not a metric of the job (metrics: valid_rmse)"
    )


@pytest.mark.parametrize("exc, fatal", [(ValueError("bad\nsecond line"), False), (DataError("no rows"), True)])
def test_failed_trial(monkeypatch, trial, ctx, exc, fatal):
    def fail(hooks):
        raise exc

    fake_job(monkeypatch, fail)
    outcome = execute_trial(trial, CFG, [], ctx, tracker=None)
    assert (outcome.state, outcome.fatal, outcome.run_id) == ("FAIL", fatal, "run-1")
    assert outcome.error == f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def test_interrupt_is_not_swallowed(monkeypatch, trial, ctx):
    def interrupt(hooks):
        raise KeyboardInterrupt

    fake_job(monkeypatch, interrupt)
    with pytest.raises(KeyboardInterrupt):
        execute_trial(trial, CFG, [], ctx, tracker=None)


def test_no_run_starts_once_the_sweep_stopped_nor_while_its_cleanup_holds_the_lock(monkeypatch, trial, ctx):
    import threading

    started = []

    def run_job(cfg, *, tracker=None, parent_run_id=None, hooks=None):
        with hooks.start_guard():  # what the run lifecycle holds around creating the run
            started.append("run-1")
            hooks.on_run("run-1")
        return None

    monkeypatch.setattr(runner.job, "run_job", run_job)
    ctx.stop = threading.Event()
    # The interrupted sweep's cleanup holds the lock: a trial about to create its run waits.
    ctx.run_lock.acquire()
    done = []
    worker = threading.Thread(target=lambda: done.append(execute_trial(trial, CFG, [], ctx, tracker=None)))
    worker.start()
    worker.join(0.3)
    assert worker.is_alive() and not started
    ctx.stop.set()  # the sweep stopped; the cleanup ended what it saw and lets go
    ctx.run_lock.release()
    worker.join(5)
    (outcome,) = done
    assert not started and outcome.state == "FAIL" and outcome.run_id is None
    assert "stopped before the trial's run started" in outcome.error
