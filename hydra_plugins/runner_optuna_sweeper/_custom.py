"""hydra.sweeper.custom_search_space: a function `fn(cfg, trial)` of the user's that suggests
more params on each trial (hydra-optuna-sweeper's hook, same signature): conditional params,
params derived from others. New config keys use Hydra's `+key` convention."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from omegaconf import DictConfig

from runner.errors import ConfigError, first_line

from ._search_space import SearchSpace, check_keys

if TYPE_CHECKING:
    from optuna.trial import Trial

Hook = Callable[[DictConfig, Any], None]


def load(path: Optional[str]) -> Optional[Hook]:
    """The function named by hydra.sweeper.custom_search_space (None when unset)."""
    if not path:
        return None
    from hydra.utils import get_method

    try:
        return get_method(path)
    except Exception as exc:
        raise ConfigError(
            f"hydra.sweeper.custom_search_space={path!r} is not an importable function "
            f"(module.function): {first_line(exc)}"
        ) from None


def dry_run(hook: Hook, path: str, config: DictConfig, space: SearchSpace, base: DictConfig) -> None:
    """Call the hook once on a trial of a throwaway in-memory study, before the real study
    and the parent run exist: a hook that raises, or suggests a key the config does not
    have (without `+`), fails here with one error."""
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask(space.distributions)
    try:
        hook(config, trial)
    except Exception as exc:
        raise ConfigError(
            f"hydra.sweeper.custom_search_space={path!r} raised {type(exc).__name__}: {first_line(exc)}"
        ) from None
    added = SearchSpace()
    for key in set(trial.params) - set(space.distributions):
        added.distributions[key] = trial.distributions[key]
        added.origin[key] = f"hydra.sweeper.custom_search_space={path!r} (param {key!r})"
    check_keys(added, base)


def extend(hook: Hook, path: str, config: DictConfig) -> Callable[[Any], None]:
    """The per-trial call: `trial` gets the hook's params on top of the sampled ones."""

    def call(trial: Trial) -> None:
        try:
            hook(config, trial)
        except Exception as exc:
            raise ConfigError(
                f"hydra.sweeper.custom_search_space={path!r} raised {type(exc).__name__} "
                f"on trial {trial.number}: {first_line(exc)}"
            ) from None

    return call
