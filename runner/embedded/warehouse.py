"""The embedded warehouse as runner.data.open_warehouse uses it: a fresh fakesnow server
process, a Snowpark session on it over the wire, the data set of data.demo.dataset seeded."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Tuple

from ..errors import ConfigError
from .demo import seed_demo
from .emulator import emulator_kwargs, fakesnow_server
from .synthetic import seed_synthetic

if TYPE_CHECKING:
    from omegaconf import DictConfig

SEEDS = {"churn": seed_demo, "synthetic": seed_synthetic}


@contextmanager
def seeded_session(
    data_cfg: DictConfig, open_session: Callable[[Dict[str, Any]], Any], close_session: Callable[[Any], None]
) -> Iterator[Tuple[Any, str, str, str]]:
    """(session, database, schema, data version) on a seeded embedded warehouse; the session
    is closed (close_session) before the server stops."""
    seed = SEEDS.get(data_cfg.demo.dataset)
    if seed is None:
        raise ConfigError(f"data.demo.dataset must be one of {', '.join(SEEDS)}, got {data_cfg.demo.dataset!r}")
    with fakesnow_server(while_starting=lambda: __import__("snowflake.snowpark")) as port:
        session = open_session(emulator_kwargs(port, data_cfg))
        try:
            database, schema = data_cfg.database or "DEMO", data_cfg.schema or "PUBLIC"
            yield session, database, schema, seed(session, database, schema, data_cfg.demo)
        finally:
            close_session(session)
