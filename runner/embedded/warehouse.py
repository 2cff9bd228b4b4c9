"""The embedded warehouse as runner.data.open_warehouse uses it: a fresh fakesnow server
process, a Snowpark session on it over the wire, the data set of data.demo.dataset seeded
and the local files of data.files loaded as tables."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Tuple

from ..data.files import file_tables, files_version, local_files
from ..errors import ConfigError
from ..interrupts import INTERRUPTS
from .demo import run_seed, seed_demo
from .emulator import emulator_kwargs, fakesnow_server
from .files import load_files
from .synthetic import seed_synthetic

if TYPE_CHECKING:
    from omegaconf import DictConfig


def seed_none(session: Any, database: str, schema: str, demo: DictConfig) -> str:
    """Only the database and schema (the tables come from data.files)."""
    return run_seed(
        session,
        database,
        schema,
        [f"create database if not exists {database}", f"create schema if not exists {database}.{schema}"],
    )


SEEDS = {"churn": seed_demo, "synthetic": seed_synthetic, "none": seed_none}


def dataset(data_cfg: DictConfig) -> str:
    """data.demo.dataset; unset: churn, or none when data.files gives the tables."""
    name = data_cfg.demo.get("dataset")
    return str(name) if name is not None else ("none" if file_tables(data_cfg) else "churn")


@contextmanager
def seeded_session(
    data_cfg: DictConfig, open_session: Callable[[Dict[str, Any]], Any], close_session: Callable[[Any], None]
) -> Iterator[Tuple[Any, str, str, str]]:
    """(session, database, schema, data version) on a seeded embedded warehouse; the session
    is closed (close_session) before the server stops."""
    seed = SEEDS.get(dataset(data_cfg))
    if seed is None:
        raise ConfigError(f"data.demo.dataset must be one of {', '.join(SEEDS)}, got {data_cfg.demo.dataset!r}")
    with fakesnow_server(while_starting=lambda: __import__("snowflake.snowpark")) as port:
        # A signal while the session opens waits until it is open (well under a second on
        # loopback), so it is closed before the server stops: a session left open is closed
        # again by Snowpark at exit, retrying for minutes against the stopped server.
        session = None
        try:
            with INTERRUPTS.deferred():
                session = open_session(emulator_kwargs(port, data_cfg))
            database, schema = data_cfg.database or "DEMO", data_cfg.schema or "PUBLIC"
            version = seed(session, database, schema, data_cfg.demo)
            if file_tables(data_cfg):
                load_files(session, data_cfg)
            files = files_version(local_files(data_cfg))
            yield session, database, schema, f"{version};{files}" if files else version
        finally:
            if session is not None:
                close_session(session)
