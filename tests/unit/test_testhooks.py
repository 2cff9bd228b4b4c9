"""runner/testhooks.py: inert when unset, exact when set."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from runner import env, testhooks

pytestmark = pytest.mark.unit


def test_unset_hooks_do_nothing(monkeypatch):
    monkeypatch.delenv(env.TEST_KILL_AT, raising=False)
    monkeypatch.delenv(env.TEST_BARRIER, raising=False)
    testhooks.HOOKS.reset()
    testhooks.kill_point("trial")
    started = time.monotonic()
    testhooks.barrier("parent")
    assert time.monotonic() - started < 0.5 and testhooks.HOOKS.hits == {}


def test_kill_point_kills_at_the_nth_hit_only():
    code = (
        "from runner import testhooks\n"
        "testhooks.kill_point('summary')\n"
        "for i in range(3):\n"
        "    print(i, flush=True)\n"
        "    testhooks.kill_point('trial')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": "", env.TEST_KILL_AT: "trial:2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -9 and proc.stdout.split() == ["0", "1"]


def test_barrier_waits_for_n_processes(monkeypatch, tmp_path):
    folder = tmp_path / "b"
    monkeypatch.setenv(env.TEST_BARRIER, f"parent:{folder}:2")
    testhooks.HOOKS.reset()
    try:
        other = subprocess.Popen([sys.executable, "-c", "from runner import testhooks; testhooks.barrier('parent')"])
        testhooks.barrier("other-point")  # another point: no wait
        testhooks.barrier("parent")  # returns once the other process has arrived too
        assert other.wait(60) == 0
        assert len(list(folder.iterdir())) == 2
    finally:
        monkeypatch.delenv(env.TEST_BARRIER)
        testhooks.HOOKS.reset()
