"""Warehouse sessions: the embedded fakesnow server or a real Snowflake account.

Both are reached the same way: the real Snowflake connector and a Snowpark
Session over the wire. Credentials are read by the connector from
connections.toml or SNOWFLAKE_* variables and never pass through our config.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional

from .errors import ConfigError, WarehouseError

log = logging.getLogger(__name__)

# fakesnow answers these two statements only when told to ignore them.
_EMULATOR_NOPS = [r"^ALTER SESSION SET QUERY_TAG.*", r"^ALTER SESSION UNSET QUERY_TAG.*",
                  r"^select system\$cancel_all_queries.*"]
_ENV_KEYS = ("account", "user", "password", "host", "port", "protocol", "role", "warehouse",
             "database", "schema", "authenticator", "private_key_file", "private_key_file_pwd",
             "token")


@dataclass
class Warehouse:
    session: Any
    account: str
    database: str
    schema: str
    # Data version for the cache key when the backend knows it without asking.
    known_version: Optional[str] = None

    @property
    def identity(self) -> Dict[str, str]:
        return {"account": self.account, "database": self.database, "schema": self.schema}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def fakesnow_server(port: Optional[int] = None, timeout: float = 20.0) -> Iterator[int]:
    """Run `python -m fakesnow -s` on loopback in its own process group; yield its port."""
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakesnow", "-s", "--host", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
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


def _emulator_kwargs(port: int, data_cfg) -> Dict[str, Any]:
    return dict(user="fake", password="snow", account="fakesnow", host="127.0.0.1", port=port,
                protocol="http", network_timeout=data_cfg.network_timeout,
                session_parameters={"nop_regexes": _EMULATOR_NOPS})


def snowflake_kwargs(data_cfg) -> Dict[str, Any]:
    """Connection settings for a real account: connections.toml entry or SNOWFLAKE_* env.

    Only non-secret settings from our config (database, schema, warehouse, role)
    are added on top.
    """
    kwargs: Dict[str, Any] = {}
    if data_cfg.connection_name:
        kwargs["connection_name"] = data_cfg.connection_name
    else:
        for key in _ENV_KEYS:
            value = os.environ.get(f"SNOWFLAKE_{key.upper()}")
            if value:
                kwargs[key] = int(value) if key == "port" else value
        if "account" not in kwargs and "host" not in kwargs and not os.environ.get(
                "SNOWFLAKE_DEFAULT_CONNECTION_NAME"):
            raise ConfigError(
                "data=snowflake needs a connection: set data.connection_name to an entry of "
                "connections.toml, or the SNOWFLAKE_ACCOUNT/SNOWFLAKE_USER/... environment variables")
    for key in ("account", "database", "schema", "warehouse", "role"):
        value = getattr(data_cfg, key)
        if value:
            kwargs[key] = value
    kwargs.setdefault("network_timeout", data_cfg.network_timeout)
    if os.environ.get("RUNNER_SNOWFLAKE_EMULATOR") == "1":
        # Tests point data=snowflake at a fakesnow process: let it ignore what it cannot run.
        kwargs["session_parameters"] = {"nop_regexes": _EMULATOR_NOPS}
    return kwargs


def _create_session(kwargs: Dict[str, Any], what: str):
    from snowflake.snowpark import Session

    try:
        return Session.builder.configs(kwargs).create()
    except Exception as exc:  # connector errors: bad credentials, unreachable host, bad toml
        raise WarehouseError(f"cannot connect to {what}: {_first_line(exc)}") from None


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
        with fakesnow_server() as port:
            session = _create_session(_emulator_kwargs(port, data_cfg), "the embedded warehouse")
            try:
                database, schema = data_cfg.database or "DEMO", data_cfg.schema or "PUBLIC"
                version = seed(session, database, schema, data_cfg.demo)
                yield Warehouse(session, "fakesnow", database, schema, known_version=version)
            finally:
                _close(session)
    elif data_cfg.backend == "snowflake":
        session = _create_session(snowflake_kwargs(data_cfg),
                                  f"Snowflake (data.connection_name={data_cfg.connection_name})")
        try:
            account = (data_cfg.account or session.get_current_account() or "").strip('"')
            database = (session.get_current_database() or "").strip('"')
            schema = (session.get_current_schema() or "").strip('"')
            if not database or not schema:
                raise ConfigError("no current database/schema in the Snowflake session: set "
                                  "data.database and data.schema (or database/schema in connections.toml)")
            yield Warehouse(session, account, database, schema)
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
