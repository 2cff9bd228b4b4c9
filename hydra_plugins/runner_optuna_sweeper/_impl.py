"""The runner Optuna sweeper: an Optuna study whose trials are nested MLflow runs.

Loaded only when a sweep starts (the plugin scan skips modules named _*). This module
orchestrates; each step lives in a module of its own:

  1. parse hydra.sweeper.params (+ sweep overrides on the command line) with Hydra's
     override parser, check every key against the composed config, fail before any trial
     (_search_space, _compose; settings: _settings);
  2. the metric(s) and direction(s) to optimize (_objective);
  3. open/create the study (load_if_exists) in the storage (default: SQLite file
     .runner/optuna/<study>.db under the current directory) with its sampler and pruner
     (_storage, _samplers);
  4. reuse the study's parent MLflow run (study user attr mlflow_parent_run_id) or create
     it, fail stale RUNNING trials left by a killed process (_recovery, _liveness);
  5. n_jobs worker threads loop ask -> trial -> tell until the study has n_trials
     COMPLETE+PRUNED trials (no batch barrier; _loop, _budget, _trial, _pruning). Each
     trial composes its own config and calls runner.job.run_job directly with a pruning
     callback: three MLflow requests per trial (create, one log_batch, terminate),
     features pulled once per process. With a non-basic Hydra launcher (joblib...) trials
     run as launcher jobs in batches of n_jobs instead (_launcher);
  6. the parent gets best value(s)/params/child run id, a top-k table, history and
     importance plots, and the best trial's model (saved locally by each trial, only the
     winner uploaded) is registered (_summary, _display).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from runner.console import exit_with
from runner.errors import ConfigError, RunnerError
from runner.interrupts import INTERRUPTS
from runner.secrets import redact_url, scrub
from runner.testhooks import barrier

from . import _custom, _display, _recovery, _results, _settings
from ._budget import Budget
from ._compose import Composer, split_arguments
from ._launcher import check_launcher, launched_trial, run_batches
from ._lineage import keep_base_config, log_lineage
from ._loop import run_threads
from ._objective import objective
from ._resume import reconcile
from ._samplers import build
from ._search_space import describe, parse_space
from ._state import Sweep
from ._storage import open_study, safe_name, storage_url, study_lock
from ._summary import finish, ranked
from ._summary import summary as summary_of
from ._trial import TrialContext

log = logging.getLogger("runner.sweep")

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


class RunnerOptunaSweeperImpl:
    def __init__(self, settings: Dict[str, Any]):
        self.kwargs = dict(settings)  # as Hydra passed them; typed in sweep()
        self.launcher: Optional[Any] = None
        self.config: Optional[DictConfig] = None
        self.stop = threading.Event()
        self._prefetch: Optional[threading.Thread] = None
        self._trials_started = False

    # Hydra API ---------------------------------------------------------------

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config_loader = hydra_context.config_loader
        self.task_function = task_function
        self.config = config
        target = OmegaConf.select(config, "hydra.launcher._target_", default=BASIC_LAUNCHER)
        self.in_process = target == BASIC_LAUNCHER
        if not self.in_process:
            self.launcher = Plugins.instance().instantiate_launcher(
                hydra_context=hydra_context, task_function=launched_trial, config=config
            )

    def sweep(self, arguments: List[str]) -> Any:
        interrupted = False
        try:
            return self._sweep(arguments)
        except RunnerError as exc:
            exit_with(exc)
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            # No warehouse or cache write cut off at exit, unless the sweep failed before its
            # trials or was interrupted (then it stops at once; a cut-off cache write leaves
            # no entry).
            if self._prefetch is not None and self._trials_started and not interrupted:
                self._prefetch.join()

    # the sweep ---------------------------------------------------------------

    def _sweep(self, arguments: List[str]) -> Any:
        import optuna

        from runner.console import quiet_libraries
        from runner.secrets import install_log_filter
        from runner.tracking import Tracker

        install_log_filter()
        quiet_libraries()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        started = time.perf_counter()
        settings = _settings.from_kwargs(self.kwargs)

        # 1. search space and the trials' base config, checked before anything runs
        assert self.config is not None, "setup() first"
        composer = Composer(self.config_loader, self.config)
        fixed_args, sweep_args = split_arguments(self.config_loader, arguments)
        space = parse_space(settings.params or {}, sweep_args)
        if not space.distributions:
            raise ConfigError(
                "hydra.sweeper.params is empty: nothing to search (e.g. sweep=lightgbm, or "
                "model.params.num_leaves='int(interval(15,255))' on the command line)"
            )
        _settings.check(settings)
        if not self.in_process:
            check_launcher(self.config)  # no typed password pickled into job files
        n_jobs, n_trials = settings.n_jobs, settings.n_trials
        base = composer.set_base(fixed_args, space, n_jobs, self.in_process)
        hook = _custom.load(settings.custom_search_space)
        if hook is not None:
            _custom.dry_run(hook, str(settings.custom_search_space), self.config, space, base)

        # 2. objective
        metrics, directions = objective(settings.metric, settings.direction, base)

        # 3. sampler, pruner, storage, study
        sampler, sampler_desc = build("sampler", settings.sampler, space)
        pruner, pruner_desc = build("pruner", settings.pruner, space)
        choices = OmegaConf.select(self.config, "hydra.runtime.choices", default={}) or {}
        study_name = settings.study_name or f"runner-{choices.get('sweep') or base.tracker.experiment}"
        # Every trial reads the same data (no config group searched): pull and prepare it
        # now, while the study, the tracking store and the parent run are set up.
        if self.in_process and not composer.slow_keys:
            from runner.job import prefetch

            self._prefetch = prefetch(base, query_tag=f"runner sweep study={study_name}")
            # Imports hold the GIL: LightGBM's (with scikit-learn and scipy, ~1.3 s) is taken
            # here, while the prefetch reads, so that the prefetch's Dataset construction
            # (no GIL, both cores) overlaps MLflow's import below instead of following it.
            import lightgbm  # noqa: F401
        url = storage_url(settings.storage, study_name)
        shown_storage = redact_url(url)
        study = open_study(url, study_name, sampler, pruner, directions)
        for note in reconcile(study, space, shown_storage):  # a space changed since the study began
            _display.say(f"runner: study {study_name!r}: {note}")
        limit = n_trials
        if sampler_desc["name"] == "GridSampler":
            size = math.prod(len(v) for v in sampler.__dict__.get("_search_space", {}).values()) or n_trials
            limit = min(n_trials, size)
        sweep = Sweep(study, url, metrics, directions, space, limit, started)
        budget = Budget(
            sweep,
            stop=self.stop,
            heartbeat_timeout=settings.heartbeat_timeout,
            max_failures=settings.max_failures,
            max_failure_rate=settings.max_failure_rate,
            timeout=settings.timeout,
            on_tell=functools.partial(_display.show_progress, sweep) if settings.progress else None,
            extend=_custom.extend(hook, str(settings.custom_search_space), self.config) if hook else None,
        )
        model_dir = (Path.cwd() / ".runner" / "models" / safe_name(study_name)).resolve()

        # 4. parent run
        task_cfg = base
        tracker = Tracker(task_cfg.tracker)
        settings_tags = {
            "runner.sweep": "runner_optuna",
            "optuna.study_name": study_name,
            "optuna.sampler": sampler_desc["name"],
            "optuna.sampler.options": json.dumps(sampler_desc["options"], default=str),
            "optuna.pruner": pruner_desc["name"],
            "optuna.pruner.options": json.dumps(pruner_desc["options"], default=str),
            "optuna.direction" if len(directions) == 1 else "optuna.directions": ",".join(directions),
            "optuna.metric": ",".join(metrics),
            "optuna.storage": shown_storage,
            "optuna.n_trials": n_trials,
            "optuna.n_jobs": n_jobs,
            "optuna.search_space": json.dumps(describe(space)),
            "optuna.launcher": "threads"
            if self.in_process
            else OmegaConf.select(self.config, "hydra.launcher._target_"),
        }
        sweep.parent_run_id, resumed = _recovery.ensure_parent(sweep, tracker, task_cfg, arguments, settings_tags)
        parent_status: Optional[str] = "FAILED"
        try:
            _recovery.fail_stale(sweep, tracker, budget)
            _recovery.give_runs(sweep, tracker, task_cfg)
            before = budget.counts()
            _display.say(
                f"runner: study {study_name!r} ({'resumed' if resumed or before['finished'] else 'new'}, "
                f"{before['finished']}/{limit} trials finished) in {shown_storage}; parent run "
                f"{sweep.parent_run_id}; {sampler_desc['name']} sampler, {pruner_desc['name']}, "
                f"{'threads' if self.in_process else 'launcher'} x{n_jobs}"
            )
            self._save_multirun_yaml()

            # 5. trials
            ctx = TrialContext(
                study_name,
                sweep.parent_run_id,
                metrics,
                directions,
                settings.report_every,
                model_dir,
                self.stop,
                prune=pruner_desc["name"] != "NopPruner",
                base_config=keep_base_config(tracker, sweep.parent_run_id, composer),
            )
            loop_started = time.perf_counter()
            self._trials_started = True
            if self.in_process:
                run_threads(budget, n_jobs, composer, ctx, tracker, settings.heartbeat_interval)
            else:
                run_batches(self.launcher, budget, n_jobs, composer, ctx, settings.heartbeat_interval)
            loop_seconds = time.perf_counter() - loop_started
            if budget.fatal:
                raise ConfigError(budget.fatal)
            others = budget.others_running()
            if others:
                # Workers sharing the study: the last one to finish writes the summary, registers
                # the model and ends the parent run; this one leaves the parent RUNNING.
                parent_status = None
                _display.say(
                    f"runner: study {study_name!r}: this worker ran {budget.session_done} trials; "
                    f"{others} trial(s) still running in other workers: the last worker to finish "
                    f"writes the summary and ends parent run {sweep.parent_run_id}"
                )
                return summary_of(sweep, None)

            # 6. summary
            barrier("summary")  # test hook: the trials are done, the summary is next
            with study_lock(url, study_name):  # one summary/registration at a time
                summary = finish(
                    sweep,
                    budget,
                    tracker,
                    task_cfg,
                    composer,
                    top_k=settings.top_k,
                    registered_model=settings.registered_model,
                    loop_seconds=loop_seconds,
                )
                log_lineage(sweep, tracker, composer, next(iter(ranked(sweep)), None))
            _results.write(str(self.config.hydra.sweep.dir), study, directions)
            parent_status = "FINISHED"
            return summary
        except KeyboardInterrupt:
            parent_status = "KILLED"
            self.stop.set()
            c = budget.counts()
            others = budget.others_running()
            INTERRUPTS.keep(
                f"study {study_name!r} keeps {c['finished']}/{limit} finished trials (interrupted "
                f"ones are not counted), parent run {sweep.parent_run_id} "
                + ("left RUNNING for the other workers" if others else "ended KILLED"),
                outer=True,
            )
            raise
        finally:
            self.stop.set()
            _recovery.close_parent(tracker, sweep.parent_run_id, parent_status, budget)

    def _save_multirun_yaml(self) -> None:
        assert self.config is not None
        try:
            sweep_dir = Path(self.config.hydra.sweep.dir)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            # Like Hydra's basic sweeper, minus credentials (a storage URL may carry a password).
            text = OmegaConf.to_yaml(self.config)
            (sweep_dir / "multirun.yaml").write_text(scrub(text))
        except Exception as exc:
            log.debug("multirun.yaml not saved: %s", exc)
