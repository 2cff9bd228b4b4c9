"""Who owns a RUNNING trial, and whether that owner is still alive (stale-trial detection).

A trial records its owner (host, pid, process start time) in user attribute
runner.owner and, while it runs, a heartbeat timestamp in runner.heartbeat.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Dict, Optional

from runner.names import TrialAttr


def proc_start(pid: int) -> Optional[str]:
    """Start time of a process (clock ticks since boot, Linux), to tell pid reuse apart."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
        return text.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_info() -> Dict[str, Any]:
    """This process, as recorded in a trial's runner.owner / runner.worker attribute."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": proc_start(os.getpid())}


def is_mine(attrs: Dict[str, Any]) -> bool:
    """Whether a trial's runner.owner is this process."""
    owner = attrs.get(TrialAttr.OWNER) or {}
    same = owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid()
    # A restarted container keeps its hostname and its pid (1): the start time tells them apart.
    return same and owner.get("start") in (None, proc_start(os.getpid()))


def stale_reason(
    attrs: Dict[str, Any], started: Optional[float], timeout: float, now: Optional[float] = None
) -> Optional[str]:
    """Why a RUNNING trial has no live owner, or None if it may still be running.

    attrs: the trial's user attributes; started: its start (epoch seconds), the heartbeat
    before the first beat; timeout: hydra.sweeper.heartbeat_timeout, for owners on other
    hosts (an owner on this host is checked directly).
    """
    now = now or time.time()
    owner = attrs.get(TrialAttr.OWNER) or {}
    beat = attrs.get(TrialAttr.HEARTBEAT) or started
    if owner.get("host") == socket.gethostname() and owner.get("pid"):
        pid = int(owner["pid"])
        if pid == os.getpid():
            if is_mine(attrs):
                return None  # ours (a resumed sweep never holds RUNNING trials at start)
            return f"owner process {pid} on {owner['host']} is gone (this pid, started again)"
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            return f"owner process {pid} on {owner['host']} is gone"
        if owner.get("start") and proc_start(pid) not in (None, owner["start"]):
            return f"owner process {pid} on {owner['host']} is gone (pid reused)"
        return None
    if beat is not None and now - float(beat) > timeout:
        return f"no heartbeat for {now - float(beat):.0f}s (> heartbeat_timeout {timeout:.0f}s)"
    return None
