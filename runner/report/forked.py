"""Charts drawn in forked processes while the run goes on (saving and logging its model).

Drawing is Python holding the GIL (matplotlib), so a thread would not run beside the rest of
a run's end; a forked process does, on another core. The children get the drawing functions
and the numbers they close over by fork (nothing is pickled but the PNGs coming back), and
never call LightGBM: its OpenMP pool does not survive a fork (libgomp hangs in the child),
so every prediction is made before the fork. Where fork is not the platform's way (macOS,
Windows) or one core is all there is, the charts are drawn here, when first asked for.

A chart that fails, or a child that dies, is one warning line: a chart is never worth a
failed run. A child dies with its parent (PR_SET_PDEATHSIG) and on Ctrl-C (default signal
handlers); one the parent stops waiting for (an interrupt, or TIMEOUT: a child stuck on a
lock another thread held at the fork) is killed and reaped.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import select
import signal
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

log = logging.getLogger("runner.report")

Job = Tuple[str, Callable[[], bytes]]
Outcome = Tuple[bool, object]  # (True, PNG bytes) or (False, the error's first line)
TIMEOUT = 300.0  # seconds for all the charts of one drawing (they take 1-3 s)
_LIVE: Set[int] = set()  # children not yet reaped


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _draw(jobs: Sequence[Job]) -> Dict[str, Outcome]:
    out: Dict[str, Outcome] = {}
    for name, fn in jobs:
        try:
            out[name] = (True, fn())
        except Exception as exc:  # one chart, not the others
            out[name] = (False, _first_line(exc))
    return out


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _forks() -> bool:
    return sys.platform == "linux" and hasattr(os, "fork") and _cores() > 1


def _child(jobs: Sequence[Job], write: int) -> None:
    """In the child: draw, send the PNGs, and leave without running the parent's exit code."""
    code = 1
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):  # not runner's handlers; ignored stays ignored
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
        with os.fdopen(write, "wb") as pipe:
            pickle.dump(_draw(jobs), pipe, protocol=pickle.HIGHEST_PROTOCOL)
        code = 0
    finally:
        os._exit(code)


class Drawing:
    """Charts being drawn; `wait()` gives name -> PNG for those drawn, in the jobs' order."""

    def __init__(self, jobs: Sequence[Job], processes: Optional[int] = None) -> None:
        self.jobs = list(jobs)
        self._children: List[Tuple[int, int, List[Job]]] = []  # (pid, read fd, its jobs)
        self._result: Optional[Dict[str, bytes]] = None
        if not self.jobs or not _forks():
            return
        n = max(1, min(processes or _cores(), len(self.jobs)))
        for share in (self.jobs[i::n] for i in range(n)):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child leaves through os._exit
                os.close(read)
                _child(share, write)
            os.close(write)
            _LIVE.add(pid)
            self._children.append((pid, read, share))

    def wait(self) -> Dict[str, bytes]:
        if self._result is not None:
            return self._result
        outcomes: Dict[str, Outcome] = {}
        if not self._children:
            outcomes = _draw(self.jobs)
        deadline = time.monotonic() + TIMEOUT
        try:
            while self._children:
                pid, read, share = self._children.pop(0)
                outcomes.update(_collect(pid, read, share, deadline))
        finally:
            self.cancel()
        images: Dict[str, bytes] = {}
        failed: Dict[str, List[str]] = {}  # why -> charts: a dead child is one line, not one per chart
        for name, _ in self.jobs:
            ok, value = outcomes[name]
            if ok and isinstance(value, bytes):
                images[name] = value
            else:
                failed.setdefault(str(value), []).append(name)
        for why, names in failed.items():
            log.warning(
                "runner: warning: chart%s %s not drawn: %s", "s" if len(names) > 1 else "", ", ".join(names), why
            )
        self._result = images
        return images

    def cancel(self) -> None:
        """Kill and reap the children still drawing (the caller stopped waiting)."""
        for pid, read, _ in self._children:
            _kill(pid)
            try:
                os.close(read)
            except OSError:
                pass
        self._children = []


def _collect(pid: int, read: int, share: List[Job], deadline: float) -> Dict[str, Outcome]:
    chunks: List[bytes] = []
    try:
        with os.fdopen(read, "rb", buffering=0) as pipe:
            while True:
                ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:  # stuck (a lock held by another thread at the fork): not waited for
                    _kill(pid)
                    why = f"its drawing process took over {TIMEOUT:.0f}s and was stopped"
                    return {name: (False, why) for name, _ in share}
                chunk = pipe.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    except BaseException:  # an interrupt while it draws: it is not waited for
        _kill(pid)
        raise
    _, status = os.waitpid(pid, 0)
    _LIVE.discard(pid)
    try:
        return dict(pickle.loads(b"".join(chunks)))
    except Exception:
        why = f"its drawing process ended ({_ended(status)})"
        return {name: (False, why) for name, _ in share}


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status) if os.WIFEXITED(status) else status}"


def _kill(pid: int) -> None:
    if pid not in _LIVE:
        return
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    _LIVE.discard(pid)


@atexit.register
def _reap() -> None:
    for pid in list(_LIVE):
        _kill(pid)
