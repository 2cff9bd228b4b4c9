"""What the steps of one sweep share once its study is open."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ._compose import Composer
from ._halving import Halving
from ._search_space import SearchSpace
from ._settings import Settings


@dataclass
class Plan:
    """A sweep as its settings describe it, checked before anything is created."""

    settings: Settings
    composer: Composer
    space: SearchSpace
    base: Any  # DictConfig: the trials' base config
    hook: Optional[Callable[..., Any]]  # hydra.sweeper.custom_search_space
    metrics: List[str]
    directions: List[str]
    study_name: str
    sampler: Tuple[Any, Dict[str, Any]]  # the sampler and its description (name, options[, grid])
    pruner: Tuple[Any, Dict[str, Any]]
    halving: Optional[Halving] = None  # the strategy: rungs on row subsets, or None (all rows)
    n_jobs: int = 1  # trials at once (hydra.sweeper.n_jobs, or the strategy's choice)
    enqueue: List[Dict[str, Any]] = field(default_factory=list)  # a new study's first trials


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
    storage: Any = None  # the study's optuna storage, kept for its public per-trial API
    _study_id: Optional[int] = None
    _trial_ids: Dict[int, int] = field(default_factory=dict)

    def trial_id(self, number: int) -> int:
        """The storage's id of trial `number` of the study (public storage API: the sweeper
        writes a trial's attributes and state from threads and processes that did not ask it)."""
        if number not in self._trial_ids:
            if self._study_id is None:
                self._study_id = self.storage.get_study_id_from_name(self.study.study_name)
            self._trial_ids[number] = self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)
        return self._trial_ids[number]

    def set_trial_attr(self, number: int, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(self.trial_id(number), key, value)

    def fail_trial(self, number: int, key: str, value: Any) -> None:
        """Mark a RUNNING trial FAIL with user attribute key=value (why); raises when the trial
        has finished meanwhile."""
        from optuna.trial import TrialState

        trial_id = self.trial_id(number)
        self.storage.set_trial_user_attr(trial_id, key, value)
        self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
