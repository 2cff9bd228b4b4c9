"""A resumed study whose search space has changed since its first trials.

Optuna keeps one distribution kind per param name in a study, and a categorical's choices
fixed: a changed space either works (new bounds of an interval or range: new trials use
them) or is refused by the storage in the middle of a trial. This check runs before any
trial and before the parent run: it keeps what works (with a note), reorders a shuffled
or reordered choice() to the study's order (the same values), and stops at once with one
error naming the param otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List

from runner.errors import ConfigError

from ._search_space import SearchSpace

if TYPE_CHECKING:
    from optuna.study import Study


def recorded_distributions(study: Study) -> Dict[str, Any]:
    """Each param's distribution as the study's newest trial that has it recorded it."""
    seen: Dict[str, Any] = {}
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        seen.update(trial.distributions)
    return seen


def reconcile(study: Study, space: SearchSpace, shown_storage: str) -> List[str]:
    """Make `space` fit the study's recorded params; return notes for the user; raise
    ConfigError (before anything is created) where Optuna cannot continue the study."""
    from optuna.distributions import CategoricalDistribution, check_distribution_compatibility

    notes: List[str] = []
    recorded = recorded_distributions(study)
    for name, new in list(space.distributions.items()):
        old = recorded.get(name)
        if old is None or old == new:
            continue
        where = space.origin.get(name, name)
        if isinstance(old, CategoricalDistribution) and isinstance(new, CategoricalDistribution):
            if sorted(map(repr, old.choices)) == sorted(map(repr, new.choices)):
                space.distributions[name] = old  # same values in another order (shuffle): the study's order
                continue
        try:
            check_distribution_compatibility(old, new)
        except ValueError as exc:
            raise ConfigError(
                f"{where}: the search space of {name} changed since study {study.study_name!r} started "
                f"(recorded {_show(old)}, now {_show(new)}) and Optuna cannot continue it ({exc}): restore "
                f"the param as it was, or start a new study with hydra.sweeper.study_name=<new name> "
                f"(storage {shown_storage}); a study sweep=lightgbm began before its default space widened "
                "resumes with hydra.sweeper.strategy=plain (the former space, one trial at a time)"
            ) from None
        notes.append(f"{name} was {_show(old)} in the study's earlier trials; new trials use {_show(new)}")
    return notes


def _show(dist: Any) -> str:
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return f"choice({', '.join(map(repr, dist.choices))})"
    kind = "int" if type(dist).__name__.startswith("Int") else "float"
    extra = ", log" if dist.log else (f", step={dist.step}" if dist.step not in (None, 1) else "")
    return f"{kind}[{dist.low}, {dist.high}{extra}]"
