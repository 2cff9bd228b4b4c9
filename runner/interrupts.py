"""Ctrl-C (SIGINT) and SIGTERM (what SLURM, Kubernetes and systemd send before they kill a
worker) as input: the first one raises Interrupted in the main thread, so every layer ends
what it holds (the run KILLED, the trial told, the cache temp file removed) and the command
line prints one line and exits 128 + the signal (130, 143); a second one exits at once."""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Optional


class Interrupted(KeyboardInterrupt):
    """The process got SIGINT or SIGTERM."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def as_interrupted(exc: BaseException) -> Interrupted:
    """A plain KeyboardInterrupt (Python's own SIGINT handler, a notebook, or a library that
    re-raised its own) as Interrupted, with the signal this process actually received."""
    if isinstance(exc, Interrupted):
        return exc
    return Interrupted(INTERRUPTS.received or signal.SIGINT)


class Interrupts:
    """The process's signal handlers for SIGINT and SIGTERM (the command line installs them;
    the Python API leaves a notebook's own handling alone)."""

    def __init__(self) -> None:
        self.received: Optional[int] = None  # the first signal's number
        # What was kept, said by the layer that ended it (the run, the sweep), for the one line.
        self.kept: Optional[str] = None
        self._held = 0  # > 0: the main thread is in a step a signal must not cut (see deferred)
        self._pending: Optional[int] = None
        self._lost = False  # the first signal's Interrupted was dropped by a finalizer
        self._hook = sys.unraisablehook
        self._again = threading.Event()  # set: the first signal is to be delivered again
        self._redeliverer: Optional[threading.Thread] = None

    def install(self) -> None:
        # A SIGINT ignored at start (a background job of a non-interactive shell) stays ignored.
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)
        if sys.unraisablehook != self._unraisable:
            self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        if self._redeliverer is None:
            self._redeliverer = threading.Thread(target=self._deliver_again, name="runner-interrupts", daemon=True)
            self._redeliverer.start()

    def _handle(self, signum: int, frame: object) -> None:
        if self._lost:
            if _inside(frame, Interrupts._unraisable.__code__):
                self._again.set()  # still in the hook: again, once it has returned
                return
            self._lost = False  # the first signal again, delivered outside the finalizer
        elif self.received is not None:
            os._exit(128 + signum)  # the second signal: at once
        self.received = signum
        if self._held:
            self._pending = signum  # raised when the step is done (Gate.open, or the block's end)
            return
        raise Interrupted(signum)

    def _unraisable(self, args: sys.UnraisableHookArgs) -> None:
        # A handler that ran inside a finalizer (a weakref callback, __del__, e.g. SQLAlchemy's
        # during a garbage collection) raised there, and Python prints and drops what a
        # finalizer raises: deliver the signal again, to run once the finalizer is done.
        # The delivery comes from another thread: a signal set from here would be handled
        # here, inside the finalizer again.
        exc = args.exc_value
        if isinstance(exc, Interrupted) and exc.signum == self.received:
            self._lost = True
            self._again.set()
            return
        self._hook(args)

    def _deliver_again(self) -> None:
        while True:
            self._again.wait()
            self._again.clear()
            if self._lost and self.received is not None:
                _thread.interrupt_main(signal.Signals(self.received))

    @contextmanager
    def deferred(self) -> Iterator[Gate]:
        """In the main thread, a first signal waits while the gate is shut: from the block's
        start until gate.open(), and again from gate.shut() to the block's end, where it is
        raised. For steps that must not be cut in half, e.g. a run created on the tracking
        server but not yet inside the try that ends it, or the request that ends it. A
        second signal still exits at once. Elsewhere (other threads) a no-op."""
        gate = Gate(self if threading.current_thread() is threading.main_thread() else None)
        gate.shut()
        try:
            yield gate
        finally:
            gate.open()

    def _release(self) -> None:
        self._held -= 1
        if not self._held and self._pending is not None:
            signum, self._pending = self._pending, None
            raise Interrupted(signum)

    def keep(self, text: str, outer: bool = False) -> None:
        """Record what was kept; the outermost layer (the sweep) overrides a trial's run."""
        if outer or self.kept is None:
            self.kept = text

    def reset(self) -> None:
        self.received = None
        self.kept = None
        self._held = 0
        self._pending = None
        self._lost = False


class Gate:
    """Interrupts.deferred's gate: shut, a signal waits; open() raises one that came."""

    def __init__(self, owner: Optional[Interrupts]) -> None:
        self.owner = owner
        self.is_shut = False

    def shut(self) -> None:
        if self.owner is not None and not self.is_shut:
            self.is_shut = True
            self.owner._held += 1

    def open(self) -> None:
        if self.owner is not None and self.is_shut:
            self.is_shut = False
            self.owner._release()


def _inside(frame: object, code: object) -> bool:
    while frame is not None:
        if getattr(frame, "f_code", None) is code:
            return True
        frame = getattr(frame, "f_back", None)
    return False


INTERRUPTS = Interrupts()
