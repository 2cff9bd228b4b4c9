"""Test hooks, all in this module: each costs one comparison when its variable is unset.

- RUNNER_TEST_KILL_AT=<point>[:<n>]: the process SIGKILLs itself the n-th time (default
  1st) it reaches kill_point(<point>). Points: feature_pull (cache temp file written, not
  renamed), between_trials, summary, register, and the run lifecycle's (runner/tracking/
  lifecycle.py) <kind>_started (the run exists, its owner does not know it yet) and
  <kind>_ending (logged, the run not ended) for the kinds run, trial, parent, grid_parent,
  score, filled: e.g. trial_ending, parent_started.
- RUNNER_TEST_BARRIER=<point>:<dir>:<n>: barrier(<point>) waits until n processes have
  reached it (at most 120 s), so tests can make workers race on purpose, or hold a process
  at a point while they change the world around it. Points: parent, summary, score (a
  scoring run exists, nothing scored yet).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Dict, Optional

from . import env


class _Hooks:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Read the variables again (tests that set them in this process)."""
        self.kill_at: Optional[str] = os.environ.get(env.TEST_KILL_AT) or None
        self.barrier_at: Optional[str] = os.environ.get(env.TEST_BARRIER) or None
        self.hits: Dict[str, int] = {}


HOOKS = _Hooks()


def kill_point(name: str) -> None:
    """SIGKILL this process here if RUNNER_TEST_KILL_AT names this point."""
    if HOOKS.kill_at is None:
        return
    point, _, nth = HOOKS.kill_at.partition(":")
    if point != name:
        return
    HOOKS.hits[name] = HOOKS.hits.get(name, 0) + 1
    if HOOKS.hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def barrier(name: str) -> None:
    """Wait here until as many processes as RUNNER_TEST_BARRIER says have reached it."""
    if HOOKS.barrier_at is None or not HOOKS.barrier_at.startswith(name + ":"):
        return
    folder, _, n = HOOKS.barrier_at[len(name) + 1 :].rpartition(":")
    Path(folder).mkdir(parents=True, exist_ok=True)
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(Path(folder).iterdir())) < int(n) and time.monotonic() < deadline:
        time.sleep(0.05)
