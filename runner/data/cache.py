"""Content-addressed Parquet cache of feature results.

An entry is one Parquet file named by its key, with runner's metadata in the
file's schema metadata. It is written to a temporary file in the same folder
and renamed into place, so an entry is either whole or absent. A lock file per
key lets concurrent processes on one machine fill an entry once; a temporary file
left by a killed writer is removed by the next writer of that key (under the lock).

A small index (index/<digest>.json) maps a digest of the data config (never
credentials) to the last key pulled for it, so a run whose warehouse is unreachable
can proceed from that entry ("offline hit").
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..errors import CacheError
from ..testhooks import kill_point

FORMAT = 1
_META = b"runner"


def cache_key(parts: Dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class FeatureCache:
    def __init__(self, root: str):
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

    def get(self, key: str):
        """Return (table, meta) for a whole entry, or None."""
        import pyarrow.parquet as pq

        path = self.path(key)
        if not path.exists():
            return None
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(_META, b"{}"))
        return table.replace_schema_metadata(None), meta

    def put(self, key: str, table, meta: Dict[str, Any]) -> Path:
        import pyarrow.parquet as pq

        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Temp files of this key left by a writer killed mid-write (callers hold lock(key)).
        for stale in path.parent.glob(f".{key[:12]}.*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass
        schema_meta = dict(table.schema.metadata or {})
        schema_meta[_META] = json.dumps(meta, default=str).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:12]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                pq.write_table(
                    table.replace_schema_metadata(schema_meta), fh, use_dictionary=_dictionary_columns(table)
                )
                kill_point("feature_pull")  # test hook: temp file written, not yet renamed
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return path

    # index: data config digest -> last key ---------------------------------------

    def _index_path(self, digest: str) -> Path:
        return self.root / "index" / f"{digest}.json"

    def remember(self, digest: str, key: str) -> None:
        """Record `key` as the last entry pulled for the data config with this digest."""
        path = self._index_path(digest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".idx.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w") as fh:
                json.dump({"key": key, "at": time.time()}, fh)
            os.replace(tmp, path)
        except OSError:
            pass  # the index only helps offline runs; never fail a run for it

    def last(self, digest: str) -> Optional[Tuple[str, float]]:
        """(key, when recorded) of the last whole entry for this digest, or None."""
        try:
            info = json.loads(self._index_path(digest).read_text())
        except (OSError, ValueError):
            return None
        key = info.get("key")
        if not key or not self.path(key).exists():
            return None
        return key, float(info.get("at") or 0)

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        lock_path = self.root / key[:2] / f"{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _dictionary_columns(table) -> List[str]:
    """Columns worth Parquet dictionary encoding: text ones (categories). On float features
    it only costs: 200k x 50 doubles write in 1.4 s with it, 0.3 s without (and 12% smaller)."""
    import pyarrow as pa

    return [
        f.name
        for f in table.schema
        if pa.types.is_string(f.type)
        or pa.types.is_large_string(f.type)
        or pa.types.is_binary(f.type)
        or pa.types.is_dictionary(f.type)
    ]
