"""The sweeper's settings (hydra.sweeper.*) as a typed object.

Hydra instantiates the sweeper with the fields of config.RunnerOptunaSweeperConf as
keyword arguments (nested values as OmegaConf containers, since _recursive_ is false).
`from_kwargs` builds that same dataclass from them, with plain Python containers, so the
defaults live in config.py only and the sweep reads `settings.n_trials`.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping

from omegaconf import OmegaConf

from runner.errors import ConfigError

from .config import RunnerOptunaSweeperConf

Settings = RunnerOptunaSweeperConf

# Fields of the schema that are Hydra's instructions, not settings of the sweep.
_HYDRA_KEYS = ("_target_", "_recursive_", "defaults")
KEYS = tuple(f.name for f in fields(RunnerOptunaSweeperConf) if f.name not in _HYDRA_KEYS)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def from_kwargs(kwargs: Mapping[str, Any]) -> Settings:
    """The settings for the kwargs Hydra passed to the sweeper (missing ones: config.py's defaults)."""
    given = {k: v for k, v in kwargs.items() if k not in _HYDRA_KEYS}
    unknown = sorted(set(given) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"hydra.sweeper.{unknown[0]} is not a setting of the runner Optuna sweeper (settings: {', '.join(KEYS)})"
        )
    return Settings(**{k: _plain(v) for k, v in given.items()})


def check(settings: Settings) -> None:
    """Counts and intervals that must be positive (the messages name the setting)."""
    if settings.n_jobs < 1:
        raise ConfigError(f"hydra.sweeper.n_jobs must be >= 1, got {settings.n_jobs}")
    if settings.n_trials < 1:
        raise ConfigError(f"hydra.sweeper.n_trials must be >= 1, got {settings.n_trials}")
    for key in ("report_every", "top_k"):
        if getattr(settings, key) < 1:
            raise ConfigError(f"hydra.sweeper.{key} must be >= 1, got {getattr(settings, key)}")
    for key in ("heartbeat_interval", "heartbeat_timeout"):
        if not getattr(settings, key) > 0:
            raise ConfigError(f"hydra.sweeper.{key} must be > 0 seconds, got {getattr(settings, key)}")
