"""Warehouse sessions: the embedded fakesnow server or a real Snowflake account.

Both are reached the same way: the real Snowflake connector and a Snowpark
Session over the wire. Credentials are read by the connector from
connections.toml or SNOWFLAKE_* variables and never pass through our config.

A real account's session runs no query until the caller has set the query tag
(Warehouse.set_query_tag): account, database and schema are looked up lazily,
so every statement of a run carries the tag in the warehouse's query history.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from .errors import ConfigError, WarehouseError

log = logging.getLogger(__name__)

# fakesnow answers these two statements only when told to ignore them.
_EMULATOR_NOPS = [r"^ALTER SESSION SET QUERY_TAG.*", r"^ALTER SESSION UNSET QUERY_TAG.*",
                  r"^select system\$cancel_all_queries.*"]
_ENV_KEYS = ("account", "user", "password", "host", "port", "protocol", "role", "warehouse",
             "database", "schema", "authenticator", "private_key_file", "private_key_file_pwd",
             "token")
_SECRET_KEYS = ("password", "token", "private_key_file_pwd", "passcode", "private_key")


@dataclass
class Warehouse:
    session: Any
    account: Optional[str] = None
    database: Optional[str] = None
    schema: Optional[str] = None
    # Data version for the cache key when the backend knows it without asking.
    known_version: Optional[str] = None
    query_tag: Optional[str] = None

    def set_query_tag(self, tag: str) -> None:
        """Tag every later statement of this session (ALTER SESSION SET QUERY_TAG)."""
        if tag and tag != self.query_tag:
            self.session.query_tag = tag
            self.query_tag = tag

    def _resolve(self) -> None:
        if self.account and self.database and self.schema:
            return
        session = self.session
        self.account = self.account or (session.get_current_account() or "").strip('"')
        self.database = self.database or (session.get_current_database() or "").strip('"')
        self.schema = self.schema or (session.get_current_schema() or "").strip('"')
        if not self.database or not self.schema:
            raise ConfigError("no current database/schema in the Snowflake session: set "
                              "data.database and data.schema (or database/schema in connections.toml)")

    @property
    def identity(self) -> Dict[str, str]:
        self._resolve()
        return {"account": self.account, "database": self.database, "schema": self.schema}


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
def fakesnow_server(port: Optional[int] = None, timeout: float = 20.0,
                    while_starting: Optional[Callable[[], None]] = None) -> Iterator[int]:
    """Run `python -m fakesnow -s` on loopback in its own process group; yield its port.

    while_starting runs as soon as the process is spawned (its start takes ~1.5 s).
    fakesnow makes a temp folder at import and never removes it (one per run, in /tmp):
    the process gets a TMPDIR of its own, removed when it stops (or, after a SIGKILL, by
    the next start)."""
    port = port or free_port()
    _remove_orphan_scratch()
    scratch = tempfile.mkdtemp(prefix=f"runner-fakesnow-{os.getpid()}-")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakesnow", "-s", "--host", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=_die_with_parent, env={**os.environ, "TMPDIR": scratch})
    try:
        if while_starting is not None:
            while_starting()
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise WarehouseError(f"the embedded warehouse (fakesnow) exited with code {proc.returncode}; "
                                     "check that the fakesnow[server] package is installed")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise WarehouseError("the embedded warehouse (fakesnow) did not start within "
                                         f"{timeout:.0f}s on 127.0.0.1:{port}")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)


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


def _emulator_kwargs(port: int, data_cfg) -> Dict[str, Any]:
    # platform_detection_timeout_seconds=0: no probing of cloud metadata addresses at login
    # (the connector's default spends ~1.2 s on it, and the emulator is on loopback).
    return dict(user="fake", password="snow", account="fakesnow", host="127.0.0.1", port=port,
                protocol="http", network_timeout=data_cfg.network_timeout,
                platform_detection_timeout_seconds=0.0,
                session_parameters={"nop_regexes": _EMULATOR_NOPS})


def _connections() -> Dict[str, Any]:
    """connections.toml as the connector reads it (SNOWFLAKE_HOME, then platform defaults)."""
    from snowflake.connector.config_manager import CONFIG_MANAGER

    try:
        return dict(CONFIG_MANAGER["connections"])
    except Exception as exc:  # unparsable TOML, bad permissions
        raise ConfigError(f"cannot read Snowflake's connections.toml ({_connections_file()}): "
                          f"{_first_line(exc)}") from None


def _connections_file() -> str:
    from snowflake.connector.constants import CONNECTIONS_FILE

    return str(CONNECTIONS_FILE)


def _default_connection_name() -> Optional[str]:
    from snowflake.connector.config_manager import CONFIG_MANAGER

    try:
        return CONFIG_MANAGER["default_connection_name"]
    except Exception:
        return None


def snowflake_kwargs(data_cfg) -> Dict[str, Any]:
    """Connection settings for a real account: a connections.toml entry or SNOWFLAKE_* env.

    data.connection_name picks an entry of connections.toml (found as the connector
    finds it: $SNOWFLAKE_HOME/connections.toml, else ~/.snowflake/ or the platform
    config folder). Without it, SNOWFLAKE_ACCOUNT/SNOWFLAKE_USER/... variables are
    used, else the connector's default connection (SNOWFLAKE_DEFAULT_CONNECTION_NAME
    or default_connection_name in config.toml, "default" if unset). Only non-secret
    settings from our config (account, database, schema, warehouse, role) are added
    on top; secrets stay in the connector's hands.
    """
    kwargs: Dict[str, Any] = {}
    entry: Dict[str, Any] = {}
    name = data_cfg.connection_name
    env = {key: os.environ.get(f"SNOWFLAKE_{key.upper()}") for key in _ENV_KEYS}
    env = {k: v for k, v in env.items() if v}
    if not name and not ("account" in env or "host" in env):
        default = _default_connection_name()
        if default and default in _connections():
            name = default
    if name:
        connections = _connections()
        if name not in connections:
            known = ", ".join(sorted(connections)) or "none"
            raise ConfigError(f"data.connection_name={name!r} is not an entry of {_connections_file()} "
                              f"(entries: {known}); set SNOWFLAKE_HOME to the folder holding your "
                              "connections.toml or choose another data.connection_name")
        entry = dict(connections[name])
        kwargs["connection_name"] = name
    elif env:
        for key, value in env.items():
            kwargs[key] = int(value) if key == "port" else value
    else:
        raise ConfigError(
            "data=snowflake needs a connection: set data.connection_name to an entry of "
            f"{_connections_file()} (or set SNOWFLAKE_HOME), or the SNOWFLAKE_ACCOUNT/SNOWFLAKE_USER/"
            "SNOWFLAKE_PASSWORD... environment variables")
    for key in ("account", "database", "schema", "warehouse", "role"):
        value = getattr(data_cfg, key)
        if value:
            kwargs[key] = value
    if "network_timeout" not in entry:
        kwargs.setdefault("network_timeout", data_cfg.network_timeout)
    return kwargs


def _secrets_of(kwargs: Dict[str, Any]) -> List[str]:
    """Secret values a connection uses, to mask them in any message we print."""
    values = [kwargs.get(k) for k in _SECRET_KEYS]
    name = kwargs.get("connection_name")
    if name:
        entry = _connections().get(name, {})
        values += [entry.get(k) for k in _SECRET_KEYS]
    return [str(v) for v in values if v and len(str(v)) >= 4]


def _create_session(kwargs: Dict[str, Any], what: str):
    from snowflake.snowpark import Session

    try:
        return Session.builder.configs(kwargs).create()
    except Exception as exc:  # connector errors: bad credentials, unreachable host, bad toml
        text = _first_line(exc)
        for secret in _secrets_of(kwargs):
            text = text.replace(secret, "***")
        raise WarehouseError(f"cannot connect to {what}: {text} (check the connection's account/host, "
                             "user and credentials, and network access to it)") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def open_warehouse(data_cfg) -> Iterator[Warehouse]:
    if data_cfg.backend == "embedded":
        from .demo import seed_demo, seed_synthetic

        seeds = {"churn": seed_demo, "synthetic": seed_synthetic}
        seed = seeds.get(data_cfg.demo.dataset)
        if seed is None:
            raise ConfigError(f"data.demo.dataset must be one of {', '.join(seeds)}, "
                              f"got {data_cfg.demo.dataset!r}")
        with fakesnow_server(while_starting=lambda: __import__("snowflake.snowpark")) as port:
            session = _create_session(_emulator_kwargs(port, data_cfg), "the embedded warehouse")
            try:
                database, schema = data_cfg.database or "DEMO", data_cfg.schema or "PUBLIC"
                version = seed(session, database, schema, data_cfg.demo)
                yield Warehouse(session, "fakesnow", database, schema, known_version=version)
            finally:
                _close(session)
    elif data_cfg.backend == "snowflake":
        kwargs = snowflake_kwargs(data_cfg)
        where = (f"data.connection_name={kwargs['connection_name']} in {_connections_file()}"
                 if "connection_name" in kwargs else "SNOWFLAKE_* environment variables")
        session = _create_session(kwargs, f"Snowflake ({where})")
        try:
            # No query yet: identity is resolved once the caller has set the query tag.
            yield Warehouse(session, account=data_cfg.account or None)
        finally:
            _close(session)
    else:
        raise ConfigError(f"data.backend must be 'embedded' or 'snowflake', got {data_cfg.backend!r}")


def _close(session) -> None:
    import atexit

    try:
        session.close()
    except Exception as exc:  # closing must never hide the real outcome
        log.debug("closing the warehouse session failed: %s", exc)
    # Snowpark closes every session again at exit, which would retry against
    # a server that is gone by then.
    atexit.unregister(session._close_at_exit)
