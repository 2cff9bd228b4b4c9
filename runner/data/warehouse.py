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
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional

from ..errors import ConfigError, WarehouseError, first_line
from ..interrupts import INTERRUPTS
from .snowflake import connections_file, secrets_of, snowflake_kwargs

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)


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
            raise ConfigError(
                "no current database/schema in the Snowflake session: set "
                "data.database and data.schema (or database/schema in connections.toml)"
            )

    @property
    def identity(self) -> Dict[str, str]:
        self._resolve()
        return {"account": self.account or "", "database": self.database or "", "schema": self.schema or ""}


def _create_session(kwargs: Dict[str, Any], what: str) -> Any:
    from snowflake.snowpark import Session

    try:
        return Session.builder.configs(kwargs).create()
    except Exception as exc:  # connector errors: bad credentials, unreachable host, bad toml
        text = first_line(exc)
        for secret in secrets_of(kwargs):
            text = text.replace(secret, "***")
        raise WarehouseError(
            f"cannot connect to {what}: {text} (check the connection's account/host, "
            "user and credentials, and network access to it)"
        ) from None


class GivenSession:
    """A Snowpark Session the caller owns (runner.run(session=...), e.g. Snowflake Notebooks'
    get_active_session()): used instead of opening one, never closed. Its current database
    and schema are the identity; the query tag runner sets is put back afterwards."""

    def __init__(self) -> None:
        self.session: Any = None

    @contextmanager
    def use(self, session: Any) -> Iterator[None]:
        before, self.session = self.session, session
        try:
            yield
        finally:
            self.session = before


GIVEN = GivenSession()


@contextmanager
def open_warehouse(data_cfg: DictConfig) -> Iterator[Warehouse]:
    if GIVEN.session is not None:
        session = GIVEN.session
        tag_before = getattr(session, "query_tag", None)
        try:
            yield Warehouse(session)
        finally:
            if getattr(session, "query_tag", None) != tag_before:
                try:
                    session.query_tag = tag_before
                except Exception as exc:  # the caller's session: never fail the run for it
                    log.debug("could not restore the session's query tag: %s", exc)
        return
    if data_cfg.backend == "embedded":
        from ..embedded.warehouse import seeded_session

        def open_session(kwargs: Dict[str, Any]) -> Any:
            return _create_session(kwargs, "the embedded warehouse")

        with seeded_session(data_cfg, open_session, _close) as (session, database, schema, version):
            yield Warehouse(session, "fakesnow", database, schema, known_version=version)
    elif data_cfg.backend == "snowflake":
        kwargs = snowflake_kwargs(data_cfg)
        where = (
            f"data.connection_name={kwargs['connection_name']} in {connections_file()}"
            if "connection_name" in kwargs
            else "SNOWFLAKE_* environment variables"
        )
        session = _create_session(kwargs, f"Snowflake ({where})")
        try:
            # No query yet: identity is resolved once the caller has set the query tag.
            yield Warehouse(session, account=data_cfg.account or None)
        finally:
            _close(session)
    else:
        raise ConfigError(f"data.backend must be 'embedded' or 'snowflake', got {data_cfg.backend!r}")


def _close(session: Any) -> None:
    import atexit

    try:
        with INTERRUPTS.deferred():  # a signal meanwhile is raised once it is closed
            session.close()
    except Exception as exc:  # closing must never hide the real outcome
        log.debug("closing the warehouse session failed: %s", exc)
    finally:
        # Snowpark closes every session again at exit, which would retry against
        # a server that is gone by then.
        atexit.unregister(session._close_at_exit)
