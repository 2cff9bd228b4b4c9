"""Peak memory of a process and its children, for benchmarks/memory_large.py: VmHWM polled
from /proc, wait4's ru_maxrss, and what a run reported (its phases, its cache outcome)."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

MB = 1 << 20
WAREHOUSE = b"runner.embedded.server"


# ---------------------------------------------------------------- /proc


def _hwm(pid: int) -> int:
    """VmHWM of pid in bytes; 0 if gone or a zombie (its memory is released at exit)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _descendants(pid: int) -> List[int]:
    out: List[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    kids = [int(x) for x in fh.read().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# ---------------------------------------------------------------- one measured process


@dataclass
class Measured:
    exit_code: int
    wall: float
    spawned: float  # epoch seconds just before the spawn
    runner_peak: int  # bytes: the best of the two below (peak_source says which)
    peak_source: str
    runner_hwm_polled: int
    wait4_maxrss: int  # max(runner, every child it reaped): Linux's ru_maxrss of wait4
    warehouse_peak: Optional[int]  # None: no warehouse process seen
    other_peak: int  # the largest other descendant seen
    other_cmd: str
    killed: Optional[str] = None
    stdout: str = ""
    stderr: str = ""


def measure(
    cmd: List[str],
    cwd: Path,
    logs: Path,
    env: Dict[str, str],
    interval: float,
    timeout: float,
    forbid_warehouse: bool = False,
    echo_stderr: bool = False,
) -> Measured:
    """Run cmd in cwd (its own session): wall time, exit code, peak RSS of it (wait4 / VmHWM)
    and of its descendants (VmHWM, polled); its output in logs/stdout.txt and stderr.txt.
    forbid_warehouse: kill it if it starts the embedded warehouse. echo_stderr: its stderr
    to ours (progress)."""
    cwd.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "stdout.txt", logs / "stderr.txt"
    peaks = {"runner": 0, "warehouse": -1, "other": 0}
    other = [""]  # the command line of the largest other descendant
    killed: List[str] = []
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        spawned = time.time()
        started = time.perf_counter()
        errors = None if echo_stderr else err
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=errors, start_new_session=True)
        done = threading.Event()

        def kill(why: str) -> None:
            if not killed:
                killed.append(why)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

        def sample() -> None:
            while not done.is_set():
                peaks["runner"] = max(peaks["runner"], _hwm(proc.pid))
                for child in _descendants(proc.pid):
                    if WAREHOUSE in _cmdline(child):
                        peaks["warehouse"] = max(peaks["warehouse"], _hwm(child))
                        if forbid_warehouse:
                            kill("it started the embedded warehouse on a seeded cache (the index did not match)")
                    elif _hwm(child) > peaks["other"]:
                        peaks["other"] = _hwm(child)
                        other[0] = _cmdline(child).replace(b"\0", b" ").decode(errors="replace")[:200]
                if time.perf_counter() - started > timeout:
                    kill(f"timeout after {timeout:.0f} s")
                done.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            done.set()
            sampler.join()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    try:  # a leftover warehouse of a crashed run must not outlive it
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    maxrss = usage.ru_maxrss * 1024  # kB on Linux
    seen_children = max(peaks["warehouse"], peaks["other"], 0)
    if maxrss > peaks["runner"] and maxrss > seen_children:
        best, source = maxrss, "wait4"  # above anything a child reached: runner's own, exact
    else:
        best, source = peaks["runner"], "polled"
    return Measured(
        exit_code=proc.returncode,
        wall=wall,
        spawned=spawned,
        runner_peak=best,
        peak_source=source,
        runner_hwm_polled=peaks["runner"],
        wait4_maxrss=maxrss,
        warehouse_peak=peaks["warehouse"] if peaks["warehouse"] >= 0 else None,
        other_peak=peaks["other"],
        other_cmd=other[0],
        killed=killed[0] if killed else None,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


# ---------------------------------------------------------------- what runner reports


def phases(m: Measured) -> Dict[str, float]:
    """Seconds runner reports: its stdout, and every *_seconds metric of the runs this process
    created in a local SQLite MLflow store (the largest per name: a sweep's trials share one pull)."""
    out: Dict[str, float] = {}
    found = re.search(r"runner: run \w+ \w+ in ([\d.]+)s", m.stdout)
    if found:
        out["run_seconds"] = float(found.group(1))
    found = re.search(r"trials in ([\d.]+)s \(trial loop ([\d.]+)s\)", m.stdout)
    if found:
        out["sweep_seconds"], out["trial_loop_seconds"] = float(found.group(1)), float(found.group(2))
    store = re.search(r"sqlite:///(\S+?\.db)\b", m.stdout)
    if store and Path(store.group(1)).exists():
        try:
            with sqlite3.connect(f"file:{store.group(1)}?mode=ro", uri=True) as db:
                rows = db.execute(
                    "select m.key, max(m.value) from latest_metrics m join runs r on r.run_uuid = m.run_uuid "
                    "where r.start_time >= ? and m.key like '%seconds' group by m.key",
                    (int((m.spawned - 1) * 1000),),
                ).fetchall()
            for key, value in rows:
                out.setdefault(key, float(value))
        except sqlite3.Error:
            pass
    return out


def cache_outcome(m: Measured) -> str:
    """hit / miss from the single run's line; a sweep reports its feature queries."""
    found = re.search(r"features: cache (hit|miss), (\d+) feature queries", m.stdout)
    if found:
        return found.group(1)
    found = re.search(r"trials in [\d.]+s \(trial loop [\d.]+s\), (\d+) feature queries", m.stdout)
    if found:
        return "hit" if found.group(1) == "0" else f"{found.group(1)} queries"
    return "?"


def commit_of(repo: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+dirty" if dirty else "")


# ---------------------------------------------------------------- the cases
