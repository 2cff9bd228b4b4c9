"""A damaged feature cache, end to end with `python -m runner`:
a cut-short entry or a damaged index file is one warning line and a miss, never a
pyarrow traceback; a full disk is one error naming data.cache_dir and a FAILED run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from tests.conftest import run_runner

pytestmark = pytest.mark.integration

SMALL = ["data=synthetic", "data.demo.rows=2000", "data.demo.n_features=5", "model.num_boost_round=20"]


def local_client(cwd: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlruns/mlflow.db")


def run(cwd: Path, cache: Path):
    """One run; returns (process, its MLflow run's tags, damage warning lines)."""
    res = run_runner([*SMALL, f"data.cache_dir={cache}"], cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "pyarrow" not in res.stderr, res.stderr[-3000:]
    run_id = re.search(r"runner: run ([0-9a-f]{32}) FINISHED", res.stdout).group(1)
    got = local_client(cwd).get_run(run_id)
    assert got.info.status == "FINISHED"
    damaged = [line for line in (res.stdout + res.stderr).splitlines() if " is damaged (" in line]
    return res, got.data.tags, damaged


def check_clean(cache: Path) -> None:
    """Every entry whole, no temp file."""
    entries = list(cache.rglob("*.parquet"))
    assert len(entries) == 1, entries
    assert pq.read_table(entries[0]).num_rows == 2000
    assert not list(cache.rglob("*.tmp")), sorted(cache.rglob("*"))


def test_truncated_entry_is_pulled_again(tmp_path):
    cache = tmp_path / "cache"
    _, tags, damaged = run(tmp_path, cache)
    assert tags["runner.cache"] == "miss" and not damaged
    [entry] = cache.rglob("*.parquet")
    size = entry.stat().st_size
    with open(entry, "r+b") as fh:  # a copy cut short
        fh.truncate(size - 1000)

    res, tags, damaged = run(tmp_path, cache)
    assert damaged == [
        f"runner: feature cache entry {entry} is damaged (no Parquet magic bytes at its end, {size - 1000} "
        "bytes: cut short or overwritten): removed, pulling it again"
    ], res.stderr
    assert damaged[0] in res.stderr.splitlines()
    assert tags["runner.cache"] == "miss"
    assert tags["runner.warehouse.feature_queries"] == "1"
    check_clean(cache)

    _, tags, damaged = run(tmp_path, cache)
    assert not damaged
    assert tags["runner.cache"] == "hit" and tags["runner.warehouse.feature_queries"] == "0"
    assert tags["runner.warehouse.started"] == "false"


def test_damaged_index_file_is_a_miss_of_the_index(tmp_path):
    """The index (what a warm run reads first) is garbage: one warning, the warehouse is asked
    for the key, and the entry itself, verified whole, is used (no feature query)."""
    cache = tmp_path / "cache"
    _, tags, _ = run(tmp_path, cache)
    [index] = (cache / "index").glob("embedded-*.json")
    index.write_bytes(b'{"key": "3a7f\x00\x00\x00')  # cut short by a sync tool

    res, tags, damaged = run(tmp_path, cache)
    assert len(damaged) == 1, res.stderr
    assert damaged[0].startswith(f"runner: feature cache index file {index} is damaged (not JSON: ")
    assert damaged[0] in res.stderr.splitlines()
    assert tags["runner.warehouse.started"] == "true"
    assert tags["runner.cache"] == "hit" and tags["runner.warehouse.feature_queries"] == "0"
    assert json.loads(index.read_text())["key"] == tags["runner.cache_key"]  # written again
    check_clean(cache)

    _, tags, damaged = run(tmp_path, cache)
    assert not damaged
    assert tags["runner.cache"] == "hit" and tags["runner.warehouse.started"] == "false"


def can_mount_tmpfs(where: Path) -> bool:
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o size=16k runner-probe "$0"', str(where)],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


def test_full_disk_is_one_error_and_a_failed_run(tmp_path):
    """data.cache_dir on a 32 KiB tmpfs (a private mount namespace: it goes away with the
    process) that the ~95 KB entry does not fit: ENOSPC for real."""
    cache = tmp_path / "cache"
    cache.mkdir()
    if not can_mount_tmpfs(cache):
        pytest.skip("needs root and unshare/mount for a small tmpfs")
    listing = tmp_path / "listing.txt"
    script = (
        'mount -t tmpfs -o size=32k runner-full "$0" || exit 97; l="$1"; shift; "$@"; rc=$?; find "$0" > "$l"; exit $rc'
    )
    cmd = [sys.executable, "-m", "runner", *SMALL, f"data.cache_dir={cache}"]
    res = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, str(cache), str(listing), *cmd],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 2, res.stdout + res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("runner: error:")]
    assert len(errors) == 1, res.stderr[-3000:]
    assert re.fullmatch(
        rf"runner: error: data\.cache_dir={re.escape(repr(str(cache)))} is full \(No space left on device\) "
        r"writing the feature cache entry [0-9a-f]{64}\.parquet: free space or choose another folder",
        errors[0],
    ), errors[0]
    assert "Traceback" not in res.stderr
    written = listing.read_text().split()
    assert str(cache) in written  # the listing was taken inside the tmpfs
    assert not [p for p in written if p.endswith(".tmp") or p.endswith(".parquet")], written
    assert not list(cache.rglob("*"))  # nothing reached the real folder under the mount

    client = local_client(tmp_path)
    [failed] = client.search_runs([client.get_experiment_by_name("runner").experiment_id])
    assert failed.info.status == "FAILED"
    assert failed.data.tags["runner.error"].startswith("CacheError: data.cache_dir=")
