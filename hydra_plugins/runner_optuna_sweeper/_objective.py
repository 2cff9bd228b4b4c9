"""What the study optimizes: the job metric(s) and their direction(s)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Tuple

from runner.errors import ConfigError
from runner.model.metrics import NEITHER, maximize

if TYPE_CHECKING:
    from omegaconf import DictConfig


def default_direction(metric: str) -> str:
    name = metric.split("_", 1)[1] if metric.startswith(("valid_", "test_")) else metric
    if name in NEITHER:
        raise ConfigError(
            f"hydra.sweeper.metric={metric!r} is not a quality of the model (neither larger nor smaller is "
            "better): choose a score or a loss, e.g. valid_auc, or set hydra.sweeper.direction"
        )
    return "maximize" if maximize(metric) else "minimize"


def _as_list(value: Any) -> List[Any]:
    return [value] if isinstance(value, str) else list(value or [])


def objective(metric: Any, direction: Any, base: DictConfig) -> Tuple[List[str], List[str]]:
    """(metrics, directions) from hydra.sweeper.metric/direction (a name or a list each);
    metric null: valid_<headline metric of the objective>; direction null: from the metric."""
    metrics = _as_list(metric)
    directions = _as_list(direction)
    if not metrics:
        from runner.model import headline

        if len(directions) > 1:
            raise ConfigError(
                "hydra.sweeper.direction is a list (multi-objective): set "
                "hydra.sweeper.metric to a list of as many job metrics"
            )
        metrics = [f"valid_{headline(base.model.params.objective)}"]
    if not directions:
        directions = [default_direction(m) for m in metrics]
    if len(directions) != len(metrics):
        raise ConfigError(
            f"hydra.sweeper.direction has {len(directions)} entries but hydra.sweeper.metric has {len(metrics)}"
        )
    for d in directions:
        if d not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction must be maximize or minimize, got {d!r}")
    return metrics, directions
