"""Issue 6, reliability: a sweep killed with SIGKILL at five points resumes to exactly
n_trials with one parent and no duplicate or RUNNING run; a tracking-server outage is
ridden out (or stops the sweep at tracker.outage_deadline, resumable); an unreachable
warehouse fails cleanly, or serves the last cached pull. Real processes, servers, signals.

Kill points are reached through the test hook RUNNER_TEST_KILL_AT=<point>[:<n>]
(runner/cache.py: the process SIGKILLs itself there; unset, it costs one comparison).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from tests.conftest import run_runner
from tests.support.servers import FakesnowProcess, MlflowServer

TINY = ["data.demo.events=20000", "data.demo.customers=2000", "model.num_boost_round=20"]
N_TRIALS = 12
S = optuna.trial.TrialState
# (point, n-th time it is reached in the killed process)
KILL_POINTS = [("feature_pull", 1), ("trial", 3), ("between_trials", 2), ("summary", 1), ("register", 1)]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module", autouse=True)
def _adopt_orphans():
    """Become the subreaper of what runner leaves behind when it is SIGKILLed (its embedded
    fakesnow server runs in its own session), so the tests can end exactly those pids."""
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    end_orphans()


def end_orphans() -> list:
    """Kill (by pid) fakesnow processes re-parented to this test process; return their pids."""
    ended = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and b"fakesnow" in cmd:
            pid = int(entry.name)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            ended.append(pid)
    return ended


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("reliability_cache"))


def sweep_args(url: str, experiment: str, model: str, cache_dir: str, n_trials: int = N_TRIALS):
    return ["sweep=lightgbm", *TINY, f"hydra.sweeper.n_trials={n_trials}", f"data.cache_dir={cache_dir}",
            f"hydra.sweeper.registered_model={model}", "tracker=server", f"tracker.uri={url}",
            f"tracker.experiment={experiment}"]


def study_of(cwd: Path) -> optuna.Study:
    return optuna.load_study(study_name="runner-lightgbm",
                             storage=f"sqlite:///{cwd}/.runner/optuna/runner-lightgbm.db")


def runs(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], max_results=5000) if exp else []
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def check_cache(cache_dir: str) -> None:
    """Every entry reads back whole; no temp file of a killed writer is left as an entry."""
    root = Path(cache_dir)
    for path in root.rglob("*.parquet"):
        assert pq.read_table(path).num_rows > 0, path
    assert not [p for p in root.rglob("*.tmp")], sorted(root.rglob("*"))


def check_study_and_runs(cwd: Path, client: MlflowClient, experiment: str, model: str, parent_id: str,
                         n_trials: int = N_TRIALS) -> None:
    study = study_of(cwd)
    states = Counter(t.state for t in study.trials)
    assert states[S.COMPLETE] + states[S.PRUNED] == n_trials and states[S.RUNNING] == 0, states
    assert study.user_attrs["mlflow_parent_run_id"] == parent_id
    parents, children = runs(client, experiment)
    assert [p.info.run_id for p in parents] == [parent_id]
    assert parents[0].info.status == "FINISHED"
    assert not [r for r in parents + children if r.info.status == "RUNNING"]
    numbers = Counter(c.data.tags["optuna.trial_number"] for c in children)
    assert max(numbers.values()) == 1, numbers  # no duplicate child for a trial number
    by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    for t in study.trials:
        if t.state not in (S.COMPLETE, S.PRUNED):
            continue
        child = by_number[t.number]
        assert child.info.status == {S.COMPLETE: "FINISHED", S.PRUNED: "KILLED"}[t.state]
        for name, value in t.params.items():
            assert child.data.params[name] == str(value)
        if t.state == S.COMPLETE:
            assert child.data.metrics["valid_auc"] == pytest.approx(t.value)
    versions = client.search_model_versions(f"name='{model}'")
    assert len(versions) == 1, versions  # registered once, also across a kill
    assert versions[0].run_id == parents[0].data.tags["best.run_id"]


# ------------------------------------------------------------------ 1. crash and resume


@pytest.mark.parametrize("point,nth", KILL_POINTS, ids=[p for p, _ in KILL_POINTS])
def test_sigkill_and_resume(point, nth, tmp_path, mlflow_server, warm_cache):
    experiment, model = unique(f"kill-{point}"), unique("model")
    # The feature pull needs a cold cache; the other points reuse the warm one.
    cache_dir = str(tmp_path / "cache") if point == "feature_pull" else warm_cache
    args = sweep_args(mlflow_server.url, experiment, model, cache_dir)
    client = MlflowClient(mlflow_server.url)

    killed = run_runner(args, tmp_path, env={"RUNNER_TEST_KILL_AT": f"{point}:{nth}"}, multirun=True)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    end_orphans()
    parents, _ = runs(client, experiment)
    assert len(parents) == 1
    parent_id = parents[0].info.run_id
    if point == "feature_pull":
        assert list(Path(cache_dir).rglob("*.tmp")), "the kill should land between temp write and rename"
        assert not list(Path(cache_dir).rglob("*.parquet"))  # no partial entry

    again = run_runner(args, tmp_path, multirun=True)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Traceback" not in again.stderr
    assert f"{N_TRIALS}/{N_TRIALS} trials finished" in again.stdout
    check_study_and_runs(tmp_path, client, experiment, model, parent_id)
    check_cache(cache_dir)
