"""What a caller of run_job (a sweeper) may add to one job, without the job knowing why."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence


@dataclass
class JobHooks:
    """Extras for one job; every field is optional.

    run_name/tags: the run's name and tags added at creation. callbacks: LightGBM callbacks.
    log_model: overrides tracker.log_model (a sweep uploads only the winner). overrides: the
    job's Hydra overrides when HydraConfig does not describe it (trials in threads).
    on_run(run_id): called once the MLflow run exists. start_guard(): a context manager held
    while the run is created and on_run called (a sweeper's lock against its own cleanup,
    which may refuse the start by raising). final_tags(status, exc): tags sent in
    the run's last log call (so a trial costs create + one batch + terminate). status_of(exc):
    the run status for an exception the caller raised on purpose (e.g. "KILLED" for a
    stopped trial); None lets the job end the run FAILED with a runner.error tag.
    log_config: False when the caller keeps the job's config elsewhere (a sweep's trials:
    the parent run keeps their base config once, each trial its sampled values), else the
    run uploads config/resolved.yaml, what `python -m runner.rerun` reads. kind: the run's
    kind for the lifecycle's test kill points (`trial` -> trial_started, trial_ending).
    train(prepared, model_cfg, callbacks, history): trains in place of runner.model.train
    (a sweeper's rungs on row subsets) and returns its TrainResult; what it puts in
    `history` (metric -> [(step, value, ms)]) is logged with the run, also when it raises
    for a run ended on purpose (status_of).
    """

    run_name: Optional[str] = None
    tags: Dict[str, Any] = field(default_factory=dict)
    callbacks: Sequence[Callable[..., Any]] = ()
    log_model: Optional[bool] = None
    overrides: Optional[Sequence[str]] = None
    on_run: Optional[Callable[[str], None]] = None
    start_guard: Optional[Callable[[], AbstractContextManager[Any]]] = None
    final_tags: Optional[Callable[[str, Optional[BaseException]], Dict[str, Any]]] = None
    status_of: Optional[Callable[[BaseException], Optional[str]]] = None
    log_config: bool = True
    kind: str = "run"
    train: Optional[Callable[..., Any]] = None

    def tags_at_end(self, status: str, exc: Optional[BaseException] = None) -> Dict[str, Any]:
        return self.final_tags(status, exc) if self.final_tags else {}
