"""A real Snowflake account: which connection, from Snowflake's own settings.

Credentials are read by the connector from connections.toml or SNOWFLAKE_* variables
and never pass through runner's config; only non-secret overrides are added.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ..errors import ConfigError, first_line

if TYPE_CHECKING:
    from omegaconf import DictConfig

_ENV_KEYS = (
    "account",
    "user",
    "password",
    "host",
    "port",
    "protocol",
    "role",
    "warehouse",
    "database",
    "schema",
    "authenticator",
    "private_key_file",
    "private_key_file_pwd",
    "token",
)
_SECRET_KEYS = ("password", "token", "private_key_file_pwd", "passcode", "private_key")


def _connections() -> Dict[str, Any]:
    """connections.toml as the connector reads it (SNOWFLAKE_HOME, then platform defaults)."""
    from snowflake.connector.config_manager import CONFIG_MANAGER

    try:
        return dict(CONFIG_MANAGER["connections"])  # type: ignore[call-overload]
    except Exception as exc:  # unparsable TOML, bad permissions
        raise ConfigError(
            f"cannot read Snowflake's connections.toml ({connections_file()}): {first_line(exc)}"
        ) from None


def connections_file() -> str:
    from snowflake.connector.constants import CONNECTIONS_FILE

    return str(CONNECTIONS_FILE)


def _default_connection_name() -> Optional[str]:
    from snowflake.connector.config_manager import CONFIG_MANAGER

    try:
        name = CONFIG_MANAGER["default_connection_name"]
        return str(name) if name else None
    except Exception:
        return None


def snowflake_kwargs(data_cfg: DictConfig) -> Dict[str, Any]:
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
            raise ConfigError(
                f"data.connection_name={name!r} is not an entry of {connections_file()} "
                f"(entries: {known}); set SNOWFLAKE_HOME to the folder holding your "
                "connections.toml or choose another data.connection_name"
            )
        entry = dict(connections[name])
        kwargs["connection_name"] = name
    elif env:
        for key, value in env.items():
            kwargs[key] = int(value) if key == "port" and value else value
    else:
        raise ConfigError(
            "data=snowflake needs a connection: set data.connection_name to an entry of "
            f"{connections_file()} (or set SNOWFLAKE_HOME), or the SNOWFLAKE_ACCOUNT/SNOWFLAKE_USER/"
            "SNOWFLAKE_PASSWORD... environment variables"
        )
    for key in ("account", "database", "schema", "warehouse", "role"):
        value = getattr(data_cfg, key)
        if value:
            kwargs[key] = value
    if "network_timeout" not in entry:
        kwargs.setdefault("network_timeout", data_cfg.network_timeout)
    return kwargs


def secrets_of(kwargs: Dict[str, Any]) -> List[str]:
    """Secret values a connection uses, to mask them in any message we print."""
    values = [kwargs.get(k) for k in _SECRET_KEYS]
    name = kwargs.get("connection_name")
    if name:
        entry = _connections().get(name, {})
        values += [entry.get(k) for k in _SECRET_KEYS]
    return [str(v) for v in values if v and len(str(v)) >= 4]
