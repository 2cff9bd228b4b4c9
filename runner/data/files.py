"""Local files a feature definition depends on: data.files (loaded as tables of the embedded
warehouse) and data.inputs (read by a feature function or query itself).

Their content is part of the data version: each file's SHA-256 of its bytes (~0.8 s per GB
here, page-cached; benchmarks/README.md), computed once per process for a file's (size,
mtime, ctime, inode), so an edited file is never served from the feature cache.
"""

from __future__ import annotations

import glob
import hashlib
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

PATH_TABLE = "DATA"  # the table data.path (one file, data=file) is loaded as
FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSED = (".gz", ".zst")


@dataclass(frozen=True)
class LocalFile:
    """One file behind a table of data.files (table set) or behind data.inputs (table None)."""

    path: str
    size: int
    sha256: str
    table: Optional[str] = None

    def describe(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.table is not None:
            out["table"] = self.table
        return out


def file_format(path: str) -> Optional[str]:
    """csv or parquet from a file's name (a .gz/.zst CSV is CSV), None if neither."""
    name = path.lower()
    for ext in _COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
    return FORMATS.get(os.path.splitext(name)[1])


def absolute(pattern: str) -> str:
    """A path or glob as given, relative to the folder runner was started in."""
    try:
        from hydra.utils import to_absolute_path

        return to_absolute_path(os.path.expanduser(pattern))
    except ImportError:  # pragma: no cover - hydra is a dependency
        return os.path.abspath(os.path.expanduser(pattern))


def matches(pattern: str, setting: str) -> List[str]:
    """The files a path or glob names, sorted; a ConfigError naming `setting` if none."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigError(f"{setting}={pattern!r} is not a file path or glob")
    full = absolute(pattern)
    found = sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p))
    if not found:
        what = "no file matches" if glob.has_magic(full) else "no such file"
        raise ConfigError(f"{setting}={pattern!r}: {what} ({full})")
    return found


_DIGESTS: Dict[Tuple[str, int, int, int, int], str] = {}
_DIGEST_LOCK = threading.Lock()


def sha256_of(path: str) -> Tuple[int, str]:
    """(size, SHA-256 hex) of a file's bytes, once per process per (size, mtime, ctime, inode):
    a write moves ctime, which no tool can set back."""
    st = os.stat(path)
    stamp = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    with _DIGEST_LOCK:
        known = _DIGESTS.get(stamp)
    if known is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        known = h.hexdigest()
        with _DIGEST_LOCK:
            _DIGESTS[stamp] = known
    return st.st_size, known


def stat_signature(data_cfg: DictConfig) -> List[Tuple[str, int, int, int]]:
    """(path, size, mtime, ctime) of every declared file: a cheap in-process check that none changed."""
    out = []
    for path, _table, _setting in _declared(data_cfg):
        st = os.stat(path)
        out.append((path, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return out


def local_files(data_cfg: DictConfig) -> List[LocalFile]:
    """Every file of data.files and data.inputs, with its size and digest."""
    out = []
    for path, table, _setting in _declared(data_cfg):
        size, digest = sha256_of(path)
        out.append(LocalFile(path, size, digest, table))
    return out


def files_version(files: List[LocalFile]) -> str:
    """The part of the data version the local files decide (empty without any)."""
    if not files:
        return ""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.table or ''}\0{f.path}\0{f.size}\0{f.sha256}\n".encode())
    return "files:" + h.hexdigest()[:32]


def file_tables(data_cfg: DictConfig) -> Dict[str, Tuple[str, str]]:
    """{table: (path or glob, its setting)}: data.files, and data.path as table DATA."""
    out = {
        str(table): (str(pattern), f"data.files.{table}") for table, pattern in (data_cfg.get("files") or {}).items()
    }
    if data_cfg.get("path"):
        if PATH_TABLE in {t.strip('"').upper() for t in out}:
            raise ConfigError(f"data.path loads table {PATH_TABLE}, which data.files also names: set one of them")
        out[PATH_TABLE] = (str(data_cfg.path), "data.path")
    return out


def _declared(data_cfg: DictConfig) -> List[Tuple[str, Optional[str], str]]:
    out: List[Tuple[str, Optional[str], str]] = []
    for table, (pattern, setting) in file_tables(data_cfg).items():
        for path in matches(pattern, setting):
            out.append((path, str(table), setting))
    for i, pattern in enumerate(data_cfg.get("inputs") or []):
        setting = f"data.inputs[{i}]"
        for path in matches(pattern, setting):
            out.append((path, None, setting))
    return out


def check_files(data_cfg: DictConfig) -> None:
    """data.files and data.inputs name existing files of a format runner loads (no reading)."""
    for path, table, setting in _declared(data_cfg):
        if table is not None and file_format(path) is None:
            raise ConfigError(
                f"{setting}: {path} is neither CSV (.csv, .tsv, .txt, optionally .gz/.zst) nor Parquet "
                "(.parquet, .pq): convert it, or rename it if it is one of them"
            )
