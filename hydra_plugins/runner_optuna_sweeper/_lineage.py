"""What makes a sweep reproducible and traceable from MLflow alone.

- keep_base_config: the parent run keeps the trials' base config once per sweep invocation
  (config/base-<digest>.yaml); each trial tags it (runner.base_config) beside its sampled
  values (optuna.params), so `python -m runner.rerun <trial run>` rebuilds the trial's
  config without a per-trial upload;
- log_lineage: at the sweep's end the parent run and the best trial's run get the features
  as their MLflow dataset input (digest = the cache key; every trial has it as the tag
  runner.dataset.digest).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Dict, Optional

from omegaconf import OmegaConf

from runner.secrets import scrub

from ._compose import Composer

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from runner.tracking import Tracker

    from ._state import Sweep
    from ._trial import TrialContext


def keep_base_config(tracker: Tracker, parent_run_id: str, composer: Composer) -> Optional[str]:
    """Upload the trials' base config to the parent run; its artifact path, or None when a
    config group is searched (trials are composed one by one: each keeps its own config)."""
    if composer.slow_keys:
        return None
    text = scrub(OmegaConf.to_yaml(composer.base, resolve=True))
    path = f"config/base-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    tracker.log_text(parent_run_id, text, path)
    return path


def trial_context(ctx: TrialContext, composer: Composer, params: Dict[str, Any]) -> TrialContext:
    """ctx for a trial with `params`: without the base config when composing the trial's
    config needs Hydra (an added +key of a custom search space): that trial keeps its own."""
    import dataclasses

    if ctx.base_config and any(composer.needs_compose(k) for k in params):
        return dataclasses.replace(ctx, base_config=None)
    return ctx


def log_lineage(sweep: Sweep, tracker: Tracker, composer: Composer, best: Optional[FrozenTrial]) -> None:
    """The features of the best trial as the dataset input of the parent and of that trial's
    run (MLflow keeps one input per dataset and run: a resumed sweep adds no duplicate)."""
    from runner.job import log_lineage as log_dataset
    from runner.job import prepared_data

    from ._recovery import run_id_of

    if best is None:
        return
    cfg = composer.config_of(best)
    features, prepared = prepared_data(cfg)
    for run_id in (sweep.parent_run_id, run_id_of(sweep.study, best)):
        if run_id:
            log_dataset(tracker, run_id, cfg, features, prepared)
