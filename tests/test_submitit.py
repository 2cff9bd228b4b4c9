"""Trials as submitit jobs: `hydra/launcher=submitit_local` runs each trial
in a subprocess of submitit's local executor (the same pickled-job path as SLURM, without the
scheduler) against one PostgreSQL study and one real `mlflow server`. Checked through Optuna,
MLflow and the files submitit writes; docs/cluster.md has the SLURM and Kubernetes recipes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import ViewType

from tests.support.servers import PostgresCluster

pytestmark = pytest.mark.integration

SMALL = ["data.demo.events=20000", "data.demo.customers=2000", "model.num_boost_round=20"]
N_TRIALS, N_JOBS = 4, 2
PASSWORD_ENV = "RUNNER_TEST_PG_PASSWORD"
PASSWORD = "runner-test-pw"  # the PostgresCluster's
S = optuna.trial.TrialState


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sweep(cwd: Path, args, extra_env=None, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", PASSWORD_ENV: PASSWORD, **(extra_env or {})}
    cmd = [sys.executable, "-m", "runner", "--multirun", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def runs_of(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


@pytest.fixture(scope="module")
def postgres():
    # Run by the `postgres` user: its folder must be reachable by it (not under pytest's 0700 tmp).
    base = Path(tempfile.mkdtemp(prefix="runner-pg-"))
    os.chmod(base, 0o755)
    cluster = PostgresCluster(base / "cluster").start()
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


def base_args(postgres, mlflow_server, study: str, experiment: str, cache_dir: Path, n_trials: int = N_TRIALS):
    storage = f"postgresql+psycopg2://runner:${{oc.env:{PASSWORD_ENV}}}@127.0.0.1:{postgres.port}/postgres"
    return [
        "sweep=lightgbm",
        *SMALL,
        "hydra/launcher=submitit_local",
        # Pruning on (the default is none), so every job reports its rounds to the study.
        "hydra/sweeper/pruner=median",
        f"hydra.sweeper.n_jobs={N_JOBS}",
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={study}",
        f"data.cache_dir={cache_dir}",
        "tracker=server",
        f"tracker.uri={mlflow_server.url}",
        f"tracker.experiment={experiment}",
        f"tracker.registered_model={experiment}",
    ]


# ------------------------------------------------------------------ one sweep, trials as submitit jobs


@pytest.fixture(scope="module")
def submitit_sweep(postgres, mlflow_server, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("submitit_sweep")
    study, experiment = unique("study"), unique("submitit")
    # The median pruner (5 startup trials) prunes none of 4, but every job reports its rounds
    # to the study from its own process.
    proc = sweep(cwd, base_args(postgres, mlflow_server, study, experiment, cwd / "cache"))
    return dict(
        cwd=cwd,
        proc=proc,
        experiment=experiment,
        study=optuna.load_study(study_name=study, storage=postgres.url()),
    )


def test_sweep_exits_cleanly(submitit_sweep):
    proc = submitit_sweep["proc"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    assert f"{N_TRIALS}/{N_TRIALS} trials finished ({N_TRIALS} complete" in proc.stdout
    assert "launcher x2" in proc.stderr


def test_study_has_exactly_n_trials_each_reported_from_its_job(submitit_sweep):
    trials = submitit_sweep["study"].get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(N_TRIALS))
    assert all(t.state == S.COMPLETE for t in trials), [t.state for t in trials]
    for t in trials:
        assert t.intermediate_values, t.number  # reported to the storage by the job's process
        assert t.user_attrs["runner.worker"]["pid"] != t.user_attrs["runner.owner"]["pid"]


def test_one_parent_and_a_child_per_trial(submitit_sweep, mlflow_server):
    client = MlflowClient(mlflow_server.url)
    study = submitit_sweep["study"]
    parents, children = runs_of(client, submitit_sweep["experiment"])
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0]
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert (
        parent.data.tags["optuna.launcher"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    )
    assert len(children) == N_TRIALS
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert [r.info.status for r in parents + children] == ["FINISHED"] * (N_TRIALS + 1)  # none RUNNING
    by_run = {c.info.run_id: c for c in children}
    for t in study.trials:  # each child is its trial's: the run id in Optuna, the number and value in MLflow
        child = by_run[t.user_attrs["mlflow_run_id"]]
        assert int(child.data.tags["optuna.trial_number"]) == t.number
        assert child.data.metrics["valid_auc"] == pytest.approx(t.value)
    assert parent.data.tags["best.run_id"] == study.best_trial.user_attrs["mlflow_run_id"]


def test_trials_ran_in_submitit_jobs_and_features_were_pulled_once(submitit_sweep, mlflow_server):
    cwd = submitit_sweep["cwd"]
    _, children = runs_of(MlflowClient(mlflow_server.url), submitit_sweep["experiment"])
    worker_pids = {int(c.data.tags["runner.worker"].rsplit(":", 1)[1]) for c in children}
    assert len(worker_pids) == N_TRIALS  # a process per job
    queries = sorted(int(c.data.tags["runner.warehouse.feature_queries"]) for c in children)
    assert queries == [0] * (N_TRIALS - 1) + [1], queries  # one job pulled; the others read its cache entry
    assert sorted(c.data.tags["runner.cache"] for c in children) == ["hit"] * (N_TRIALS - 1) + ["miss"]
    assert len(list((cwd / "cache").rglob("*.parquet"))) == 1
    # submitit's files: one folder per job with its logs and pickled result, and each Hydra job
    # folder names the submitit job it ran in.
    (sweep_dir,) = [p.parent for p in (cwd / "multirun").rglob("multirun.yaml")]
    jobs = sorted(p for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit())
    assert len(jobs) == N_TRIALS, jobs
    for job in jobs:
        assert (job / f"{job.name}_0_result.pkl").is_file()
        assert "Job completed successfully" in (job / f"{job.name}_0_log.out").read_text()
        assert (job / f"{job.name}_0_log.err").is_file()
    hydra_ids = {
        str(yaml.safe_load((sweep_dir / str(n) / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])
        for n in range(N_TRIALS)
    }
    assert hydra_ids == {job.name for job in jobs}


def test_password_in_no_file_and_no_output(submitit_sweep):
    proc, cwd = submitit_sweep["proc"], submitit_sweep["cwd"]
    assert PASSWORD not in proc.stdout + proc.stderr
    files = [p for p in cwd.rglob("*") if p.is_file()]
    assert any(p.suffix == ".pkl" for p in files)  # submitit's pickled jobs and results are among them
    leaked = [p for p in files if PASSWORD.encode() in p.read_bytes()]
    assert not leaked, leaked


# ------------------------------------------------------------------ what submitit must not get


def test_typed_storage_password_is_refused_before_anything_runs(postgres, mlflow_server, tmp_path):
    experiment = unique("submitit-typed")
    args = base_args(postgres, mlflow_server, unique("study"), experiment, tmp_path / "cache")
    args = [a for a in args if not a.startswith("hydra.sweeper.storage=")] + [f"hydra.sweeper.storage={postgres.url()}"]
    proc = sweep(tmp_path, args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("runner: error:")]
    assert len(lines) == 1 and "hydra.sweeper.storage=" in lines[0] and "${oc.env:" in lines[0], proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob(".submitit"))
    assert MlflowClient(mlflow_server.url).get_experiment_by_name(experiment) is None  # no parent run either


def test_a_killed_job_stops_the_sweep_in_one_line_and_the_same_command_resumes(postgres, mlflow_server, tmp_path):
    """A job that dies without a result (SIGKILL here; on SLURM a time limit, OOM or preemption)."""
    study_name, experiment = unique("study"), unique("submitit-kill")
    args = base_args(postgres, mlflow_server, study_name, experiment, tmp_path / "cache", n_trials=N_JOBS)
    killed = sweep(tmp_path, args, extra_env={"RUNNER_TEST_KILL_AT": "trial_ending"})  # every job, at its trial
    assert killed.returncode == 2, killed.stderr[-3000:]
    assert "Traceback" not in killed.stderr
    (line,) = [line for line in killed.stderr.splitlines() if line.startswith("runner: error:")]
    assert "ended without a result" in line and "run the same command again" in line, line
    resumed = sweep(tmp_path, args)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"{N_JOBS}/{N_JOBS} trials finished" in resumed.stdout
    study = optuna.load_study(study_name=study_name, storage=postgres.url())
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE"] * N_JOBS + ["FAIL"] * N_JOBS, states
    assert all("stale" in t.user_attrs for t in study.trials if t.state == S.FAIL)
    parents, children = runs_of(MlflowClient(mlflow_server.url), experiment)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.info.status for c in children) == ["FAILED"] * N_JOBS + ["FINISHED"] * N_JOBS
