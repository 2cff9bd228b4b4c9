"""The embedded warehouse: a fakesnow server process on loopback, seeded by runner.

Reached like a real account, through the Snowflake connector and Snowpark over HTTP.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional

from ..errors import WarehouseError

if TYPE_CHECKING:
    from omegaconf import DictConfig

# fakesnow answers these statements only when told to ignore them.
_EMULATOR_NOPS = [
    r"^ALTER SESSION SET QUERY_TAG.*",
    r"^ALTER SESSION UNSET QUERY_TAG.*",
    r"^select system\$cancel_all_queries.*",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when runner dies, even by SIGKILL (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextmanager
def fakesnow_server(
    port: Optional[int] = None, timeout: float = 20.0, while_starting: Optional[Callable[[], object]] = None
) -> Iterator[int]:
    """Run fakesnow on loopback in its own process group; yield its port. It answers large
    results in chunks, as Snowflake does (runner/embedded/server.py).

    while_starting runs as soon as the process is spawned (its start takes ~1.5 s).
    fakesnow makes a temp folder at import and never removes it (one per run, in /tmp):
    the process gets a TMPDIR of its own, removed when it stops (or, after a SIGKILL, by
    the next start)."""
    port = port or free_port()
    _remove_orphan_scratch()
    scratch = tempfile.mkdtemp(prefix=f"runner-fakesnow-{os.getpid()}-")
    log_path = Path(scratch, "emulator.log")  # kept (moved under .runner/logs) only if it failed
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner.embedded.server", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
        env={**os.environ, "TMPDIR": scratch},
    )
    try:
        if while_starting is not None:
            while_starting()
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise WarehouseError(
                    f"the embedded warehouse (fakesnow) exited with code {proc.returncode}; "
                    "check that the fakesnow[server] package is installed"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise WarehouseError(
                        f"the embedded warehouse (fakesnow) did not start within {timeout:.0f}s on 127.0.0.1:{port}"
                    )
                time.sleep(0.05)
        yield port
    except WarehouseError as exc:
        # The emulator itself failed (it exited, or logged a traceback: an HTTP 500): the error
        # names its log, which is kept.
        if proc.poll() is not None or b"Traceback" in log_path.read_bytes():
            log.flush()
            kept = _keep_log(log_path)
            raise WarehouseError(f"{exc} (the embedded warehouse's log: {kept})") from exc
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _keep_log(log: Path) -> str:
    """The emulator's log copied to .runner/logs/embedded-warehouse-<pid>.log under the current
    folder (the temp folder when that cannot be written); its path."""
    folder = Path(".runner", "logs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir())
    kept = (folder / f"embedded-warehouse-{os.getpid()}.log").resolve()
    shutil.copyfile(log, kept)
    return str(kept)


def _remove_orphan_scratch() -> None:
    """Temp folders of embedded warehouses whose runner process is gone (killed)."""
    for path in Path(tempfile.gettempdir()).glob("runner-fakesnow-*-*"):
        pid = path.name.split("-")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # alive, another user's
            pass


def emulator_kwargs(port: int, data_cfg: DictConfig) -> Dict[str, Any]:
    # platform_detection_timeout_seconds=0: no probing of cloud metadata addresses at login
    # (the connector's default spends ~1.2 s on it, and the emulator is on loopback).
    return dict(
        user="fake",
        password="snow",
        account="fakesnow",
        host="127.0.0.1",
        port=port,
        protocol="http",
        network_timeout=data_cfg.network_timeout,
        platform_detection_timeout_seconds=0.0,
        session_parameters={"nop_regexes": _EMULATOR_NOPS},
    )
