"""The halving strategy (hydra.sweeper.strategy=halving): trials climb rungs of training rows
(1/16, 1/4, all) while Optuna's SuccessiveHalvingPruner keeps them; what the MLflow record
and the study say of it; a pruned trial's last rung re-created from MLflow alone; the default
strategy (fast: trials at once, the wide space) and plain (the former sweep)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import run_rerun, run_runner, store
from tests.support.sigv4_proxy import Sigv4Proxy
from tests.test_sweep import API, runs_of, split, tracker_args, unique

pytestmark = pytest.mark.integration

# 48,000 rows of the synthetic table, ~38,400 to train: rungs of ~2,400, ~9,600 and all rows.
DATA = ["data=synthetic", "data.demo.rows=48000", "data.demo.n_features=10", "model.num_boost_round=30"]
HALVING = [*DATA, "hydra.sweeper.strategy=halving"]
TRIALS = 8


@pytest.fixture(scope="module")
def halving_sweep(mlflow_server, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("halving")
    experiment = unique("halving")
    with Sigv4Proxy(mlflow_server.url, verify=False) as door:
        proc = run_runner(
            ["sweep=lightgbm", *HALVING, f"hydra.sweeper.n_trials={TRIALS}", "hydra.sweeper.sampler.seed=0"]
            + tracker_args(door.url, experiment),
            cwd,
            multirun=True,
        )
        sent = list(door.requests)
    return cwd, experiment, proc, sent


def test_trials_climb_rungs_and_only_all_rows_trials_count(halving_sweep, mlflow_server):
    cwd, experiment, proc, _ = halving_sweep
    assert proc.returncode == 0, proc.stderr[-4000:]
    study = optuna.load_study(
        study_name="runner-lightgbm", storage=f"sqlite:///{cwd}/.runner/optuna/runner-lightgbm.db"
    )
    states = Counter(t.state.name for t in study.trials)
    assert sum(states.values()) == TRIALS and states["PRUNED"] >= 1 and states["COMPLETE"] >= 1, states
    assert set(states) <= {"COMPLETE", "PRUNED"}
    client = MlflowClient(mlflow_server.url)
    (parent,), children = split(runs_of(client, experiment))
    assert parent.data.tags["optuna.pruner"] == "SuccessiveHalvingPruner"
    assert len(children) == TRIALS  # one run per configuration, whatever its rungs
    n = next(int(c.data.metrics["rows_train"]) for c in children if c.info.status == "FINISHED")
    for child in children:
        fraction = float(child.data.tags["runner.row_fraction"])
        points = client.get_metric_history(child.info.run_id, "valid_auc_by_train_rows")
        rows = [p.step for p in sorted(points, key=lambda p: p.step)]
        assert rows == [round(n / 16), round(n / 4), n][: len(rows)], rows
        if child.data.tags["optuna.state"] == "COMPLETE":
            assert child.info.status == "FINISHED" and fraction == 1.0 and len(rows) == 3
            assert max(points, key=lambda p: p.step).value == child.data.metrics["valid_auc"]
        else:
            assert child.info.status == "KILLED" and fraction < 1.0 and len(rows) in (1, 2)
            assert "stopped after" in child.data.tags["runner.pruned"]
    # The parent's best-so-far history: one point per all-rows trial.
    best = client.get_metric_history(parent.info.run_id, "best_valid_auc")
    assert len(best) == states["COMPLETE"]
    assert max(p.value for p in best) == parent.data.metrics["best_value"]


def test_three_tracking_requests_per_configuration(halving_sweep):
    *_, sent = halving_sweep
    calls = Counter(path for _, path in sent)
    assert calls[f"{API}/runs/create"] == 1 + TRIALS and calls[f"{API}/runs/update"] == 1 + TRIALS
    # The parent: params, resume tags, results, status; the best trial: its test evaluation (the report).
    assert calls[f"{API}/runs/log-batch"] - 4 - 1 <= TRIALS, calls


def test_a_pruned_trial_reruns_on_its_last_rung(halving_sweep, mlflow_server, tmp_path):
    _, experiment, *_ = halving_sweep
    client = MlflowClient(mlflow_server.url)
    _, children = split(runs_of(client, experiment))
    pruned = next(c for c in children if c.data.tags["optuna.state"] == "PRUNED")
    last = max(client.get_metric_history(pruned.info.run_id, "valid_auc_by_train_rows"), key=lambda p: p.step)
    res = run_rerun(
        pruned.info.run_id,
        mlflow_server.url,
        tmp_path,
        f"tracker.uri={mlflow_server.url}",
        f"tracker.experiment={experiment}-rerun",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    new = client.get_run(re.search(r"runner: run ([0-9a-f]{32}) FINISHED", res.stdout).group(1))
    assert new.data.params["model.row_fraction"] == pruned.data.tags["runner.row_fraction"]
    assert new.data.metrics["valid_auc"] == last.value
    assert new.data.metrics["rows_train"] > last.step  # the split is whole; the model trained on the sample


def strategy_sweep(tmp_path, args, n=3):
    """An n-trial sweep into a local store: its study, the parent's tags, the children's params."""
    proc = run_runner(["sweep=lightgbm", *DATA, f"hydra.sweeper.n_trials={n}", *args], tmp_path, multirun=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "every trial on all rows (as hydra.sweeper.strategy=fast)" not in proc.stdout + proc.stderr
    study = optuna.load_study(
        study_name="runner-lightgbm", storage=f"sqlite:///{tmp_path}/.runner/optuna/runner-lightgbm.db"
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * n  # every trial on all rows
    assert all(not t.intermediate_values for t in study.trials)
    client = MlflowClient(store(tmp_path))
    (parent,), children = split(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    return study, parent.data.tags, [c.data.params for c in children]


def test_fast_the_default_runs_trials_at_once_over_the_wide_space(tmp_path):
    cores = os.cpu_count() or 1
    jobs = min(4, cores)
    study, tags, params = strategy_sweep(tmp_path, [])
    assert tags["optuna.n_jobs"] == str(jobs)
    space = json.loads(tags["optuna.search_space"])
    assert space["model.params.num_leaves"] == "tag(log, int(interval(4, 512)))"
    assert space["model.params.feature_fraction"] == "interval(0.2, 1.0)"
    if jobs > 1:  # LightGBM's threads split between the trials at once
        assert {p["model.params.num_threads"] for p in params} == {str(cores // jobs)}
    # sweep=lightgbm's enqueue_trials: the first two trials are its small-tree and large-tree starts
    starts = [{k.rsplit(".", 1)[1]: v for k, v in t.params.items()} for t in study.trials[:2]]
    assert [(p["num_leaves"], p["learning_rate"]) for p in starts] == [(8, 0.1), (384, 0.05)], starts


def test_plain_is_the_former_sweep_one_trial_at_a_time(tmp_path):
    study, tags, params = strategy_sweep(tmp_path, ["hydra.sweeper.strategy=plain"])
    assert tags["optuna.n_jobs"] == "1"
    space = json.loads(tags["optuna.search_space"])  # hydra.sweeper.plain_params
    assert space["model.params.num_leaves"] == "int(interval(15, 255))"
    assert all(15 <= t.params["model.params.num_leaves"] <= 255 for t in study.trials)
    assert {p["model.params.num_threads"] for p in params} == {"0"}  # LightGBM's default: all cores
    # The registered model is the best trial's logged model, its id in its MLmodel.
    client = MlflowClient(store(tmp_path))
    (version,) = client.search_model_versions("name='runner'")
    mlmodel = yaml.safe_load(Path(urlparse(version.source).path, "MLmodel").read_text())
    (logged,) = client.search_logged_models([e.experiment_id for e in client.search_experiments()])
    assert version.run_id == study.best_trial.user_attrs["mlflow_run_id"]
    assert mlmodel["run_id"] == version.run_id and mlmodel["model_id"] == logged.model_id


def test_a_pruner_of_its_own_runs_plain_and_says_so(tmp_path):
    proc = run_runner(
        ["sweep=lightgbm", *HALVING, "hydra.sweeper.n_trials=2", "hydra/sweeper/pruner=median"], tmp_path, multirun=True
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    said = proc.stdout + proc.stderr
    assert "every trial on all rows (as hydra.sweeper.strategy=fast): hydra/sweeper/pruner=MedianPruner" in said
