"""Pruning inside LightGBM's boosting loop, and stopping a trial when the sweep stops."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from lightgbm.callback import CallbackEnv
    from optuna.trial import Trial

log = logging.getLogger("runner.sweep")


class SweepStopped(Exception):
    """Raised in a running trial's LightGBM loop when the sweep is being stopped."""


class PruningCallback:
    """LightGBM callback: report the validation metric every `every` rounds, prune when told.

    Also stops the trial when the sweep is being stopped (Ctrl-C, a fatal error elsewhere).
    """

    order = 30

    def __init__(
        self,
        trial: Trial,
        metric: Optional[str],
        maximize: bool,
        every: int = 1,
        stop: Optional[threading.Event] = None,
        prune: bool = True,
    ) -> None:
        self.trial = trial
        self.metric = metric
        self.maximize = maximize
        self.every = max(1, int(every))
        self.stop = stop
        self.prune = prune
        self.warned = False

    def _pick(self, results: Sequence[Tuple[Any, ...]]) -> Optional[Tuple[Any, ...]]:
        valid = [r for r in results if r[0] == "valid"]
        for r in valid:
            if self.metric and r[1] == self.metric:
                return r
        for r in valid:
            if bool(r[3]) == self.maximize:
                return r
        return None

    def __call__(self, env: CallbackEnv) -> None:
        if self.stop is not None and self.stop.is_set():
            raise SweepStopped("the sweep is stopping")
        if not self.prune:  # NopPruner: no report, no storage write per round
            return
        import optuna

        step = env.iteration + 1
        if step % self.every:
            return
        picked = self._pick(env.evaluation_result_list or [])
        if picked is None:
            if not self.warned:
                log.warning("pruning off: no validation metric of LightGBM goes the study's direction")
                self.warned = True
            return
        _, name, value, _ = picked[:4]
        self.trial.report(float(value), step=step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at round {step}: valid {name}={value:.5f}")
