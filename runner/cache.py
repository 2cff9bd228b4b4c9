"""Content-addressed Parquet cache of feature results.

An entry is one Parquet file named by its key, with runner's metadata in the
file's schema metadata. It is written to a temporary file in the same folder
and renamed into place, so an entry is either whole or absent. A lock file per
key lets concurrent processes on one machine fill an entry once.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from .errors import CacheError

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
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise CacheError(f"data.cache_dir={root!r} is not writable: choose another folder")

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
        schema_meta = dict(table.schema.metadata or {})
        schema_meta[_META] = json.dumps(meta, default=str).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:12]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                pq.write_table(table.replace_schema_metadata(schema_meta), fh)
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
