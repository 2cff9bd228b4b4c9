"""Content-addressed Parquet cache of feature results.

An entry is one Parquet file named by its key, with runner's metadata in the
file's schema metadata. It is written to a temporary file in the same folder
and renamed into place, so an entry is either whole or absent. A lock file per
key lets concurrent processes on one machine fill an entry once; a temporary file
left by a killed writer is removed by the next writer of that key (under the lock).

A small index (index/<digest>.json) maps a digest of the data config (never
credentials) to the last key pulled for it, so a run whose warehouse is unreachable
can proceed from that entry ("offline hit").

Damage (a copy cut short, a full disk, a sync tool): an entry is written with
Parquet's own CRC32 per page and a record of its row count and a CRC32 of runner's
metadata and column names. Reading checks the footer (magic bytes, length), verifies
every page's CRC while decoding (on 200,000 x 50 doubles, 81 MB: 35 ms instead of
21 ms on one thread; a whole-file CRC32 would cost another 20 ms pass, SHA-256 45 ms)
and compares the record. A damaged entry or index file is a miss: said once on
stderr, removed under its lock, pulled again. Entries written before the record
existed are valid if they read.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Set, Tuple, Union

from ..errors import CacheError, first_line
from ..testhooks import kill_point
from .entry import Damaged, Entry, read_entry, read_index, write_entry


class _Writing:
    """Temp files being written right now. A write in a background thread (a sweep's feature
    prefetch) is cut off when an interrupted process exits: its temp file is removed at exit,
    so an interrupt leaves nothing of a half-written entry (a SIGKILL still can; the next
    writer of that key removes it)."""

    def __init__(self) -> None:
        self.paths: Set[str] = set()
        atexit.register(self.remove_all)

    def add(self, path: str) -> None:
        self.paths.add(path)

    def discard(self, path: str) -> None:
        self.paths.discard(path)

    def remove_all(self) -> None:
        for path in list(self.paths):
            try:
                os.unlink(path)
            except OSError:
                pass
        self.paths.clear()


WRITING = _Writing()

FORMAT = 1
_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_FULL_TEXT = ("no space left", "file too large", "quota exceeded")

_held = threading.local()  # lock files this thread holds (a lock is re-entered, not waited for)
_warned: Set[Tuple[str, int, int, int]] = set()  # damaged files already reported by this process


def cache_key(parts: Dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class FeatureCache:
    def __init__(self, root: str):
        self.setting = root
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"data.cache_dir={root!r} cannot be created: {exc.strerror}") from None
        # Probe with a real file: os.access says yes to root even on a read-only/immutable folder.
        try:
            fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise CacheError(
                f"data.cache_dir={root!r} is not writable ({exc.strerror}): choose another "
                "folder or fix its permissions"
            ) from None

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.parquet"

    def _lock_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.lock"

    def get(self, key: str, decode: bool = True) -> Optional[Tuple[Entry, Dict[str, Any]]]:
        """Return (table, meta) for a whole entry, or None (absent, or damaged: then reported and removed)."""
        path = self.path(key)
        for attempt in range(2):
            try:
                seen = path.stat()
            except FileNotFoundError:
                return None
            except OSError as exc:
                self._discard(self._lock_path(key), path, None, exc.strerror or first_line(exc), "entry")
                return None
            try:
                return read_entry(path, seen.st_size, decode)
            except FileNotFoundError:  # removed by another process since the stat
                return None
            except Damaged as exc:
                if attempt == 0 and _identity(path) != _identity(seen):
                    continue  # replaced by a writer while we read it: read the new entry
                self._discard(self._lock_path(key), path, seen, str(exc), "entry")
                return None
        return None

    def put(self, key: str, data: Any, meta: Union[Dict[str, Any], Callable[[], Dict[str, Any]]]) -> Path:
        """Write an entry from `data`, an Arrow table or an iterable of tables / record
        batches (a result as it streams in): into a temp file, fsynced, then renamed into
        place. An error or interrupt in `data` (a failed download, Ctrl-C) leaves no entry
        and no temp file. Callers hold lock(key)."""
        import pyarrow as pa

        path = self.path(key)
        tmp: Optional[str] = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Temp files of this key left by a writer killed mid-write.
            for stale in path.parent.glob(f".{key[:12]}.*.tmp"):
                try:
                    stale.unlink()
                except OSError:
                    pass
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:12]}.", suffix=".tmp", dir=path.parent)
            WRITING.add(tmp)
            with os.fdopen(fd, "wb") as fh:
                write_entry(fh, _from_source([data] if isinstance(data, pa.Table) else data), meta)
                kill_point("feature_pull")  # test hook: temp file written, not yet renamed
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            WRITING.discard(tmp)
            tmp = None
        except _SourceError as exc:
            raise exc.error from None  # the source's own error (a failed download), unchanged
        except OSError as exc:
            raise self._write_error(exc, "the feature cache entry " + path.name) from None
        finally:
            if tmp is not None:
                WRITING.discard(tmp)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        return path

    def _write_error(self, exc: OSError, what: str) -> CacheError:
        why = exc.strerror or first_line(exc)
        if exc.errno in _FULL or any(text in str(exc).lower() for text in _FULL_TEXT):
            return CacheError(
                f"data.cache_dir={self.setting!r} is full ({why}) writing {what}: free space or choose another folder"
            )
        return CacheError(
            f"data.cache_dir={self.setting!r}: cannot write {what} ({why}): fix the folder or choose another one"
        )

    # index: data config digest -> last key ---------------------------------------

    def _index_path(self, digest: str) -> Path:
        return self.root / "index" / f"{digest}.json"

    def remember(self, digest: str, key: str) -> None:
        """Record `key` as the last entry pulled for the data config with this digest."""
        path = self._index_path(digest)
        tmp: Optional[str] = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked(path.with_suffix(".lock")):
                fd, tmp = tempfile.mkstemp(prefix=".idx.", suffix=".tmp", dir=path.parent)
                with os.fdopen(fd, "w") as fh:
                    json.dump({"key": key, "at": time.time()}, fh)
                os.replace(tmp, path)
                tmp = None
        except (OSError, CacheError):
            pass  # the index only helps offline and warm runs; never fail a run for it
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def last(self, digest: str) -> Optional[Tuple[str, float]]:
        """(key, when recorded) of the last whole entry for this digest, or None (a damaged
        index file is reported and removed)."""
        path = self._index_path(digest)
        seen: Optional[os.stat_result] = None
        try:
            seen = path.stat()
            key, at = read_index(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, Damaged) as exc:
            why = (exc.strerror if isinstance(exc, OSError) else None) or first_line(exc)
            self._discard(path.with_suffix(".lock"), path, seen, why, "index file")
            return None
        if not self.path(key).exists():
            return None
        return key, at

    # locks and damaged files ---------------------------------------------------------

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        with self._locked(self._lock_path(key)):
            yield

    @contextmanager
    def _locked(self, lock_path: Path) -> Iterator[None]:
        held: Set[Path] = _held.__dict__.setdefault("paths", set())
        if lock_path in held:  # this thread holds it already (get() inside lock())
            yield
            return
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(lock_path, "a")
        except OSError as exc:
            raise self._write_error(exc, "the lock file " + lock_path.name) from None
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            held.add(lock_path)
            try:
                yield
            finally:
                held.discard(lock_path)
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _discard(self, lock_path: Path, path: Path, seen: Optional[os.stat_result], why: str, what: str) -> None:
        """Report a damaged file once and remove it under its lock, unless a writer has replaced it since."""
        ident = (str(path), *(_identity(seen) or (0, 0, 0)))
        if ident not in _warned:
            _warned.add(ident)
            then = "pulling it again" if what == "entry" else "asking the warehouse"
            print(
                f"runner: feature cache {what} {path} is damaged ({why}): removed, {then}", file=sys.stderr, flush=True
            )
        try:
            with self._locked(lock_path):
                if seen is None or _identity(path) == _identity(seen):
                    path.unlink()
        except (OSError, CacheError):
            pass  # gone already, or not removable: a later put() replaces it


class _SourceError(Exception):
    """An OSError raised by the data being written (e.g. a dropped connection), not by the disk."""

    def __init__(self, error: OSError) -> None:
        self.error = error


def _from_source(batches: Iterable[Any]) -> Iterator[Any]:
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except OSError as exc:
            raise _SourceError(exc) from exc
        yield batch


def _identity(what: Path | os.stat_result | None) -> Optional[Tuple[int, int, int]]:
    """Which file is (or was) there: inode, size, modification time; None if none."""
    try:
        st = what.stat() if isinstance(what, Path) else what
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns) if st is not None else None
