"""Distributed sweeps: three `python -m runner --multirun` workers
share one Optuna study in a real PostgreSQL server on loopback; Hydra's joblib launcher
runs trials in separate processes. Checked through Optuna and MLflow, real components only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from tests.support.servers import PostgresCluster

pytestmark = pytest.mark.integration

SMALL = ["data.demo.events=20000", "data.demo.customers=2000", "model.num_boost_round=20"]
N_TRIALS = 6
WORKERS = 3
PASSWORD_ENV = "RUNNER_TEST_PG_PASSWORD"
S = optuna.trial.TrialState


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tracker_args(url: str, experiment: str):
    return ["tracker=server", f"tracker.uri={url}", f"tracker.experiment={experiment}"]


def split(runs):
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def all_runs(client: MlflowClient, experiment: str, view=ViewType.ACTIVE_ONLY):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    return client.search_runs([exp.experiment_id], run_view_type=view, max_results=1000)


def runner_cmd(args):
    return [sys.executable, "-m", "runner", "--multirun", *args]


@pytest.fixture(scope="module")
def postgres():
    # The cluster runs as the `postgres` user: its folder must be reachable by it (pytest's
    # tmp_path lives under a 0700 folder of the test user), so a world-traversable temp dir.
    base = Path(tempfile.mkdtemp(prefix="runner-pg-"))
    os.chmod(base, 0o755)
    cluster = PostgresCluster(base / "cluster").start()
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dist_cache"))  # cold for the first test of the module


# ------------------------------------------------------------------ 3 workers, one PostgreSQL study


@pytest.fixture(scope="module")
def three_workers(postgres, mlflow_server, cache_dir, tmp_path_factory):
    """3 identical commands started together against one study; the password comes from the
    environment through ${oc.env:...}; a test barrier holds every worker just before the
    parent-run step until all three are there, so they race for it."""
    cwd = tmp_path_factory.mktemp("dist_sweep")
    experiment, study_name, model = unique("dist"), unique("study"), unique("dist-model")
    storage = f"postgresql+psycopg2://runner:${{oc.env:{PASSWORD_ENV}}}@127.0.0.1:{postgres.port}/postgres"
    args = [
        "sweep=lightgbm",
        *SMALL,
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={study_name}",
        f"hydra.sweeper.n_trials={N_TRIALS}",
        f"hydra.sweeper.registered_model={model}",
        "hydra/sweeper/pruner=none",
        f"data.cache_dir={cache_dir}",
        *tracker_args(mlflow_server.url, experiment),
    ]
    env = {
        **os.environ,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        PASSWORD_ENV: "runner-test-pw",
        "RUNNER_TEST_BARRIER": f"parent:{cwd / 'barrier'}:{WORKERS}",
    }
    procs, outs = [], []
    for i in range(WORKERS):
        out, err = open(cwd / f"w{i}.out", "w+"), open(cwd / f"w{i}.err", "w+")
        outs.append((out, err))
        procs.append(
            subprocess.Popen(runner_cmd(args), cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)
        )
    results = []
    try:
        for proc, (out, err) in zip(procs, outs, strict=True):
            proc.wait(timeout=600)
            out.seek(0), err.seek(0)
            results.append((proc.pid, proc.returncode, out.read(), err.read()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for out, err in outs:
            out.close(), err.close()
    study = optuna.load_study(study_name=study_name, storage=postgres.url())
    return dict(cwd=cwd, experiment=experiment, study=study, model=model, results=results)


def test_workers_exit_cleanly_without_the_password_in_output(three_workers):
    for pid, code, out, err in three_workers["results"]:
        assert code == 0, f"worker {pid}:\n{err[-4000:]}"
        assert "Traceback" not in err
        assert "runner-test-pw" not in out + err
    assert "runner-test-pw" not in (next(Path(three_workers["cwd"], "multirun").rglob("multirun.yaml")).read_text())


def test_study_has_exactly_n_finished_trials_with_unique_numbers(three_workers):
    study = three_workers["study"]
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    finished = [t for t in trials if t.state in (S.COMPLETE, S.PRUNED)]
    assert len(finished) == N_TRIALS
    assert not [t for t in trials if t.state in (S.RUNNING, S.WAITING)]
    # Any other trial is one a worker asked for after the budget was taken, marked as such.
    for t in trials:
        if t.state == S.FAIL:
            assert t.user_attrs.get("over_budget") is True and "mlflow_run_id" not in t.user_attrs, t


def test_one_parent_and_a_child_per_finished_trial(three_workers, mlflow_server):
    client = MlflowClient(mlflow_server.url)
    study, experiment = three_workers["study"], three_workers["experiment"]
    # Deleted runs included: no worker created (and then removed) a parent of its own.
    parents, children = split(all_runs(client, experiment, ViewType.ALL))
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0]
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert parent.info.status == "FINISHED" and parent.data.tags["runner.sweep.status"] == "FINISHED"
    # Every worker joined that parent (each prints it at start).
    for pid, _, _, err in three_workers["results"]:
        assert f"parent run {parent.info.run_id}" in err, (pid, err[-2000:])
    finished = [t for t in study.trials if t.state in (S.COMPLETE, S.PRUNED)]
    assert len(children) == N_TRIALS
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.run_id for c in children} == {t.user_attrs["mlflow_run_id"] for t in finished}
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == sorted(t.number for t in finished)
    assert parent.data.metrics["trials_complete"] + parent.data.metrics["trials_pruned"] == N_TRIALS


def test_trials_per_worker_and_features_pulled_at_most_once_each(three_workers, mlflow_server, cache_dir):
    client = MlflowClient(mlflow_server.url)
    study = three_workers["study"]
    pids = {pid for pid, *_ in three_workers["results"]}
    per_worker = Counter()
    queries = defaultdict(int)
    children = {c.info.run_id: c for c in split(all_runs(client, three_workers["experiment"]))[1]}
    for t in study.trials:
        if t.state not in (S.COMPLETE, S.PRUNED):
            continue
        owner = t.user_attrs["runner.owner"]
        assert owner["pid"] in pids
        per_worker[owner["pid"]] += 1
        child = children[t.user_attrs["mlflow_run_id"]]
        assert child.data.tags["runner.worker"].endswith(f":{owner['pid']}")
        queries[owner["pid"]] += int(child.data.tags["runner.warehouse.feature_queries"])
    # A worker whose trials all went to the others (it pulled while they waited for its entry)
    # keeps its queries in the study instead.
    for key, n in study.user_attrs.items():
        if key.startswith("runner.feature_queries."):
            queries[int(key.split(":")[1])] += n
    print(f"\ntrials per worker: {dict(per_worker)}; feature queries per worker: {dict(queries)}")
    assert sum(per_worker.values()) == N_TRIALS
    assert all(n <= 1 for n in queries.values()), queries
    assert sum(queries.values()) == 1  # a cold shared cache: one worker pulled, the others read its entry
    # The cache holds whole entries only: no temp file left, every Parquet file readable.
    root = Path(cache_dir)
    assert not list(root.rglob("*.tmp"))
    entries = list(root.rglob("*.parquet"))
    assert len(entries) == 1
    for path in entries:
        assert pq.read_table(path).num_rows == 2000
    # The last worker's summary names every worker that ran trials.
    if len(per_worker) > 1:
        summaries = [out for _, _, out, _ in three_workers["results"] if "trials per worker:" in out]
        assert summaries, "no worker printed the study summary"


def test_model_registered_once(three_workers, mlflow_server):
    client = MlflowClient(mlflow_server.url)
    versions = client.search_model_versions(f"name='{three_workers['model']}'")
    assert len(versions) == 1, versions
    parent = split(all_runs(client, three_workers["experiment"]))[0][0]
    assert versions[0].run_id == parent.data.tags["best.run_id"]
    assert parent.data.tags["runner.warehouse.feature_queries"] == "1"  # study total


# ------------------------------------------------------------------ Hydra's joblib launcher


def test_joblib_launcher_runs_trials_in_worker_processes(tmp_path, mlflow_server, cache_dir):
    experiment = unique("joblib")
    args = [
        "sweep=lightgbm",
        *SMALL,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=4",
        "hydra/sweeper/pruner=none",
        f"data.cache_dir={cache_dir}",
        *tracker_args(mlflow_server.url, experiment),
    ]
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    proc = subprocess.Popen(
        runner_cmd(args), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    assert "4/4 trials finished" in out
    client = MlflowClient(mlflow_server.url)
    parents, children = split(all_runs(client, experiment))
    assert len(parents) == 1 and len(children) == 4 and parents[0].info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    worker_pids = {int(c.data.tags["runner.worker"].rsplit(":", 1)[1]) for c in children}
    assert proc.pid not in worker_pids  # trials ran in the launcher's processes, not the sweeper's
    study = optuna.load_study(
        study_name="runner-lightgbm", storage=f"sqlite:///{tmp_path}/.runner/optuna/runner-lightgbm.db"
    )
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state == S.COMPLETE for t in study.trials)
    assert {t.user_attrs["runner.worker"]["pid"] for t in study.trials} == worker_pids
    # each launcher job knows the parent's base config, so python -m runner.rerun can rebuild it
    (base,) = {c.data.tags["runner.base_config"] for c in children}
    assert base in {a.path for a in client.list_artifacts(parents[0].info.run_id, "config")}
    print(f"\njoblib: sweeper pid {proc.pid}, trial processes {sorted(worker_pids)}")


def test_basic_sweeper_with_joblib_is_one_parent(tmp_path, mlflow_server, cache_dir):
    """The basic sweeper's parent id reaches loky workers through RUNNER_PARENT_RUN_ID."""
    experiment = unique("basic-joblib")
    args = [
        "model.params.num_leaves=15,31",
        "hydra/launcher=joblib",
        *SMALL,
        "tracker.log_model=false",
        f"data.cache_dir={cache_dir}",
        *tracker_args(mlflow_server.url, experiment),
    ]
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    env.pop("RUNNER_PARENT_RUN_ID", None)
    proc = subprocess.run(runner_cmd(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    parents, children = split(all_runs(MlflowClient(mlflow_server.url), experiment))
    assert len(parents) == 1 and len(children) == 2 and parents[0].info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert sorted(c.data.params["model.params.num_leaves"] for c in children) == ["15", "31"]
