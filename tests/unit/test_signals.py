"""runner/interrupts.py: the signal names, exit codes and the kept line's precedence
(real signals to real processes: tests/test_interrupts.py)."""

from __future__ import annotations

import signal

from runner.interrupts import INTERRUPTS, Interrupted, as_interrupted


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
