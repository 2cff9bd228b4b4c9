"""Ctrl-C (SIGINT) and SIGTERM (what SLURM, Kubernetes and systemd send before they kill a
worker) as input: the first one raises Interrupted in the main thread, so every layer ends
what it holds (the run KILLED, the trial told, the cache temp file removed) and the command
line prints one line and exits 128 + the signal (130, 143); a second one exits at once."""

from __future__ import annotations

import os
import signal
from typing import Optional


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

    def install(self) -> None:
        # A SIGINT ignored at start (a background job of a non-interactive shell) stays ignored.
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            os._exit(128 + signum)  # the second signal: at once
        self.received = signum
        raise Interrupted(signum)

    def keep(self, text: str, outer: bool = False) -> None:
        """Record what was kept; the outermost layer (the sweep) overrides a trial's run."""
        if outer or self.kept is None:
            self.kept = text

    def reset(self) -> None:
        self.received = None
        self.kept = None


INTERRUPTS = Interrupts()
