"""runner/data/cache.py: entries whole or absent, a clear error for an unusable folder,
damaged entries and index files treated as misses, a full disk as one CacheError."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.data import FeatureCache, cache_key
from runner.errors import CacheError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_cache_roundtrip_and_atomicity(tmp_path):
    cache = FeatureCache(str(tmp_path))
    table = pa.table({"a": [1, 2, 3]})
    key = cache_key({"sql": "select 1"})
    assert cache.get(key) is None
    cache.put(key, table, {"query_ids": ["q1"]})
    got, meta = cache.get(key)
    assert got.equals(table) and meta == {"query_ids": ["q1"]}

    def interrupted():
        yield table
        raise KeyboardInterrupt  # Ctrl-C while the result streams in

    key2 = cache_key({"sql": "select 2"})
    with pytest.raises(KeyboardInterrupt):
        cache.put(key2, interrupted(), {})
    assert cache.get(key2) is None
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_cache_dir_not_writable(tmp_path):
    blocked = tmp_path / "f"
    blocked.write_text("x")
    with pytest.raises(CacheError, match="data.cache_dir"):
        FeatureCache(str(blocked / "sub"))


# damaged entries --------------------------------------------------------------------


def features(rows: int = 5000) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "ID": np.arange(rows),
            **{f"F{i}": rng.standard_normal(rows) for i in range(1, 4)},
            "PLAN": [f"p{i % 3}" for i in range(rows)],
        }
    )


def filled(tmp_path, rows: int = 5000):
    cache = FeatureCache(str(tmp_path / "cache"))
    key = cache_key({"sql": f"select {rows}"})
    path = cache.put(key, features(rows), {"source": {"query": "q"}})
    return cache, key, path


def warnings(err: str):
    return [line for line in err.splitlines() if "is damaged" in line]


def flip(data: bytes, at: int, n: int = 4) -> bytes:
    return data[:at] + bytes(b ^ 0xA5 for b in data[at : at + n]) + data[at + n :]


DAMAGE = {
    "truncated-1": lambda data: data[:-1],
    "truncated-8": lambda data: data[:-8],
    "truncated-4096": lambda data: data[:-4096],
    "truncated-to-half": lambda data: data[: len(data) // 2],
    "truncated-to-11-bytes": lambda data: data[:11],
    "zero-length": lambda data: b"",
    "bytes-flipped-in-the-middle": lambda data: flip(data, len(data) // 2),
    "zeroed-block-at-a-quarter": lambda data: data[: len(data) // 4] + bytes(512) + data[len(data) // 4 + 512 :],
    "garbage-appended": lambda data: data + b"\0" * 100,
    "not-parquet": lambda data: b"<html>503 Service Unavailable</html>" * 10,
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_entry_is_a_miss_said_once_and_removed(tmp_path, capsys, damage):
    cache, key, path = filled(tmp_path)
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    assert cache.get(key) is None
    assert cache.get(key) is None  # removed: the second look is a plain miss, said nothing
    [line] = warnings(capsys.readouterr().err)
    assert line.startswith(f"runner: feature cache entry {path} is damaged (")
    assert line.endswith("): removed, pulling it again")
    assert not path.exists()
    # The next writer fills it again.
    cache.put(key, features(), {"source": {"query": "q"}})
    got, meta = cache.get(key)
    assert got.equals(features()) and meta == {"source": {"query": "q"}}


def test_damage_reasons_say_what_is_wrong(tmp_path, capsys):
    cache, key, path = filled(tmp_path)
    data = path.read_bytes()
    expected = {
        "truncated-8": "no Parquet magic bytes at its end",
        "zero-length": "0 bytes: too short for Parquet",
        "bytes-flipped-in-the-middle": "CRC checksum verification failed",
    }
    for damage, why in expected.items():
        path.write_bytes(DAMAGE[damage](data))
        assert cache.get(key) is None
        [line] = warnings(capsys.readouterr().err)
        assert why in line, line


def test_damaged_entry_is_removed_under_its_lock_without_deadlock(tmp_path, capsys):
    """load_features reads the entry again while it holds the key's lock."""
    cache, key, path = filled(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    with cache.lock(key):
        assert cache.get(key) is None
        assert not path.exists()
        cache.put(key, features(), {})
    assert cache.get(key) is not None
    assert len(warnings(capsys.readouterr().err)) == 1


def test_an_entry_replaced_since_it_was_found_damaged_is_kept(tmp_path, capsys):
    cache, key, path = filled(tmp_path)
    path.write_bytes(b"PAR1 cut")
    damaged_stat = path.stat()
    cache.put(key, features(), {})  # another process wrote the entry meanwhile
    cache._discard(cache._lock_path(key), path, damaged_stat, "test", "entry")
    got, _ = cache.get(key)
    assert got.equals(features())


def test_entry_written_without_a_recorded_check_still_reads(tmp_path, capsys):
    """The previous code wrote no page CRCs and no runner.check: valid if it reads."""
    cache = FeatureCache(str(tmp_path / "cache"))
    key = cache_key({"sql": "old"})
    path = cache.path(key)
    path.parent.mkdir(parents=True)
    table = features()
    pq.write_table(table.replace_schema_metadata({b"runner": b'{"query_ids": ["q0"]}'}), path, use_dictionary=["PLAN"])
    got, meta = cache.get(key)
    assert got.equals(table) and meta == {"query_ids": ["q0"]}
    # ... and damage to such an entry is still found by the footer check.
    path.write_bytes(path.read_bytes()[:-20])
    assert cache.get(key) is None
    assert len(warnings(capsys.readouterr().err)) == 1


def test_the_recorded_check_catches_a_changed_row_count_or_metadata(tmp_path, capsys):
    cache, key, path = filled(tmp_path, rows=100)
    table = pq.ParquetFile(path).read()  # with the key-value metadata of the file
    meta = dict(table.schema.metadata)
    # A whole, readable file whose content is not what was recorded (e.g. mixed up by a sync tool).
    pq.write_table(table.slice(0, 50).replace_schema_metadata(meta), path)
    assert cache.get(key) is None
    meta[b"runner"] = b'{"source": {"query": "other"}}'
    cache.put(key, table, {"source": {"query": "q"}})
    pq.write_table(table.replace_schema_metadata(meta), path)
    assert cache.get(key) is None
    meta.pop(b"runner")
    pq.write_table(table.replace_schema_metadata(meta), path)
    assert cache.get(key) is None
    lines = warnings(capsys.readouterr().err)
    assert len(lines) == 3 and "50 rows read, the entry recorded 100" in lines[0]
    assert "CRC32 of its metadata" in lines[1] and "no runner metadata" in lines[2]


def test_no_single_byte_change_makes_get_raise(tmp_path, capsys):
    """Every 3rd byte of a small entry changed in turn: get() returns None or the table, never raises."""
    cache, key, path = filled(tmp_path, rows=50)
    good = path.read_bytes()
    table = features(50)
    for at in range(0, len(good), 3):
        path.write_bytes(flip(good, at, 1))
        hit = cache.get(key)
        if hit is not None:
            assert hit[0].num_rows == 50 and hit[0].column_names == table.column_names
    capsys.readouterr()


# damaged index files ------------------------------------------------------------------

BAD_INDEX = {
    "empty": b"",
    "cut-short": b'{"key": "ab',
    "not-json": b"\x00\x00\x00\x00",
    "a-list": b"[1, 2]",
    "no-key": b'{"at": 1}',
    "not-a-cache-key": b'{"key": "../../../etc/passwd", "at": 1}',
    "at-not-a-time": json.dumps({"key": "a" * 64, "at": "yesterday"}).encode(),
}


@pytest.mark.parametrize("content", BAD_INDEX, ids=list(BAD_INDEX))
def test_damaged_index_is_a_miss_said_once_and_removed(tmp_path, capsys, content):
    cache, key, _ = filled(tmp_path)
    cache.remember("digest1", key)
    index = tmp_path / "cache" / "index" / "digest1.json"
    assert cache.last("digest1")[0] == key
    index.write_bytes(BAD_INDEX[content])
    assert cache.last("digest1") is None
    assert cache.last("digest1") is None
    [line] = warnings(capsys.readouterr().err)
    assert line.startswith(f"runner: feature cache index file {index} is damaged (")
    assert not index.exists()
    cache.remember("digest1", key)
    assert cache.last("digest1")[0] == key
    assert cache.get(key) is not None  # the entry itself was never touched


def test_index_of_a_removed_entry_is_a_quiet_miss(tmp_path, capsys):
    cache, key, path = filled(tmp_path)
    cache.remember("digest1", key)
    path.unlink()
    assert cache.last("digest1") is None
    assert capsys.readouterr().err == ""
    assert (tmp_path / "cache" / "index" / "digest1.json").exists()
    legacy = tmp_path / "cache" / "index" / "digest2.json"
    legacy.write_text(json.dumps({"key": key}))  # no "at"
    cache.put(key, features(), {})
    assert cache.last("digest2") == (key, 0.0)


# a full disk -------------------------------------------------------------------------

PUT = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np, pyarrow as pa
    from runner.data import FeatureCache, cache_key
    from runner.errors import CacheError
    cache = FeatureCache(sys.argv[1])
    table = pa.table({f"F{i}": np.random.default_rng(i).standard_normal(50000) for i in range(4)})
    if len(sys.argv) > 2:  # the file size limit: a write past it fails with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]),) * 2)
    try:
        cache.put(cache_key({"sql": "big"}), table, {})
    except CacheError as exc:
        print(exc)
        sys.exit(3)
    """
)


def check_full(res, cache_dir: str, listing) -> None:
    assert res.returncode == 3, res.stdout + res.stderr
    message = res.stdout.strip()
    assert message.startswith(f"data.cache_dir={cache_dir!r} is full ("), message
    assert message.endswith(": free space or choose another folder"), message
    assert not [p for p in listing if p.endswith(".tmp") or p.endswith(".parquet")], listing


def test_file_size_limit_is_a_full_cache_error(tmp_path):
    cache_dir = str(tmp_path / "cache")
    res = subprocess.run(
        [sys.executable, "-c", PUT, cache_dir, "65536"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    check_full(res, cache_dir, [str(p) for p in Path(cache_dir).rglob("*")])
    assert "(File too large)" in res.stdout


def can_mount_tmpfs(where: Path) -> bool:
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o size=16k runner-probe "$0"', str(where)],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


def test_full_filesystem_is_a_full_cache_error(tmp_path):
    """A real ENOSPC: a 64 KiB tmpfs in a private mount namespace (gone with the process)."""
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    if not can_mount_tmpfs(cache_dir):
        pytest.skip("needs root and unshare/mount for a small tmpfs")
    script = 'mount -t tmpfs -o size=64k runner-full "$0" && { "$@"; rc=$?; find "$0" >&2; exit $rc; }'
    res = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, str(cache_dir), sys.executable, "-c", PUT, str(cache_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    check_full(res, str(cache_dir), res.stderr.splitlines())
    assert "(No space left on device)" in res.stdout
    assert str(cache_dir) in res.stderr.splitlines()  # the listing ran inside the tmpfs


def test_an_entry_that_is_not_a_file_is_a_miss(tmp_path, capsys):
    cache, key, path = filled(tmp_path)
    path.unlink()
    path.mkdir()  # e.g. a sync tool's conflict folder
    assert cache.get(key) is None
    [line] = warnings(capsys.readouterr().err)
    assert f"entry {path} is damaged (Is a directory)" in line
