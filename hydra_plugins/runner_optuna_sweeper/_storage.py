"""The Optuna storage of a study: its URL, opening it and the study, and the study lock."""

from __future__ import annotations

import hashlib
import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

from runner.errors import ConfigError, first_line
from runner.secrets import redact_url, scrub

if TYPE_CHECKING:
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.storages import BaseStorage

log = logging.getLogger("runner.sweep")


def safe_name(name: str) -> str:
    """A study name usable as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"


def storage_url(setting: Optional[str], study_name: str) -> str:
    """hydra.sweeper.storage, or a SQLite file .runner/optuna/<study>.db under the current directory."""
    url = setting or "sqlite:///" + str((Path.cwd() / ".runner" / "optuna" / f"{safe_name(study_name)}.db").resolve())
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return url


def _journal_path(url: str) -> str:
    path = url[len("journal:") :]
    return path[2:] if path.startswith("//") else path


def make_storage(url: str) -> BaseStorage:
    """An Optuna storage for a URL: journal:PATH (JournalFileBackend) or any RDB URL."""
    import optuna

    shown = redact_url(url)
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = _journal_path(url)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(path))
        kwargs: Dict[str, Any] = {}
        if url.startswith("sqlite:"):
            # Several worker threads write: wait for the file lock instead of failing.
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        # Workers starting together on an empty database would race creating Optuna's tables
        # (PostgreSQL: UniqueViolation on pg_type): one creates them, the others wait.
        with study_lock(url, "<optuna schema>"):
            return optuna.storages.RDBStorage(url, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"hydra.sweeper.storage={shown}: cannot open the Optuna storage: {scrub(first_line(exc), [url])[:300]}"
        ) from None


def open_study(
    url: str, study_name: str, sampler: Optional[BaseSampler], pruner: Optional[BasePruner], directions: List[str]
) -> Tuple[Any, Any]:
    """The storage and the study (created, or loaded to resume it), checked to optimize
    `directions`. The sweeper keeps the storage for its public per-trial API (setting a
    trial's attributes and state from another thread than the one that asked it)."""
    import optuna

    shown = redact_url(url)
    storage = make_storage(url)
    try:
        study = optuna.create_study(
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            study_name=study_name,
            load_if_exists=True,
            **({"direction": directions[0]} if len(directions) == 1 else {"directions": directions}),
        )
    except Exception as exc:
        raise ConfigError(
            f"hydra.sweeper.storage={shown}: cannot open study {study_name!r}: {scrub(first_line(exc), [url])}"
        ) from None
    have = [d.name.lower() for d in study.directions]
    if have != directions:
        raise ConfigError(
            f"study {study_name!r} in {shown} optimizes {have}, not {directions}: "
            "set hydra.sweeper.direction to match, or a new hydra.sweeper.study_name"
        )
    return storage, study


@contextmanager
def study_lock(url: str, study_name: str, timeout: float = 600.0) -> Iterator[None]:
    """Mutual exclusion between every process sharing the study's storage, for the
    sweep's once-per-study steps (creating the parent run, the summary/registration).

    PostgreSQL: a session-level advisory lock (pg_advisory_lock on a key hashed from
    the study name) on its own connection; MySQL/MariaDB: GET_LOCK. The server drops
    either when the holder's connection closes, so a killed worker never leaves it
    held. SQLite file / journal file (one machine): fcntl lock on a file beside it.
    Other storages: no lock (a warning; start workers one at a time there).
    """
    name = f"runner_optuna:{study_name}"
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    if url.startswith(("postgresql", "postgres", "mysql", "mariadb")):
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        pg = url.startswith("postgres")
        try:
            engine = sqlalchemy.create_engine(url, poolclass=NullPool)
            conn = engine.connect()
        except Exception as exc:
            raise ConfigError(
                f"hydra.sweeper.storage={redact_url(url)}: cannot connect for the study lock: "
                f"{scrub(first_line(exc), [url])[:300]}"
            ) from None
        try:
            if pg:
                key = int.from_bytes(digest, "big", signed=True)
                conn.execute(sqlalchemy.text(f"SET lock_timeout = '{int(timeout * 1000)}ms'"))
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            else:
                got = conn.execute(
                    sqlalchemy.text("SELECT GET_LOCK(:n, :t)"),
                    {"n": "runner_optuna:" + digest.hex(), "t": int(timeout)},
                ).scalar()
                if got != 1:
                    raise ConfigError(f"study {study_name!r}: the study lock was not free within {timeout:.0f}s")
            conn.commit()  # the lock is per session: it outlives this transaction
            yield
        finally:
            conn.close()  # releases the lock (session end)
            engine.dispose()
        return
    path = lock_file(url)
    if path is None:
        if not url.startswith("sqlite"):
            log.warning(
                "storage %s: no cross-process lock for the parent run and summary; start workers one at a time",
                redact_url(url).split(":", 1)[0],
            )
        yield
        return
    import fcntl

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_file(url: str) -> Optional[str]:
    """The file study_lock locks for a SQLite file or journal URL (None: no file lock)."""
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return url[len("sqlite:///") :].split("?", 1)[0] + ".runner-lock"
    if url.startswith("journal:"):
        return _journal_path(url) + ".runner-lock"
    return None
