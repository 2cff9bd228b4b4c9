"""runner/interrupts.py: the signal names, exit codes and the kept line's precedence
(real signals to real processes: tests/test_ctrl_c_and_sigterm.py)."""

from __future__ import annotations

import signal

import pytest

from runner.interrupts import INTERRUPTS, Interrupted, as_interrupted

pytestmark = pytest.mark.unit


def test_names_and_exit_codes():
    assert (Interrupted(signal.SIGINT).name, Interrupted(signal.SIGINT).exit_code) == ("SIGINT", 130)
    assert (Interrupted(signal.SIGTERM).name, Interrupted(signal.SIGTERM).exit_code) == ("SIGTERM", 143)
    assert isinstance(Interrupted(), KeyboardInterrupt)


def test_a_plain_keyboard_interrupt_takes_the_signal_received():
    INTERRUPTS.reset()
    try:
        assert as_interrupted(KeyboardInterrupt()).name == "SIGINT"
        INTERRUPTS.received = signal.SIGTERM
        assert as_interrupted(KeyboardInterrupt()).exit_code == 143
        own = Interrupted(signal.SIGINT)
        assert as_interrupted(own) is own
    finally:
        INTERRUPTS.reset()


def test_the_sweep_says_what_was_kept_over_its_trial():
    INTERRUPTS.reset()
    try:
        INTERRUPTS.keep("run r1 ended KILLED")
        INTERRUPTS.keep("run r2 ended KILLED")
        assert INTERRUPTS.kept == "run r1 ended KILLED"
        INTERRUPTS.keep("study 's' keeps 2/6 finished trials", outer=True)
        assert INTERRUPTS.kept == "study 's' keeps 2/6 finished trials"
    finally:
        INTERRUPTS.reset()


def _with_handlers(body):
    import sys

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    INTERRUPTS.reset()
    INTERRUPTS.install()
    try:
        body()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        sys.unraisablehook = hook
        INTERRUPTS.reset()


def test_a_signal_waits_while_the_gate_is_shut_and_is_raised_when_it_opens():
    import os

    import pytest

    def body():
        steps = []
        with pytest.raises(Interrupted) as got:
            with INTERRUPTS.deferred() as gate:
                os.kill(os.getpid(), signal.SIGTERM)  # e.g. while the run is being created
                steps.append("created")  # not cut: the signal waits
                gate.open()
                steps.append("after open")  # never reached
        assert steps == ["created"] and got.value.signum == signal.SIGTERM

    _with_handlers(body)


def test_a_signal_while_the_run_is_ended_is_raised_at_the_blocks_end():
    import os

    import pytest

    def body():
        steps = []
        with pytest.raises(Interrupted):
            with INTERRUPTS.deferred() as gate:
                gate.open()
                gate.shut()  # the finally that ends the run
                os.kill(os.getpid(), signal.SIGINT)
                steps.append("ended")
        assert steps == ["ended"] and INTERRUPTS.received == signal.SIGINT

    _with_handlers(body)


def test_a_signal_a_finalizer_swallowed_is_raised_after_it():
    """Python prints and drops what a finalizer raises (a handler can run inside SQLAlchemy's
    weakref callbacks during a garbage collection): the signal is delivered again after it."""
    import gc
    import io
    import os
    import sys
    import time

    import pytest

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs at the next bytecode, in here
            self.after = "still in the finalizer"  # not cut: what it raised is dropped

    def body():
        err, sys.stderr = sys.stderr, io.StringIO()
        try:
            steps = []
            with pytest.raises(Interrupted) as got:
                item = Finalized()
                item.cycle = item
                del item
                gc.collect()
                for _ in range(5000):  # 5 s
                    steps.append("went on")  # the signal is raised here, not lost
                    time.sleep(0.001)
            printed = sys.stderr.getvalue()
        finally:
            sys.stderr = err
        assert got.value.signum == signal.SIGINT and INTERRUPTS.received == signal.SIGINT
        assert len(steps) < 5000 and "Exception ignored" not in printed

    _with_handlers(body)
