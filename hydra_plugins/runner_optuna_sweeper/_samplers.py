"""The study's Optuna sampler and pruner, built from hydra.sweeper.sampler / .pruner."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, cast

from omegaconf import OmegaConf

from runner.errors import ConfigError, first_line

from ._search_space import SearchSpace, grid_space

# Packages a sampler needs beyond optuna: import name, pip name.
_NEEDS = {"CmaEsSampler": ("cmaes", "cmaes"), "GPSampler": ("torch", "torch")}
# Samplers hydra-optuna-sweeper configs may name that Optuna has removed, and what to use.
REMOVED = {
    "MOTPESampler": "the 'motpe' sampler was removed in Optuna 4.0: use hydra/sweeper/sampler=tpe instead "
    "(TPESampler now handles multi-objective optimization)",
}


def build(kind: str, node: Any, space: Optional[SearchSpace] = None) -> Tuple[Any, Dict[str, Any]]:
    """The Optuna sampler or pruner of hydra.sweeper.<kind>, and its description for tags."""
    from hydra.utils import instantiate

    spec = cast(
        Dict[str, Any], OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
    )
    if not spec.get("_target_"):
        spec["_target_"] = "optuna.pruners.NopPruner" if kind == "pruner" else "optuna.samplers.TPESampler"
    name = spec["_target_"].rsplit(".", 1)[-1]
    if name in REMOVED:
        raise ConfigError(f"hydra/sweeper/{kind}: {REMOVED[name]}")
    _check_exists(kind, spec["_target_"])
    # null means Optuna's own default: leave it out rather than pass None. hydra-optuna-sweeper's
    # grid config sets _partial_: the sweeper passes the search space itself.
    spec = {k: v for k, v in spec.items() if v is not None and k != "_partial_"}
    options = {k: v for k, v in spec.items() if k != "_target_"}
    description: Dict[str, Any] = {"name": name, "options": options}
    if name == "GridSampler":
        if not spec.get("search_space"):
            spec["search_space"] = grid_space(cast(SearchSpace, space))
        description["grid"] = spec["search_space"]  # its size bounds the sweep's trials
    needs = _NEEDS.get(name)
    if needs:
        try:
            __import__(needs[0])
        except ImportError:
            raise ConfigError(
                f"hydra/sweeper/{kind}={name} needs the {needs[1]!r} package: "
                f"pip install {needs[1]} (or choose another {kind})"
            ) from None
    try:
        obj = instantiate(spec, _convert_="all")
    except Exception as exc:
        raise ConfigError(f"hydra.sweeper.{kind} ({spec['_target_']}): {first_line(exc)}") from None
    return obj, description


def _check_exists(kind: str, target: str) -> None:
    """An optuna.samplers.X / optuna.pruners.X that this Optuna does not have: say which exist."""
    import optuna

    module, _, name = target.rpartition(".")
    package = {"optuna.samplers": optuna.samplers, "optuna.pruners": optuna.pruners}.get(module)
    if package is None or hasattr(package, name):
        return
    known = sorted(n for n in dir(package) if n.endswith(("Sampler", "Pruner")) and not n.startswith("Base"))
    raise ConfigError(
        f"hydra.sweeper.{kind}._target_={target!r} does not exist in Optuna {optuna.__version__} "
        f"(it has: {', '.join(known)})"
    )
