"""Hydra callbacks of runner (registered in conf/config.yaml under hydra.callbacks).

Hydra instantiates callbacks at every start, single runs included: nothing heavy
is imported until a multirun begins.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterable, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .env import PARENT_RUN_ID as PARENT_ENV
from .names import Tag

log = logging.getLogger("runner")


class ParentRunCallback(Callback):
    """A plain Hydra multirun (basic sweeper, any launcher) as one parent MLflow run.

    on_multirun_start creates the parent run and exports RUNNER_PARENT_RUN_ID, which
    each job (runner/commands/app.py, in this process or a launcher's worker processes that
    inherit the environment) uses as its parent; on_multirun_end ends it FINISHED. If
    the multirun dies first (a job raised, exit code 2), the parent is ended FAILED at exit,
    KILLED after Ctrl-C or SIGTERM (runner/interrupts.py). Does nothing for the runner_optuna
    sweeper, which manages its own parent run per study.
    """

    def __init__(self) -> None:
        self.run_id: Optional[str] = None
        self.tracker: Any = None
        self._previous: Optional[str] = None
        self._scope: Optional[ExitStack] = None  # holds the parent's Tracker.run block open

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "")
        if "runner_optuna_sweeper" in target:
            return
        from .config import to_dict
        from .console import exit_with
        from .errors import RunnerError
        from .job import base_tags
        from .secrets import install_log_filter, scrub
        from .tracking import Tracker

        install_log_filter()
        task = to_dict(config, resolve=False)
        task.pop("hydra", None)
        task_cfg = OmegaConf.create(task)
        overrides = [scrub(str(o)) for o in config.hydra.overrides.task]
        try:
            self.tracker = Tracker(task_cfg.tracker)
            self._previous = os.environ.get(PARENT_ENV)
            tags = {
                **base_tags(task_cfg, overrides),
                Tag.SWEEP: "basic",
                Tag.SWEEP_SWEEPER: target,
                Tag.SWEEP_DIR: str(config.hydra.sweep.dir),
                Tag.SWEEP_LAUNCHER: str(OmegaConf.select(config, "hydra.launcher._target_", default="")),
            }
            name = config.get("run_name") or f"multirun-{os.path.basename(str(config.hydra.sweep.dir))}"
            # The parent's run block spans the multirun: opened here, closed by on_multirun_end
            # (FINISHED) or at exit (FAILED, or KILLED after Ctrl-C / SIGTERM).
            scope = ExitStack()
            run = scope.enter_context(self.tracker.run(name, tags, parent=self._previous, kind="grid_parent"))
            self._scope, self.run_id = scope, run.id
            run.log(params={"sweep.overrides": json.dumps(overrides)})
        except RunnerError as exc:
            self._end(exc)
            exit_with(exc)  # one line and exit 2, as a single run does
        os.environ[PARENT_ENV] = self.run_id
        atexit.register(self._end_at_exit)
        print(f"runner: multirun parent run {self.run_id} in {self.tracker.display_uri}", flush=True)

    def __getstate__(self) -> dict:
        # Process launchers (joblib/loky, submitit) pickle the Hydra context with its callbacks
        # into every job; the parent run is this process's business (its client holds locks),
        # so workers get an inert copy and find the parent id in RUNNER_PARENT_RUN_ID.
        return {"run_id": None, "tracker": None, "_previous": None, "_scope": None}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._end(None)
        _redact_files([Path(str(config.hydra.sweep.dir), "multirun.yaml")])

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra has just saved the job's config.yaml/hydra.yaml/overrides.yaml as typed: mask
        passwords in URLs (e.g. a storage or tracking URL with user:password@) in them."""
        subdir = OmegaConf.select(config, "hydra.output_subdir")
        if subdir is None:
            return
        folder = Path(str(config.hydra.runtime.output_dir), str(subdir))
        _redact_files([folder / name for name in ("config.yaml", "hydra.yaml", "overrides.yaml")])

    def _end_at_exit(self) -> None:
        """The multirun did not reach on_multirun_end: stopped by the user, or failed."""
        from .errors import RunnerError
        from .interrupts import INTERRUPTS, Interrupted

        if INTERRUPTS.received is not None:
            self._end(Interrupted(INTERRUPTS.received))
        else:
            self._end(RunnerError("the multirun stopped before its last job (a job failed: see its output)"))

    def _end(self, exc: Optional[BaseException]) -> None:
        """Close the parent's run block: FINISHED without `exc`, else as the lifecycle ends a
        block that raised it."""
        scope, self._scope = self._scope, None
        if scope is None:
            return
        self.run_id = None
        if self._previous is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = self._previous
        try:
            if exc is None:
                scope.close()
            else:
                scope.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException as error:  # never hide the sweep's own outcome
            log.error("could not end the multirun's parent run: %s", error)


def _redact_files(paths: Iterable[Path]) -> None:
    from .secrets import scrub

    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        clean = scrub(text)
        if clean != text:
            path.write_text(clean)
