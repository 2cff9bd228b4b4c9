"""The halving strategy (hydra.sweeper.strategy=halving): successive halving on training rows.

Each trial is one configuration. It trains first on a sample of min_fraction of the training
rows (the validation rows stay whole), reports the validation metric to the study at step 1,
and goes on to reduction_factor times more rows (step reduction_factor, ...) up to all rows
only while Optuna's SuccessiveHalvingPruner keeps it among the best 1/reduction_factor of
the trials that reached the same rung (asynchronous successive halving: no waiting for a
rung to fill). A trial that reaches all rows ends COMPLETE with its all-rows metrics; one
stopped earlier ends PRUNED (its MLflow run KILLED, tag optuna.pruned). So n_trials still
counts configurations, and only all-rows trials have a value.

The samples are LightGBM's Dataset.subset of the Dataset built once per sweep (same bins),
drawn by model.row_seed (the sweep's config; recorded with each trial); a rung's metrics
are recorded on the trial's run as the history `<metric>_by_train_rows` (step: training
rows), and the last rung's fraction as tag runner.row_fraction: `python -m runner.rerun`
of a pruned trial trains on that fraction.

Every trial trains on all rows instead (as under strategy=fast), said once, when the sweep has
its own pruner, a grid sampler, several objectives, a custom_search_space, or too few
training rows for the smallest rung (MIN_RUNG_ROWS).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from runner.errors import ConfigError

if TYPE_CHECKING:
    from optuna.trial import Trial

STRATEGIES = ("fast", "halving", "plain")
# The smallest rung trains on at least this many rows; smaller fractions are left out, and a
# training split smaller than min_fraction's reduction_factor-fold of it trains on all rows.
MIN_RUNG_ROWS = 2000


def why_all_rows(strategy: str, pruner: str, sampler: str, objectives: int, custom: bool) -> Optional[str]:
    """Why every trial trains on all rows ("": the strategy has no rungs; None: halving's rungs)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"hydra.sweeper.strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy != "halving":
        return ""
    if pruner != "NopPruner":
        return f"hydra/sweeper/pruner={pruner} prunes on boosting rounds"
    if sampler == "GridSampler":
        return "a grid evaluates every point"
    if objectives > 1:
        return "several objectives"
    if custom:
        return "hydra.sweeper.custom_search_space is set"
    return None


def rungs(n_train: int, min_fraction: float, factor: int) -> List[float]:
    """The row fractions of a trial's rungs, all rows last, each rung >= MIN_RUNG_ROWS rows."""
    out: List[float] = [1.0]
    fraction = 1.0 / factor
    while fraction >= min_fraction * (1 - 1e-9) and fraction * n_train >= MIN_RUNG_ROWS:
        out.insert(0, fraction)
        fraction /= factor
    return out


def halving_from_env(value: Optional[str]) -> Optional[Halving]:
    """A launcher job's Halving, from what the sweep put in its environment ("": all rows)."""
    if not value:
        return None
    fraction, factor = value.split(",")
    return Halving(float(fraction), int(factor))


def pruner(factor: int) -> Any:
    """Optuna's asynchronous successive halving over steps 1, factor, factor**2, ..."""
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=factor, min_early_stopping_rate=0)


@dataclass
class Halving:
    """The strategy's settings for the sweep's trials; `said` once per process."""

    min_fraction: float
    factor: int
    said: List[str] = field(default_factory=list)

    def check(self) -> None:
        if not 0 < self.min_fraction < 1:
            raise ConfigError(f"hydra.sweeper.min_fraction must be in (0, 1), got {self.min_fraction}")
        if self.factor < 2:
            raise ConfigError(f"hydra.sweeper.reduction_factor must be >= 2, got {self.factor}")


@dataclass
class RungTrainer:
    """JobHooks.train of one trial: its rungs, reported to the study; the fraction reached."""

    trial: Trial
    halving: Halving
    metric: str
    fraction: float = 1.0

    def __call__(self, prepared: Any, model_cfg: Any, callbacks: Sequence[Callable[..., Any]], history: Dict) -> Any:
        import optuna

        from runner.model import train

        n_train = len(prepared.parts["train"])
        fractions = rungs(n_train, self.halving.min_fraction, self.halving.factor)
        if len(fractions) == 1 and not self.halving.said:
            self.halving.said.append(
                f"runner: {n_train} training rows: too few for rungs of at least {MIN_RUNG_ROWS} rows, "
                "every trial trains on all rows (as hydra.sweeper.strategy=fast)"
            )
            print(self.halving.said[0], flush=True)
        points = history.setdefault(f"{self.metric}_by_train_rows", [])
        result = None
        for i, fraction in enumerate(fractions):
            cfg = copy.deepcopy(model_cfg)
            cfg.row_fraction = fraction
            self.fraction = fraction
            result = train(prepared, cfg, callbacks=callbacks)
            rows = int(round(fraction * n_train)) if fraction < 1 else n_train
            value = result.metrics.get(self.metric)
            if value is None:
                return result  # the job reports the missing metric
            points.append((rows, float(value), int(time.time() * 1000)))
            if fraction < 1:
                self.trial.report(float(value), step=self.halving.factor**i)
                if self.trial.should_prune():
                    raise optuna.TrialPruned(
                        f"stopped after {fraction:.4g} of the training rows ({rows}): {self.metric}={value:.6g}"
                    )
        return result
