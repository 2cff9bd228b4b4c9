"""The sweeper's settings (hydra.sweeper.*) as a typed object.

Hydra instantiates the sweeper with the fields of config.RunnerOptunaSweeperConf as
keyword arguments (nested values as OmegaConf containers, since _recursive_ is false).
`from_kwargs` builds that same dataclass from them, with plain Python containers, so the
defaults live in config.py only and the sweep reads `settings.n_trials`.
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any, Dict, Mapping, Optional, Tuple

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
    if settings.n_jobs is not None and settings.n_jobs < 1:
        raise ConfigError(f"hydra.sweeper.n_jobs must be >= 1, got {settings.n_jobs}")
    if settings.n_trials < 1:
        raise ConfigError(f"hydra.sweeper.n_trials must be >= 1, got {settings.n_trials}")
    for key in ("report_every", "top_k"):
        if getattr(settings, key) < 1:
            raise ConfigError(f"hydra.sweeper.{key} must be >= 1, got {getattr(settings, key)}")
    for key in ("heartbeat_interval", "heartbeat_timeout"):
        if not getattr(settings, key) > 0:
            raise ConfigError(f"hydra.sweeper.{key} must be > 0 seconds, got {getattr(settings, key)}")


def space_of(settings: Settings) -> Tuple[Optional[Dict[str, Any]], str]:
    """The search space the strategy searches, and the setting it comes from."""
    if settings.strategy == "plain" and settings.plain_params:
        return settings.plain_params, "hydra.sweeper.plain_params"
    return settings.params, "hydra.sweeper.params"


# Trials at once under strategy=fast/halving with n_jobs null. On this project's 2-core
# machines two 1-thread trials finished 1.5x the trials of one 2-thread trial in the same
# time (benchmarks/README.md, issue 26); beyond 4, each trial keeps cores // 4 threads.
MAX_AUTO_JOBS = 4


def workers(settings: Settings, in_process: bool, upstream: bool = False) -> int:
    """n_jobs as set, else 1 under plain, a Hydra launcher or a config written for
    hydra-optuna-sweeper (`hydra/sweeper: optuna`, whose n_jobs defaults to 1), else
    min(MAX_AUTO_JOBS, cores) (the sweep goes back to 1 for a table read in batches)."""
    if settings.n_jobs is not None:
        return settings.n_jobs
    if settings.strategy == "plain" or not in_process or upstream:
        return 1
    return max(1, min(MAX_AUTO_JOBS, os.cpu_count() or 1))


def check_threads(searched: Any, n_jobs: int, in_process: bool) -> None:
    """LightGBM keeps one thread count per process: trials running together in it must share
    model.params.num_threads, so it is not searched with n_jobs above 1 (docs/sweeps.md)."""
    key = next((k for k in ("model.params.num_threads", "model.params.extra.num_threads") if k in searched), None)
    if key and n_jobs > 1 and in_process:
        raise ConfigError(
            f"{key} is searched while {n_jobs} trials run at once in one process (hydra.sweeper.n_jobs="
            f"{n_jobs}, null: min({MAX_AUTO_JOBS}, cores)); LightGBM keeps one thread count per process, so "
            "trials running together must share it: set hydra.sweeper.n_jobs=1 to search it, or fix it"
        )
