"""The search space: Hydra override grammar -> Optuna distributions, checked up front.

Pure functions (no I/O): `parse_space` turns `hydra.sweeper.params` (and sweep
overrides given on the command line) into Optuna distributions plus fixed
overrides; `check_keys` makes sure every param exists in the composed config.
Every problem is a runner.errors.ConfigError naming the param.

Grammar (Hydra's own parser):
  choice(a, b, c) / a,b,c      -> CategoricalDistribution
  range(start, stop[, step])   -> IntDistribution / FloatDistribution with step, high =
                                  stop as in hydra-optuna-sweeper (range(1, 3) = 1, 2, 3;
                                  Hydra's basic sweeper gives 1, 2); floats exact
  shuffle(range(...))          -> CategoricalDistribution of Hydra's values (stop excluded)
  interval(low, high)          -> FloatDistribution (high included)
  int(interval(low, high))     -> IntDistribution
  tag(log, interval(...))      -> log scale (low must be > 0)
  anything else                -> a fixed value passed to every trial
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, cast

from runner.errors import ConfigError

if TYPE_CHECKING:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep
    from omegaconf import DictConfig
    from optuna.distributions import BaseDistribution, CategoricalDistribution

KNOWN_TAGS = {"log"}
_ABSENT = object()


@dataclass
class SearchSpace:
    distributions: Dict[str, Any] = field(default_factory=dict)  # key -> optuna distribution
    fixed: Dict[str, str] = field(default_factory=dict)  # key -> override value string
    origin: Dict[str, str] = field(default_factory=dict)  # key -> where it was set (for messages)
    source: Dict[str, str] = field(default_factory=dict)  # key -> the grammar text

    def overrides(self, values: Mapping[str, Any]) -> List[str]:
        """Hydra override strings for sampled values plus the fixed ones."""
        out = [f"{k}={v}" for k, v in self.fixed.items()]
        out += [f"{k}={encode(v)}" for k, v in values.items()]
        return out


def encode(value: Any) -> str:
    """A sampled value as an override value Hydra parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "null"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def _parser() -> OverridesParser:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parse_space(
    params: Optional[Mapping[str, Any]], arguments: Sequence[str] = (), where: str = "hydra.sweeper.params"
) -> SearchSpace:
    """Distributions for params (YAML) and sweep arguments (command line, which win)."""
    space = SearchSpace()
    parser = _parser()
    items: List[Tuple[str, str, str]] = []
    for key, value in (params or {}).items():
        text = value if isinstance(value, str) else _yaml_scalar(value)
        items.append((f"{where}.{key}", str(key), f"{key}={text}"))
    for arg in arguments:
        key = arg.split("=", 1)[0]
        items.append((f"command line {arg!r}", key, arg))
    for origin, _key, line in items:
        try:
            override = parser.parse_override(line)
        except Exception as exc:  # Hydra's grammar/evaluation errors
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{origin}: {text}") from None
        name = override.get_key_element()
        if override.is_delete():
            raise ConfigError(f"{origin}: deleting a key (~) is not a search space")
        space.distributions.pop(name, None)
        space.fixed.pop(name, None)
        space.origin[name] = origin
        space.source[name] = line.split("=", 1)[1] if "=" in line else line
        if override.is_sweep_override():
            space.distributions[name] = distribution(override, origin)
        else:
            space.fixed[name] = override.get_value_element_as_str()
    return space


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def distribution(override: Override, origin: str) -> BaseDistribution:
    """One sweep override -> an Optuna distribution; ConfigError naming origin if invalid."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    value = override.value()
    tags = set(getattr(value, "tags", set()) or set())
    unknown = sorted(tags - KNOWN_TAGS)
    if unknown:
        raise ConfigError(f"{origin}: unknown tag {unknown[0]!r} (known tags: {', '.join(sorted(KNOWN_TAGS))})")
    log = "log" in tags
    if isinstance(value, ChoiceSweep):
        return _choice(override, origin, log)
    if isinstance(value, RangeSweep):
        return _range(override, value, origin, log)
    if isinstance(value, IntervalSweep):
        return _interval(value, origin, log)
    raise ConfigError(
        f"{origin}: {type(value).__name__} is not supported: use choice(...), "
        "range(...), interval(...), int(interval(...)) or tag(log, interval(...))"
    )


def _choice(override: Override, origin: str, log: bool) -> CategoricalDistribution:
    from optuna.distributions import CategoricalDistribution

    if log:
        raise ConfigError(f"{origin}: tag(log, ...) applies to interval(...) only, not choice(...)")
    choices: List[Any] = list(override.sweep_iterator())  # checked to be scalars below
    if not choices:
        raise ConfigError(f"{origin}: empty choice()")
    for c in choices:
        if c is not None and not isinstance(c, (str, int, float, bool)):
            raise ConfigError(
                f"{origin}: choice values must be strings, numbers or booleans, got {type(c).__name__} {c!r}"
            )
    if len(set(map(repr, choices))) != len(choices):
        raise ConfigError(f"{origin}: duplicate values in choice({', '.join(map(str, choices))})")
    return CategoricalDistribution(choices)


def _range(override: Override, value: RangeSweep, origin: str, log: bool) -> BaseDistribution:
    """range(start, stop[, step]) as hydra-optuna-sweeper reads it: stop is the HIGH bound,
    included when it lies on the grid (range(1, 3) -> 1, 2, 3; Hydra's basic sweeper stops
    before it). Float bounds are exact: the high is start + n * step in decimal arithmetic,
    so range(0.3, 1.0, 0.3) keeps 0.9. shuffle(range(...)) is Hydra's own list of values
    (stop excluded) as a categorical, as upstream."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if log:
        raise ConfigError(f"{origin}: tag(log, ...) applies to interval(...) only, not range(...)")
    start, stop, step = value.start, value.stop, value.step
    assert start is not None and stop is not None  # Hydra's range() always sets both
    if step is None or step == 0:
        raise ConfigError(f"{origin}: range step must not be 0")
    if step < 0:
        raise ConfigError(f"{origin}: range step must be positive, got {step}")
    if start > stop:
        raise ConfigError(f"{origin}: low {start} > high {stop} in range(start, stop)")
    if value.shuffle:
        # a range's values are numbers (Hydra types sweep values as any element)
        return CategoricalDistribution(cast(List[float], list(override.sweep_iterator())))
    if all(isinstance(x, int) and not isinstance(x, bool) for x in (start, stop, step)):
        return IntDistribution(int(start), int(start + (stop - start) // step * step), step=int(step))
    low, high, _ = exact_grid(start, stop, step)
    return FloatDistribution(float(low), float(high), step=float(step))


def exact_grid(start: Any, stop: Any, step: Any) -> Tuple[Decimal, Decimal, int]:
    """(low, high, number of values) of start + k * step <= stop, in decimal arithmetic:
    the values a person reads in range(start, stop, step), without float drift."""
    low, top, d = Decimal(str(start)), Decimal(str(stop)), Decimal(str(step))
    n = int((top - low) // d)
    return low, low + n * d, n + 1


def _interval(value: IntervalSweep, origin: str, log: bool) -> BaseDistribution:
    from optuna.distributions import FloatDistribution, IntDistribution

    low, high = value.start, value.end
    if low is None or high is None:
        raise ConfigError(f"{origin}: interval needs a low and a high bound")
    if low > high:
        raise ConfigError(f"{origin}: low {low} > high {high}")
    if log and low <= 0:
        raise ConfigError(f"{origin}: tag(log, ...) needs low > 0, got low {low}")
    if isinstance(low, int) and isinstance(high, int):
        return IntDistribution(low, high, log=log)
    return FloatDistribution(float(low), float(high), log=log)


def check_keys(space: SearchSpace, cfg: DictConfig) -> None:
    """Every searched or fixed key must exist in the composed task config."""
    from omegaconf import OmegaConf

    for key in [*space.distributions, *space.fixed]:
        bare = key.lstrip("+~")
        if key.startswith("+"):
            continue  # explicitly added keys need not exist yet
        if OmegaConf.select(cfg, bare, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            origin = space.origin.get(key, key)
            parent = bare.rsplit(".", 1)[0] if "." in bare else ""
            node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
            hint = ""
            if node is not None and OmegaConf.is_dict(node):
                hint = f" (keys of {parent or 'the config'}: {', '.join(map(str, node.keys()))})"
            raise ConfigError(f"{origin}: {bare} is not in the config{hint}")


def grid_space(space: SearchSpace) -> Dict[str, List[Any]]:
    """GridSampler's search space from discrete distributions."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    grid: Dict[str, List[Any]] = {}
    for name, dist in space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            low, _, size = exact_grid(dist.low, dist.high, dist.step)
            grid[name] = [float(low + i * Decimal(str(dist.step))) for i in range(size)]
        else:
            raise ConfigError(
                f"{space.origin.get(name, name)}: the grid sampler needs choice(...) "
                f"or range(...), got {space.source.get(name, dist)}"
            )
    return grid


def mlflow_key(name: str) -> str:
    """A searched key as an MLflow param/tag name: without Hydra's `+`/`++` prefix (add the
    key: the same key without it), and any character MLflow refuses in names (such as the
    `@` of a package override) as `_`."""
    return re.sub(r"[^\w\-. /:]", "_", name.lstrip("+"))


def describe(space: SearchSpace) -> Dict[str, str]:
    return {name: space.source.get(name, str(d)) for name, d in space.distributions.items()}


def enqueued(trials: Optional[Sequence[Any]], space: SearchSpace, where: str) -> Tuple[List[Dict[str, Any]], List[str]]:
    """hydra.sweeper.enqueue_trials for this space, and notes on what was left out. Each must
    be a mapping (else an error). A param that is not searched or a value outside its
    distribution (the command line may have narrowed the space) is left to the sampler, and
    a note says so; a trial with nothing left is not enqueued."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    out: List[Dict[str, Any]] = []
    notes: List[str] = []
    for i, params in enumerate(trials or []):
        if not isinstance(params, Mapping):
            raise ConfigError(f"hydra.sweeper.enqueue_trials[{i}] must be a mapping of param: value, got {params!r}")
        kept = {}
        for key, value in params.items():
            dist = space.distributions.get(key)
            if dist is None:
                notes.append(f"hydra.sweeper.enqueue_trials[{i}]: {key} is not searched in {where}: left out")
                continue
            if isinstance(dist, CategoricalDistribution):
                inside = value in dist.choices
            else:
                kinds = (int,) if isinstance(dist, IntDistribution) else (int, float)
                inside = isinstance(value, kinds) and not isinstance(value, bool) and dist.low <= value <= dist.high
            if not inside:
                notes.append(
                    f"hydra.sweeper.enqueue_trials[{i}]: {key}={value!r} is outside {space.source.get(key, str(dist))} "
                    f"({where}): sampled instead"
                )
                continue
            kept[key] = value
        if kept:
            out.append(kept)
    return out, notes
