"""runner/report/forked.py: charts drawn in forked processes are the charts drawn here; a
chart that fails, or a drawing process that dies, is a warning line and the rest arrive; a
drawing the caller stops waiting for leaves no process behind."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

import numpy as np
import pytest

from runner.report import charts, forked
from runner.report.forked import Drawing

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(sys.platform != "linux" or forked._cores() < 2, reason="draws in forked processes on Linux"),
]
PNG = b"\x89PNG\r\n\x1a\n"
CURVE = list(np.linspace(0.6, 0.9, 120) + np.random.default_rng(0).normal(0, 0.01, 120))


def jobs(n: int):
    return [(f"curve_{i}.png", lambda i=i: charts.learning_curve("valid_auc", CURVE, 40 + i)) for i in range(n)]


@pytest.fixture
def said():
    """What runner.report warns, as messages."""
    records: list = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("runner.report")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
        os.kill(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        return False
    return True


def test_charts_drawn_in_forked_processes_equal_the_charts_drawn_here():
    drawing = Drawing(jobs(5))
    assert len(drawing._children) == 2  # one per core here, the jobs shared between them
    images = drawing.wait()
    here = {name: fn() for name, fn in jobs(5)}
    assert list(images) == list(here)  # the jobs' order
    assert images == here and all(png.startswith(PNG) for png in images.values())
    assert drawing.wait() is images  # asked again: the same, nothing drawn twice


def test_a_failing_chart_is_a_warning_and_the_others_arrive(said):
    def broken() -> bytes:
        raise ValueError("no points to draw\nsecond line")

    images = Drawing([*jobs(2), ("broken.png", broken)]).wait()
    assert set(images) == {"curve_0.png", "curve_1.png"}
    assert [r.getMessage() for r in said] == ["runner: warning: chart broken.png not drawn: no points to draw"]


def test_a_drawing_process_that_dies_loses_its_charts_only(said):
    def die() -> bytes:
        os.kill(os.getpid(), signal.SIGKILL)
        return b""

    # Two children, the jobs dealt in turn: die.png and curve_3.png in the second.
    draw = jobs(1)[0][1]
    images = Drawing([("curve_0.png", draw), ("die.png", die), ("curve_2.png", draw), ("curve_3.png", draw)]).wait()
    assert set(images) == {"curve_0.png", "curve_2.png"}
    assert [r.getMessage() for r in said] == [
        "runner: warning: charts die.png, curve_3.png not drawn: its drawing process ended (signal 9)"
    ]


def test_a_drawing_cancelled_or_interrupted_leaves_no_process():
    drawing = Drawing([("slow.png", lambda: time.sleep(60) or b""), ("slow2.png", lambda: time.sleep(60) or b"")])
    pids = [pid for pid, _, _ in drawing._children]
    assert pids and all(alive(pid) for pid in pids)
    started = time.monotonic()
    drawing.cancel()
    assert time.monotonic() - started < 5
    assert not any(alive(pid) for pid in pids) and not forked._LIVE


def test_without_fork_the_charts_are_drawn_here_when_asked(monkeypatch):
    monkeypatch.setattr(forked, "_forks", lambda: False)
    drawn = []
    drawing = Drawing([("one.png", lambda: drawn.append(1) or PNG)])
    assert not drawing._children and not drawn  # nothing drawn until asked
    assert drawing.wait() == {"one.png": PNG} and drawn == [1]


def test_a_drawing_process_stuck_past_the_timeout_is_stopped_with_a_warning(monkeypatch, said):
    monkeypatch.setattr(forked, "TIMEOUT", 1.0)
    drawing = Drawing([("stuck.png", lambda: time.sleep(60) or b""), *jobs(1)])
    pids = [pid for pid, _, _ in drawing._children]
    started = time.monotonic()
    images = drawing.wait()
    assert time.monotonic() - started < 10
    assert set(images) == {"curve_0.png"} and not any(alive(pid) for pid in pids)
    assert [r.getMessage() for r in said] == [
        "runner: warning: chart stuck.png not drawn: its drawing process took over 1s and was stopped"
    ]
