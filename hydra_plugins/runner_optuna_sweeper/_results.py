"""optimization_results.yaml in the sweep folder, as hydra-optuna-sweeper writes it (scripts
read it): name, best_params and best_value; for several objectives, the Pareto solutions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

if TYPE_CHECKING:
    from optuna.study import Study

log = logging.getLogger("runner.sweep")


def results(study: Study, directions: List[str]) -> Dict[str, Any]:
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return {"name": "optuna"}
    if len(directions) < 2:
        best = study.best_trial
        return {"name": "optuna", "best_params": dict(best.params), "best_value": best.value}
    return {
        "name": "optuna",
        "solutions": [{"params": dict(t.params), "values": list(t.values)} for t in study.best_trials],
    }


def write(sweep_dir: str, study: Study, directions: List[str]) -> None:
    from omegaconf import OmegaConf

    try:
        folder = Path(sweep_dir)
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results(study, directions)), folder / "optimization_results.yaml")
    except OSError as exc:
        log.warning("optimization_results.yaml not written in %s: %s", sweep_dir, exc)
