"""Stale-trial detection of the Optuna sweeper (hydra_plugins/.../_liveness.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from hydra_plugins.runner_optuna_sweeper._liveness import is_mine, owner_info, proc_start, stale_reason

pytestmark = pytest.mark.unit

HOST = socket.gethostname()
NOW = 1_000_000.0


def _dead_pid() -> int:
    """A pid in range that no process has right now."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for pid in range(pid_max - 1, 300, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free pid")


def test_owner_info_is_this_process():
    info = owner_info()
    assert info == {"host": HOST, "pid": os.getpid(), "start": proc_start(os.getpid())}
    assert info["start"] is not None and info["start"].isdigit()
    assert is_mine({"runner.owner": info})
    assert not is_mine({"runner.owner": {**info, "pid": os.getpid() + 1}})
    assert not is_mine({"runner.owner": {**info, "host": "elsewhere.invalid"}})
    assert not is_mine({})


def test_own_trial_is_never_stale_even_without_heartbeat():
    attrs = {"runner.owner": owner_info()}
    assert stale_reason(attrs, started=NOW - 10_000, timeout=60, now=NOW) is None


def test_dead_owner_on_this_host_is_stale_at_once():
    pid = _dead_pid()
    attrs = {"runner.owner": {"host": HOST, "pid": pid, "start": "123"}, "runner.heartbeat": NOW}
    assert stale_reason(attrs, started=NOW, timeout=600, now=NOW) == f"owner process {pid} on {HOST} is gone"


def test_reused_pid_is_told_apart_by_its_start_time():
    pid = os.getppid()  # alive, and not this process
    start = proc_start(pid)
    assert start is not None
    alive = {"runner.owner": {"host": HOST, "pid": pid, "start": start}}
    assert stale_reason(alive, started=NOW - 10_000, timeout=60, now=NOW) is None  # heartbeat not consulted
    reused = {"runner.owner": {"host": HOST, "pid": pid, "start": str(int(start) + 1)}}
    assert (
        stale_reason(reused, started=NOW, timeout=600, now=NOW) == f"owner process {pid} on {HOST} is gone (pid reused)"
    )


def test_this_pid_started_again_is_not_the_owner():
    """A container restarted in its pod keeps hostname and pid (1): its predecessor's trials
    are stale at once, told apart by the recorded start time."""
    before = {"runner.owner": {**owner_info(), "start": str(int(proc_start(os.getpid()) or 0) - 1)}}
    assert not is_mine(before)
    reason = stale_reason(before, started=NOW, timeout=600, now=NOW)
    assert reason == f"owner process {os.getpid()} on {HOST} is gone (this pid, started again)"


def test_other_host_is_judged_by_its_heartbeat():
    owner = {"host": "elsewhere.invalid", "pid": os.getpid(), "start": "1"}
    old = {"runner.owner": owner, "runner.heartbeat": NOW - 1000}
    assert (
        stale_reason(old, started=NOW - 5000, timeout=600, now=NOW)
        == "no heartbeat for 1000s (> heartbeat_timeout 600s)"
    )
    fresh = {"runner.owner": owner, "runner.heartbeat": NOW - 30}
    assert stale_reason(fresh, started=NOW - 5000, timeout=600, now=NOW) is None
    # before its first beat, the trial's start stands in for the heartbeat
    assert (
        stale_reason({"runner.owner": owner}, started=NOW - 700, timeout=600, now=NOW)
        == "no heartbeat for 700s (> heartbeat_timeout 600s)"
    )
    assert stale_reason({"runner.owner": owner}, started=NOW - 100, timeout=600, now=NOW) is None
    assert stale_reason({}, started=None, timeout=600, now=NOW) is None  # nothing to judge by
