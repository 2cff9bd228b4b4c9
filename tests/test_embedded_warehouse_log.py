"""The embedded warehouse's own output: dropped when nothing failed, kept as
.runner/logs/embedded-warehouse-<pid>.log and named in the error when the emulator failed (here:
its process killed under a running query)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from runner.embedded.emulator import fakesnow_server
from runner.errors import WarehouseError

pytestmark = pytest.mark.integration


def _server_pid(port: int) -> int:
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"runner.embedded.server" in cmdline and str(port).encode() in cmdline:
            return int(proc.name)
    raise AssertionError(f"no embedded warehouse process on port {port}")


def test_the_log_is_removed_when_nothing_failed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with fakesnow_server():
        pass
    assert not (tmp_path / ".runner").exists()  # nothing written in the user's folder


def test_a_failed_emulator_keeps_its_log_and_the_error_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / ".runner" / "logs" / f"embedded-warehouse-{os.getpid()}.log"
    with pytest.raises(WarehouseError) as err:
        with fakesnow_server() as port:
            os.kill(_server_pid(port), signal.SIGKILL)
            time.sleep(0.5)  # the process is gone before the query's error reaches runner
            raise WarehouseError("data.table: the warehouse did not answer")
    assert str(err.value) == f"data.table: the warehouse did not answer (the embedded warehouse's log: {log})"
    assert isinstance(err.value.__cause__, WarehouseError) and log.exists()
