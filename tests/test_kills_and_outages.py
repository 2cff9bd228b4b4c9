"""A sweep killed with SIGKILL at any of six points resumes to exactly
n_trials with one parent and no duplicate or RUNNING run; a tracking-server outage is
ridden out (or stops the sweep at tracker.outage_deadline, resumable); an unreachable
warehouse fails cleanly, or serves the last cached pull. Real processes, servers, signals.

Kill points are reached through the test hook RUNNER_TEST_KILL_AT=<point>[:<n>]
(runner/testhooks.py: the process SIGKILLs itself there; unset, it costs one comparison).
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

pytestmark = pytest.mark.integration

TINY = ["data.demo.events=20000", "data.demo.customers=2000", "model.num_boost_round=20"]
N_TRIALS = 12
S = optuna.trial.TrialState
# (point, n-th time it is reached in the killed process)
# The default run covers four points; `-m kill_all` runs the other two (suite time on 2 cores).
_ALL = pytest.mark.kill_all
KILL_POINTS = [
    pytest.param("feature_pull", 1, id="feature_pull"),
    pytest.param("trial_ending", 3, id="trial"),
    # The parent run exists, the study does not record it yet: the rerun must find it.
    pytest.param("parent_started", 1, id="parent"),
    pytest.param("between_trials", 2, marks=_ALL, id="between_trials"),
    pytest.param("summary", 1, marks=_ALL, id="summary"),
    pytest.param("register", 1, id="register"),
]


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
    return [
        "sweep=lightgbm",
        *TINY,
        f"hydra.sweeper.n_trials={n_trials}",
        f"data.cache_dir={cache_dir}",
        f"hydra.sweeper.registered_model={model}",
        "tracker=server",
        f"tracker.uri={url}",
        f"tracker.experiment={experiment}",
    ]


def study_of(cwd: Path) -> optuna.Study:
    return optuna.load_study(study_name="runner-lightgbm", storage=f"sqlite:///{cwd}/.runner/optuna/runner-lightgbm.db")


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


def check_study_and_runs(
    cwd: Path, client: MlflowClient, experiment: str, model: str, parent_id: str, n_trials: int = N_TRIALS
) -> None:
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


@pytest.mark.parametrize("point,nth", KILL_POINTS)
def test_sigkill_and_resume(point, nth, tmp_path, mlflow_server, warm_cache, request):
    if point in ("between_trials", "summary") and "kill_all" not in (request.config.option.markexpr or ""):
        pytest.skip("run with -m kill_all (all six kill points)")
    experiment, model = unique(f"kill-{point}"), unique("model")
    # The feature pull needs a cold cache; the other points reuse the warm one.
    cache_dir = str(tmp_path / "cache") if point == "feature_pull" else warm_cache
    args = sweep_args(mlflow_server.url, experiment, model, cache_dir)
    client = MlflowClient(mlflow_server.url)

    killed = run_runner(args, tmp_path, env={"RUNNER_TEST_KILL_AT": f"{point}:{nth}"}, multirun=True)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    end_orphans()
    parents, _ = runs(client, experiment)
    if point == "feature_pull":
        # The pull runs in the sweep's prefetch thread, beside the study and parent-run
        # setup: the kill may land before or after the parent run exists.
        assert len(parents) <= 1
    else:
        assert len(parents) == 1
    parent_id = parents[0].info.run_id if parents else None
    if point == "feature_pull":
        assert list(Path(cache_dir).rglob("*.tmp")), "the kill should land between temp write and rename"
        assert not list(Path(cache_dir).rglob("*.parquet"))  # no partial entry

    again = run_runner(args, tmp_path, multirun=True)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Traceback" not in again.stderr
    assert f"{N_TRIALS}/{N_TRIALS} trials finished" in again.stdout
    if parent_id is None:  # created by the rerun; check_study_and_runs checks it is the only one
        parent_id = runs(client, experiment)[0][0].info.run_id
    check_study_and_runs(tmp_path, client, experiment, model, parent_id)
    check_cache(cache_dir)


# ------------------------------------------------------------------ 2. tracking outage


@pytest.fixture(scope="module")
def outage_server(tmp_path_factory):
    """A server of our own: these tests stop and start it (same port, same data)."""
    server = MlflowServer(tmp_path_factory.mktemp("outage_mlflow")).start()
    yield server
    server.stop()


def start_sweep(args, cwd: Path, env=None) -> subprocess.Popen:
    full = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "--multirun", *args],
        cwd=cwd,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_children(client: MlflowClient, experiment: str, n: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            if len([c for c in runs(client, experiment)[1] if c.info.status != "RUNNING"]) >= n:
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} finished child runs after 300s")


def test_tracking_outage_of_10s_mid_sweep(tmp_path, outage_server, warm_cache):
    experiment, model = unique("outage"), unique("model")
    client = MlflowClient(outage_server.url)
    proc = start_sweep(sweep_args(outage_server.url, experiment, model, warm_cache), tmp_path)
    try:
        wait_for_children(client, experiment, 3, proc)
        outage_server.stop()
        time.sleep(10)  # the outage: 10 s plus the server's own restart time
        outage_server.start()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-4000:]
    assert "is unreachable" in err and "reachable again" in err, err[-3000:]
    parent_id = study_of(tmp_path).user_attrs["mlflow_parent_run_id"]
    check_study_and_runs(tmp_path, client, experiment, model, parent_id)  # nothing missing, model there


def test_tracking_outage_past_the_deadline_stops_and_resumes(tmp_path, outage_server, warm_cache):
    experiment, model = unique("deadline"), unique("model")
    client = MlflowClient(outage_server.url)
    args = sweep_args(outage_server.url, experiment, model, warm_cache)
    proc = start_sweep([*args, "tracker.outage_deadline=3"], tmp_path)
    try:
        wait_for_children(client, experiment, 3, proc)
        outage_server.stop()
        out, err = proc.communicate(timeout=300)  # down for good: the sweep must give up by itself
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        outage_server.start()
    assert proc.returncode == 2, err[-4000:]
    errors = [line for line in err.splitlines() if line.startswith("runner: error:")]
    assert len(errors) == 1 and "tracker.outage_deadline=3s" in errors[0], err[-3000:]
    assert "Traceback" not in err and "is unreachable" in err
    kept = [t for t in study_of(tmp_path).trials if t.state in (S.COMPLETE, S.PRUNED)]
    assert len(kept) >= 3  # the finished trials stay in the Optuna storage

    again = run_runner(args, tmp_path, multirun=True)
    assert again.returncode == 0, again.stderr[-4000:]
    assert f"{N_TRIALS}/{N_TRIALS} trials finished" in again.stdout
    parent_id = study_of(tmp_path).user_attrs["mlflow_parent_run_id"]
    check_study_and_runs(tmp_path, client, experiment, model, parent_id)
    # the rerun says what it found: the kept trials, and any child run the outage left RUNNING
    # (ended as Optuna has it: FINISHED/KILLED with missing values filled, else FAILED)
    assert f"resumed, {len(kept)}/{N_TRIALS} trials finished" in again.stderr, again.stderr[-3000:]


# ------------------------------------------------------------------ 3. warehouse outage

NOPS = [r"^ALTER SESSION SET QUERY_TAG.*", r"^ALTER SESSION UNSET QUERY_TAG.*", r"^select system\$cancel_all_queries.*"]


def snowflake_home(root: Path, port: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    nops = ", ".join(f"'{r}'" for r in NOPS)
    path = root / "connections.toml"
    path.write_text(
        f'[test]\naccount = "fakesnow"\nuser = "fake"\npassword = "snow"\nhost = "127.0.0.1"\n'
        f'port = {port}\nprotocol = "http"\ndatabase = "DEMO"\nschema = "PUBLIC"\n'
        f"network_timeout = 3\n\n[test.session_parameters]\nnop_regexes = [{nops}]\n"
    )
    path.chmod(0o600)
    return root


def local_runs(cwd: Path):
    db = cwd / "mlruns" / "mlflow.db"
    if not db.exists():
        return []
    client = MlflowClient(f"sqlite:///{db}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_warehouse_unreachable_at_start(tmp_path):
    server = FakesnowProcess(tmp_path / "fs").start()
    server.stop()  # a warehouse that was there and is gone: nothing listens on its port
    home = snowflake_home(tmp_path / "sfhome", server.port)
    res = run_runner(
        ["data=snowflake", "data.connection_name=test", "data.cache_dir=cache", *TINY],
        tmp_path,
        env={"SNOWFLAKE_HOME": str(home)},
        timeout=300,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("runner: error:")]
    assert len(errors) == 1 and "data.connection_name=test" in errors[0], res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert not [r for r in local_runs(tmp_path) if r.info.status in ("FINISHED", "RUNNING")]


def test_warehouse_unreachable_after_the_cache_is_filled(tmp_path):
    from types import SimpleNamespace

    import snowflake.connector

    from runner.embedded.demo import seed_sql

    server = FakesnowProcess(tmp_path / "fs").start()
    try:
        conn = snowflake.connector.connect(**server.connect_kwargs())
        try:
            for stmt in seed_sql("DEMO", "PUBLIC", SimpleNamespace(seed=7, customers=2000, events=20000)):
                conn.cursor().execute(stmt)
        finally:
            conn.close()
        home = snowflake_home(tmp_path / "sfhome", server.port)
        args = ["data=snowflake", "data.connection_name=test", "data.cache_dir=cache", *TINY]
        env = {"SNOWFLAKE_HOME": str(home)}
        first = run_runner(args, tmp_path, env=env, timeout=300)
        assert first.returncode == 0, first.stderr[-3000:]
    finally:
        server.stop()
    offline = run_runner(args, tmp_path, env=env, timeout=300)
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert "warehouse unreachable" in offline.stdout and "proceeding from the feature cache" in offline.stdout
    finished = sorted((r for r in local_runs(tmp_path) if r.info.status == "FINISHED"), key=lambda r: r.info.start_time)
    assert [r.data.tags["runner.cache"] for r in finished] == ["miss", "offline-hit"]
    assert finished[0].data.tags["runner.cache_key"] == finished[1].data.tags["runner.cache_key"]
    # refresh=true asks for the warehouse itself: no silent fallback
    forced = run_runner([*args, "data.refresh=true"], tmp_path, env=env, timeout=300)
    assert forced.returncode == 2 and "data.connection_name=test" in forced.stderr
    check_cache(str(tmp_path / "cache"))


# ------------------------------------------------------------------ 6. load


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _finished(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("select count(*) from trials where state in ('COMPLETE', 'PRUNED')").fetchone()[0]
    except sqlite3.Error:
        return -1


@pytest.mark.parametrize("n_trials", [60, pytest.param(200, marks=pytest.mark.load)], ids=["60", "200"])
def test_load_sweep_memory_does_not_grow(n_trials, tmp_path, mlflow_server, warm_cache, request):
    """n_jobs=2 against a real mlflow server: every trial a child of one parent, FINISHED or
    pruned (KILLED); peak RSS (VmHWM) after 50 trials vs after all of them. The 200-trial
    run only with `-m load` (it takes minutes on 2 cores)."""
    if n_trials > 60 and "load" not in (request.config.option.markexpr or ""):
        pytest.skip("the 200-trial load sweep runs with -m load")
    experiment = unique("load")
    args = [
        "sweep=lightgbm",
        *TINY,
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.n_jobs=2",
        f"data.cache_dir={warm_cache}",
        "tracker=server",
        f"tracker.uri={mlflow_server.url}",
        f"tracker.experiment={experiment}",
        "hydra.sweeper.progress=false",
    ]
    full = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    db = tmp_path / ".runner" / "optuna" / "runner-lightgbm.db"
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "--multirun", *args], cwd=tmp_path, env=full, stdout=out, stderr=err
        )
        hwm = {}
        try:
            while True:  # wait4, not poll(): the exit's rusage (ru_maxrss) of this very child
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    break
                done = _finished(db)
                try:
                    peak = _vm_hwm_kb(proc.pid)
                except OSError:
                    continue
                for mark in (50, n_trials):
                    if mark not in hwm and done >= mark:
                        hwm[mark] = peak
                time.sleep(0.2)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, (tmp_path / "err").read_text()[-3000:]
    parents, children = runs(MlflowClient(mlflow_server.url), experiment)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == n_trials
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert Counter(c.info.status for c in children).keys() <= {"FINISHED", "KILLED"}
    assert 50 in hwm and n_trials in hwm, hwm
    mb = {k: v / 1024 for k, v in hwm.items()}
    print(
        f"\nload: {n_trials} trials, peak RSS after 50 trials {mb[50]:.0f} MB, after {n_trials} "
        f"{mb[n_trials]:.0f} MB, at exit {usage.ru_maxrss / 1024:.0f} MB"
    )
    request.node.user_properties.append(("peak_rss_mb", mb))
    assert mb[n_trials] < 1.3 * mb[50] + 50, mb
