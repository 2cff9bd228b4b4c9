"""Measuring a process: wall time, output, peak RSS of its tree (sampled) and of itself."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children(pid: int) -> List[int]:
    out: List[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    out += [int(p) for p in fh.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree_rss(pid: int) -> int:
    """Resident bytes of pid and all its descendants, from /proc."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        todo += _children(p)
    return total


@dataclass
class Proc:
    returncode: int
    wall: float
    stdout: str
    stderr: str
    peak_tree: int  # bytes
    peak_main: int  # bytes
    spawned: float  # time.time() just before the spawn (to place the process's own timestamps)


def run_measured(cmd: List[str], cwd: Path, env: Dict[str, str], timeout: float = 7200) -> Proc:
    """Run cmd; wall time, output, peak RSS of its process tree (sampled) and of itself."""
    cwd.mkdir(parents=True, exist_ok=True)
    out_path, err_path = cwd / "stdout.txt", cwd / "stderr.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        spawned = time.time()
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss(proc.pid))
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            deadline = time.monotonic() + timeout
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    os.killpg(proc.pid, 9)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.02)
        finally:
            done.set()
            sampler.join()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    # A leftover grandchild (the embedded warehouse of a crashed run) must not outlive us.
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    main = usage.ru_maxrss * 1024  # kB on Linux
    return Proc(
        proc.returncode,
        wall,
        out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"),
        max(peak[0], main),
        main,
        spawned,
    )


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
