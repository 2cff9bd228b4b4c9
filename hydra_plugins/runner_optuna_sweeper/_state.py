"""What the steps of one sweep share once its study is open."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from ._search_space import SearchSpace


@dataclass
class Sweep:
    study: Any  # optuna.Study
    storage_url: str
    metrics: List[str]  # the job metrics optimized, in the study's objective order
    directions: List[str]  # "maximize"/"minimize", one per metric
    space: SearchSpace
    limit: int  # trials to finish: hydra.sweeper.n_trials, or a smaller grid's size
    started: float  # time.perf_counter() when the sweep started
    parent_run_id: Optional[str] = None  # set once the parent run exists
