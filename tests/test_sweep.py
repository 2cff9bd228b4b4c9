"""`python -m runner --multirun ...` sweeps end to end: the runner_optuna sweeper and the
basic sweeper's parent run, against a real `mlflow server` on loopback (behind a counting
front door) and the Optuna storage the sweep wrote. Real components only."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import run_rerun, run_runner
from tests.support.sigv4_proxy import Sigv4Proxy

pytestmark = pytest.mark.integration

SMALL = ["data.demo.events=100000", "data.demo.customers=5000", "model.num_boost_round=30"]
# Aggressive pruning so a 6-trial sweep prunes: from the 3rd trial on, every round.
PRUNE_HARD = [
    "hydra/sweeper/sampler=random",
    "hydra.sweeper.sampler.seed=3",
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=2",
    "hydra.sweeper.pruner.n_warmup_steps=0",
    "hydra.sweeper.report_every=1",
]
API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("sweep_cache"))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tracker_args(url: str, experiment: str):
    return ["tracker=server", f"tracker.uri={url}", f"tracker.experiment={experiment}"]


def runs_of(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    return client.search_runs([exp.experiment_id], max_results=1000)


def split(runs):
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def load_study(cwd: Path, name: str = "runner-lightgbm") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/.runner/optuna/{name}.db")


S = optuna.trial.TrialState


# ------------------------------------------------------------------ the main sweep


@pytest.fixture(scope="module")
def main_sweep(mlflow_server, tmp_path_factory):
    """6 trials, aggressive pruning, a registered model, behind a request-counting door, cold cache."""
    cwd = tmp_path_factory.mktemp("main_sweep")
    experiment, model = unique("sweep"), unique("churn-model")
    cold_cache = str(tmp_path_factory.mktemp("cold_cache"))
    with Sigv4Proxy(mlflow_server.url, verify=False) as door:
        proc = run_runner(
            [
                "sweep=lightgbm",
                *SMALL,
                "hydra.sweeper.n_trials=6",
                f"data.cache_dir={cold_cache}",
                f"hydra.sweeper.registered_model={model}",
                *PRUNE_HARD,
                *tracker_args(door.url, experiment),
            ],
            cwd,
            multirun=True,
        )
        sent = list(door.requests)
    return cwd, experiment, model, proc, sent


def test_sweep_runs_and_reports(main_sweep):
    cwd, experiment, model, proc, _ = main_sweep
    assert proc.returncode == 0, proc.stderr[-4000:]
    # live progress on stderr, summary table on stdout
    assert "6/6 done" in proc.stderr and "ETA" in proc.stderr and "best valid_auc=" in proc.stderr
    assert "rank" in proc.stdout and "run_id" in proc.stdout and "6/6 trials finished" in proc.stdout
    assert f"best model registered: {model} v1" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_one_parent_with_a_child_per_trial(main_sweep, mlflow_server):
    cwd, experiment, *_ = main_sweep
    client = MlflowClient(mlflow_server.url)
    parents, children = split(runs_of(client, experiment))
    assert len(parents) == 1 and len(children) == 6
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    tags = parent.data.tags
    assert tags["optuna.study_name"] == "runner-lightgbm" and tags["optuna.sampler"] == "RandomSampler"
    assert tags["optuna.pruner"] == "MedianPruner" and tags["optuna.direction"] == "maximize"
    assert tags["optuna.n_trials"] == "6" and tags["optuna.storage"].startswith("sqlite:///")
    study = load_study(cwd)
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    by_run = {c.info.run_id: c for c in children}
    for t in study.trials:
        child = by_run[t.user_attrs["mlflow_run_id"]]
        assert child.data.tags["optuna.trial_number"] == str(t.number)
        assert child.data.tags["optuna.state"] == t.state.name
        assert child.info.run_name == f"trial-{t.number}"
        assert child.info.status == {S.COMPLETE: "FINISHED", S.PRUNED: "KILLED"}[t.state]
        for name, value in t.params.items():
            assert child.data.params[name] == str(value)  # the sampled value reached the job's config
    # best value / params / child on the parent
    best = study.best_trial
    assert parent.data.metrics["best_valid_auc"] == pytest.approx(best.value)
    assert tags["best.run_id"] == best.user_attrs["mlflow_run_id"]
    assert tags["best.trial_number"] == str(best.number)
    assert by_run[tags["best.run_id"]].data.metrics["valid_auc"] == pytest.approx(best.value)
    # the optimization curve: the best so far at each complete trial, in completion order
    done = sorted((t for t in study.trials if t.state == S.COMPLETE), key=lambda t: t.datetime_complete)
    curve = sorted(client.get_metric_history(parent.info.run_id, "best_valid_auc"), key=lambda m: m.step)
    assert [m.step for m in curve] == list(range(1, len(done) + 1)) and len(done) >= 2
    assert [m.timestamp for m in curve] == [int(t.datetime_complete.timestamp() * 1000) for t in done]
    values = [m.value for m in curve]
    assert values == sorted(values) and values[-1] == pytest.approx(best.value)


def test_pruned_trials_end_killed_and_say_so(main_sweep, mlflow_server):
    cwd, experiment, *_ = main_sweep
    study = load_study(cwd)
    pruned = [t for t in study.trials if t.state == S.PRUNED]
    assert pruned, [t.state for t in study.trials]
    client = MlflowClient(mlflow_server.url)
    for t in pruned:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "KILLED"
        assert run.data.tags["optuna.state"] == "PRUNED" and "pruned at round" in run.data.tags["runner.pruned"]
        assert len(t.intermediate_values) < 30  # stopped before the last boosting round
    assert study.trials[0].state == S.COMPLETE


def test_artifacts_and_registered_model_on_the_parent(main_sweep, mlflow_server):
    cwd, experiment, model, *_ = main_sweep
    client = MlflowClient(mlflow_server.url)
    parent = split(runs_of(client, experiment))[0][0]
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert {
        "optuna/top_trials.csv",
        "optuna/top_trials.md",
        "optuna/optimization_history.png",
        "optuna/param_importances.png",
        "optuna/parallel_coordinate.png",
    } <= names
    # the sweep's page on the parent; the best trial's evaluation on its run (no other trial's)
    assert "evaluation/report.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "evaluation")}
    best = client.get_run(parent.data.tags["best.run_id"])
    shown = {a.path for a in client.list_artifacts(best.info.run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/roc_curve.png", "evaluation/feature_contributions.png"} <= shown
    assert best.data.metrics["test_roc_auc"] == pytest.approx(best.data.metrics["test_auc"])
    page = Path(client.download_artifacts(parent.info.run_id, "evaluation/report.html", str(cwd))).read_text()
    assert page.count("data:image/png;base64,") >= 5 and "http" not in page.split("<body>")[0]
    png = client.download_artifacts(parent.info.run_id, "optuna/optimization_history.png", str(cwd))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (version,) = client.search_model_versions(f"name='{model}'")
    assert version.run_id == parent.data.tags["best.run_id"]
    # only the winner uploaded a model: an MLflow 3 logged model of its run, which the
    # parent and the registered version name; no trial's run holds model files of its own
    children = split(runs_of(client, experiment))[1]
    (logged,) = client.search_logged_models([parent.info.experiment_id])
    assert logged.source_run_id == version.run_id and parent.data.tags["best.model_id"] == logged.model_id
    assert parent.data.tags["best.model_uri"] == f"models:/{logged.model_id}"
    assert not [c for c in children if "model" in {a.path for a in client.list_artifacts(c.info.run_id)}]


def test_any_trial_reruns_from_mlflow_alone(main_sweep, mlflow_server, tmp_path):
    """The best trial and another one, re-created by `python -m runner.rerun` from an empty folder:
    the parent's base config (one upload per sweep) + the trial's optuna.params tag."""
    cwd, experiment, *_ = main_sweep
    client = MlflowClient(mlflow_server.url)
    (parent,), children = split(runs_of(client, experiment))
    base = {c.data.tags["runner.base_config"] for c in children}
    assert len(base) == 1 and base <= {a.path for a in client.list_artifacts(parent.info.run_id, "config")}
    assert not [c for c in children if client.list_artifacts(c.info.run_id, "config")]  # no upload per trial
    done = sorted((c for c in children if c.info.status == "FINISHED"), key=lambda c: -c.data.metrics["valid_auc"])
    best_id = parent.data.tags["best.run_id"]
    assert done[0].info.run_id == best_id and len(done) >= 2
    for old in (done[0], done[-1]):
        res = run_rerun(
            old.info.run_id,
            mlflow_server.url,
            tmp_path,
            f"tracker.uri={mlflow_server.url}",
            f"tracker.experiment={experiment}-rerun",
        )
        assert res.returncode == 0, res.stderr[-3000:]
        new = client.get_run(re.search(r"runner: run ([0-9a-f]{32}) FINISHED", res.stdout).group(1))
        assert new.data.tags["user.rerun_of"] == old.info.run_id and "mlflow.parentRunId" not in new.data.tags
        for key in ("valid_auc", "test_auc", "valid_logloss", "best_iteration"):
            assert new.data.metrics[key] == old.data.metrics[key], key
        for name, value in old.data.params.items():
            if name.startswith("model."):
                assert new.data.params[name] == value, name


def test_dataset_lineage_on_parent_best_child_and_every_trial(main_sweep, mlflow_server):
    cwd, experiment, *_ = main_sweep
    client = MlflowClient(mlflow_server.url)
    (parent,), children = split(runs_of(client, experiment))
    key = parent.data.tags.get("runner.cache_key") or children[0].data.tags["runner.cache_key"]
    assert {c.data.tags["runner.dataset.digest"] for c in children} == {key[:36]}
    for run_id in (parent.info.run_id, parent.data.tags["best.run_id"]):
        (dataset_input,) = client.get_run(run_id).inputs.dataset_inputs
        dataset = dataset_input.dataset
        assert dataset.digest == key[:36] and dataset.source_type == "snowflake"
        assert "select" in json.loads(dataset.source)["query"].lower()
    others = [c for c in children if c.info.run_id != parent.data.tags["best.run_id"]]
    assert not [c for c in others if client.get_run(c.info.run_id).inputs.dataset_inputs]


def test_features_pulled_once_and_three_requests_per_trial(main_sweep, mlflow_server):
    cwd, experiment, _, proc, sent = main_sweep
    client = MlflowClient(mlflow_server.url)
    parent, children = split(runs_of(client, experiment))
    queries = [int(c.data.tags["runner.warehouse.feature_queries"]) for c in children]
    assert sum(queries) == 1 and sorted(queries) == [0, 0, 0, 0, 0, 1]
    assert parent[0].data.tags["runner.warehouse.feature_queries"] == "1"
    # per child: runs/create, one runs/log-batch, runs/update (terminate)
    child_calls = Counter(path for _, path in sent)
    assert child_calls[f"{API}/runs/create"] == 1 + 6
    # the parent logs params, resume tags, results, status; at the end the best trial's run
    # gets its evaluation metrics (test_precision_score, ...) in one more batch
    trial_batches = child_calls[f"{API}/runs/log-batch"] - 4 - 1
    assert trial_batches <= 6, child_calls
    assert child_calls[f"{API}/runs/update"] == 1 + 6


def test_rerun_resumes_the_finished_study_with_a_warm_cache(main_sweep, mlflow_server, cache_dir):
    """Same command again: the study is complete, nothing runs, the same parent is reused."""
    cwd, experiment, model, first, _ = main_sweep
    cold_cache = next(a for a in first.args if a.startswith("data.cache_dir="))
    args = [a for a in first.args[first.args.index("--multirun") + 1 :] if "tracker.uri" not in a]
    proc = run_runner([*args, f"tracker.uri={mlflow_server.url}"], cwd, multirun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "6/6 trials finished" in proc.stdout and "this run 0 trials" in proc.stdout
    client = MlflowClient(mlflow_server.url)
    parents, children = split(runs_of(client, experiment))
    assert len(parents) == 1 and len(children) == 6 and parents[0].info.status == "FINISHED"
    assert len(client.search_model_versions(f"name='{model}'")) == 1  # not registered twice
    complete = [t for t in load_study(cwd).trials if t.state == S.COMPLETE]
    assert len(client.get_metric_history(parents[0].info.run_id, "best_valid_auc")) == len(complete)
    assert len(client.get_run(parents[0].info.run_id).inputs.dataset_inputs) == 1  # no duplicate input
    assert cold_cache in proc.args


# ------------------------------------------------------------------ validation before any trial


@pytest.mark.parametrize(
    "arg,message",
    [
        (
            "model.params.num_leaves=int(interval(300, 255))",
            "command line 'model.params.num_leaves=int(interval(300, 255))': low 300 > high 255",
        ),
        ("model.params.num_leavez=int(interval(15, 255))", "model.params.num_leavez is not in the config"),
        ("model.params.learning_rate=tag(loog, interval(0.01, 0.3))", "unknown tag 'loog'"),
        (
            ["model.params.num_threads=choice(1,2)", "hydra.sweeper.n_jobs=2"],
            "model.params.num_threads is searched while 2",
        ),
    ],
)
def test_bad_search_space_fails_before_any_trial(arg, message, tmp_path, mlflow_server):
    experiment = unique("bad")
    proc = run_runner(
        ["sweep=lightgbm", *([arg] if isinstance(arg, str) else arg), *tracker_args(mlflow_server.url, experiment)],
        tmp_path,
        multirun=True,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("runner: error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-3000:]
    assert MlflowClient(mlflow_server.url).get_experiment_by_name(experiment) is None
    assert not (tmp_path / ".runner" / "optuna").exists()


def test_bad_param_in_a_sweep_file_is_named(tmp_path, mlflow_server):
    conf = tmp_path / "conf" / "sweep"
    conf.mkdir(parents=True)
    (conf / "bad.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: runner_optuna\n"
        "hydra:\n  sweeper:\n    params:\n"
        "      model.params.num_leaves: int(interval(300, 255))\n"
    )
    proc = run_runner(
        ["--config-dir", str(tmp_path / "conf"), "sweep=bad", *tracker_args(mlflow_server.url, unique("bad"))],
        tmp_path,
        multirun=True,
    )
    assert proc.returncode == 2
    assert "runner: error: hydra.sweeper.params.model.params.num_leaves: low 300 > high 255" in proc.stderr


def test_config_error_in_a_trial_stops_the_sweep(tmp_path, mlflow_server, cache_dir):
    experiment = unique("fatal")
    proc = run_runner(
        [
            "sweep=lightgbm",
            *SMALL,
            "hydra.sweeper.n_trials=6",
            "hydra.sweeper.n_jobs=2",  # two trials at once: both may have started before the stop
            "hydra.sweeper.metric=valid_nope",
            "hydra.sweeper.direction=maximize",
            f"data.cache_dir={cache_dir}",
            *tracker_args(mlflow_server.url, experiment),
        ],
        tmp_path,
        multirun=True,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("runner: error:")]
    assert "hydra.sweeper.metric='valid_nope' is not a metric of the job" in line
    parents, children = split(runs_of(MlflowClient(mlflow_server.url), experiment))
    assert parents[0].info.status == "FAILED" and 1 <= len(children) <= 2  # no trial started after the error
    assert [t.state for t in load_study(tmp_path).trials] == [S.FAIL] * len(children)


# ------------------------------------------------------------------ concurrency, resume


def test_two_workers_run_trials_concurrently(tmp_path, mlflow_server, cache_dir):
    experiment = unique("jobs2")
    proc = run_runner(
        [
            "sweep=lightgbm",
            *SMALL,
            "hydra.sweeper.n_trials=5",
            "hydra.sweeper.n_jobs=2",
            f"data.cache_dir={cache_dir}",
            *tracker_args(mlflow_server.url, experiment),
        ],
        tmp_path,
        multirun=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parents, children = split(runs_of(MlflowClient(mlflow_server.url), experiment))
    assert len(parents) == 1 and len(children) == 5
    assert all(c.data.params["model.params.num_threads"] == str(max(1, (os.cpu_count() or 1) // 2)) for c in children)
    spans = sorted((c.info.start_time, c.info.end_time) for c in children)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), spans  # two trials overlapped
    study = load_study(tmp_path)
    assert len([t for t in study.trials if t.state in (S.COMPLETE, S.PRUNED)]) == 5
    assert sum(int(c.data.tags["runner.warehouse.feature_queries"]) for c in children) == 0  # warm cache
    assert len({t.user_attrs["mlflow_run_id"] for t in study.trials}) == 5


def test_resume_after_kill(tmp_path, mlflow_server, cache_dir):
    """SIGKILL mid-sweep, run the same command again: same study and parent, n_trials in total,
    the killed trial failed in Optuna and MLflow, no child duplicated, nothing left RUNNING."""
    experiment = unique("resume")
    # Trials of ~1-2 s, so the kill lands while the second one runs.
    args = [
        "sweep=lightgbm",
        "data.demo.events=100000",
        "data.demo.customers=5000",
        "model.num_boost_round=80",
        "model.early_stopping_rounds=0",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.n_trials=4",
        f"data.cache_dir={cache_dir}",
        *tracker_args(mlflow_server.url, experiment),
    ]
    client = MlflowClient(mlflow_server.url)
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "--multirun", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            exp = client.get_experiment_by_name(experiment)
            if exp and len(split(client.search_runs([exp.experiment_id]))[1]) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first_parent = split(runs_of(client, experiment))[0][0].info.run_id
    assert load_study(tmp_path).user_attrs["mlflow_parent_run_id"] == first_parent

    again = run_runner(args, tmp_path, multirun=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "was left RUNNING" in again.stderr
    parents, children = split(runs_of(client, experiment))
    assert [p.info.run_id for p in parents] == [first_parent] and parents[0].info.status == "FINISHED"
    study = load_study(tmp_path)
    states = Counter(t.state for t in study.trials)
    assert states[S.COMPLETE] + states[S.PRUNED] == 4 and states[S.RUNNING] == 0
    stale = [t for t in study.trials if "stale" in t.user_attrs]
    assert stale and all(t.state == S.FAIL for t in stale)
    numbers = Counter(c.data.tags["optuna.trial_number"] for c in children)
    assert max(numbers.values()) == 1, numbers  # no child duplicated for a trial number
    assert not [c for c in children if c.info.status == "RUNNING"]
    for t in stale:
        if "mlflow_run_id" in t.user_attrs:
            assert client.get_run(t.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    finished_children = [c for c in children if c.info.status in ("FINISHED", "KILLED")]
    assert len(finished_children) == 4


# ------------------------------------------------------------------ basic sweeper


def test_grid_multirun_with_the_basic_sweeper_is_one_parent(tmp_path, mlflow_server, cache_dir):
    experiment = unique("grid")
    proc = run_runner(
        [
            "model.params.num_leaves=15,31",
            *SMALL,
            "tracker.log_model=false",
            f"data.cache_dir={cache_dir}",
            *tracker_args(mlflow_server.url, experiment),
        ],
        tmp_path,
        multirun=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parents, children = split(runs_of(MlflowClient(mlflow_server.url), experiment))
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].info.status == "FINISHED" and parents[0].data.tags["runner.sweep"] == "basic"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert sorted(c.data.params["model.params.num_leaves"] for c in children) == ["15", "31"]
