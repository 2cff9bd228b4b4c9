"""The sweeper's Optuna storage and study lock (hydra_plugins/.../_storage.py)."""

from __future__ import annotations

import fcntl
import threading
import time

import pytest

from hydra_plugins.runner_optuna_sweeper._storage import lock_file, make_storage, safe_name, study_lock
from runner.errors import ConfigError

pytestmark = pytest.mark.unit


def _free(path) -> bool:
    """Whether another holder could take the lock file right now (a separate open file)."""
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


@pytest.mark.parametrize("form", ["sqlite", "journal", "journal-slashes"])
def test_study_lock_excludes_a_second_holder(tmp_path, form):
    target = tmp_path / "sub" / "study.db"
    url = {
        "sqlite": f"sqlite:///{target}?timeout=5",
        "journal": f"journal:{target}",
        "journal-slashes": f"journal://{target}",
    }[form]
    path = lock_file(url)
    assert path == f"{target}.runner-lock"

    entered = threading.Event()

    def second() -> None:
        with study_lock(url, "s"):
            entered.set()

    with study_lock(url, "s"):
        assert not _free(path)
        waiter = threading.Thread(target=second, daemon=True)
        waiter.start()
        assert not entered.wait(0.3)  # blocked while we hold it
    assert entered.wait(5)  # and gets it once released
    waiter.join(5)
    assert _free(path)


def test_study_lock_is_released_when_the_body_raises(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with pytest.raises(RuntimeError):
        with study_lock(url, "s"):
            raise RuntimeError("boom")
    assert _free(lock_file(url))


def test_no_lock_file_for_memory_or_server_storages():
    assert lock_file("sqlite:///:memory:") is None
    assert lock_file("postgresql://u:p@h/db") is None
    assert lock_file("redis://h") is None


def test_make_storage_opens_sqlite_and_journal(tmp_path):
    import optuna

    rdb = make_storage(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(rdb, optuna.storages.RDBStorage)
    journal = make_storage(f"journal:{tmp_path / 'deeper' / 'x.log'}")
    assert isinstance(journal, optuna.storages.JournalStorage)
    assert (tmp_path / "deeper").is_dir()


def test_make_storage_error_names_the_setting_and_redacts_the_password():
    with pytest.raises(ConfigError) as err:
        make_storage("nosuchdb://alice:s3cr3tpw@db.invalid/optuna")
    text = str(err.value)
    assert text.startswith(
        "hydra.sweeper.storage=nosuchdb://alice:***@db.invalid/optuna: cannot open the Optuna storage: "
    )
    assert "s3cr3tpw" not in text


def test_server_lock_connect_error_names_the_setting_and_redacts_the_password():
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        with study_lock("postgresql+psycopg2://alice:s3cr3tpw@127.0.0.1:1/optuna", "s"):
            pass
    text = str(err.value)
    assert text.startswith(
        "hydra.sweeper.storage=postgresql+psycopg2://alice:***@127.0.0.1:1/optuna: cannot connect for the study lock: "
    )
    assert "s3cr3tpw" not in text
    assert time.monotonic() - started < 5


def test_safe_name():
    assert safe_name("runner-lightgbm") == "runner-lightgbm"
    assert safe_name("a b/c:d") == "a_b_c_d"
    assert safe_name("../..") == "study"
