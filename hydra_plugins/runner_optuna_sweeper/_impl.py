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
  4. the parent MLflow run, a Tracker.run block around steps 4-6: the study's own run
     (study user attr mlflow_parent_run_id) continued, or created; fail stale RUNNING
     trials left by a killed process (_recovery, _liveness);
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
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from runner.console import exit_with
from runner.errors import ConfigError, RunnerError
from runner.interrupts import INTERRUPTS
from runner.names import Tag
from runner.secrets import redact_url, scrub
from runner.testhooks import barrier
from runner.tracking.lifecycle import LEFT_RUNNING, Run

from . import _custom, _display, _recovery, _results, _settings
from ._ahead import Ahead
from ._budget import Budget
from ._compose import Composer, split_arguments
from ._halving import Halving, why_all_rows
from ._halving import pruner as halving_pruner
from ._launcher import check_launcher, launched_trial, run_batches
from ._lineage import keep_base_config, log_lineage
from ._loop import run_threads
from ._objective import objective
from ._resume import reconcile
from ._samplers import build
from ._search_space import describe, enqueued, parse_space
from ._state import Plan, Sweep
from ._storage import open_study, safe_name, storage_url, study_lock
from ._summary import finish, ranked, warm
from ._summary import summary as summary_of
from ._trial import TrialContext

if TYPE_CHECKING:
    from hydra.types import HydraContext, TaskFunction

    from runner.tracking import Tracker

log = logging.getLogger("runner.sweep")

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


class RunnerOptunaSweeperImpl:
    def __init__(self, settings: Dict[str, Any]) -> None:
        self.kwargs = dict(settings)  # as Hydra passed them; typed in sweep()
        self.launcher: Optional[Any] = None
        self.config: Optional[DictConfig] = None
        self.stop = threading.Event()
        self._prefetch: Optional[threading.Thread] = None
        self._trials_started = False

    # Hydra API ---------------------------------------------------------------

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
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

    @property
    def _config(self) -> DictConfig:
        assert self.config is not None, "setup() first"
        return self.config

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
        plan = self._plan(_settings.from_kwargs(self.kwargs), arguments)  # 1-3: checked before anything runs
        sweep, budget = self._open(plan, started)  # 3: the study, its budget
        tracker = Tracker(plan.base.tracker)
        with _recovery.parent_run(
            sweep, tracker, plan.base, arguments, self._parent_tags(plan, sweep), budget
        ) as parent:
            try:
                return self._run(plan, sweep, budget, tracker, parent)  # 4-6
            except KeyboardInterrupt:
                self.stop.set()
                c, others = budget.counts(), budget.leave()
                INTERRUPTS.keep(
                    f"study {plan.study_name!r} keeps {c['finished']}/{sweep.limit} finished trials (interrupted "
                    f"ones are not counted), parent run {sweep.parent_run_id} "
                    + ("left RUNNING for the other workers" if others else "ended KILLED"),
                    outer=True,
                )
                raise
            finally:
                self.stop.set()

    def _plan(self, settings: _settings.Settings, arguments: List[str]) -> Plan:
        """Steps 1-3: the search space, the trials' base config, the objective, the sampler
        and pruner; every setting checked before anything is created."""
        assert self.config is not None, "setup() first"
        composer = Composer(self.config_loader, self.config)
        fixed_args, sweep_args = split_arguments(self.config_loader, arguments)
        _settings.check(settings)
        params, where = _settings.space_of(settings)
        space = parse_space(params, sweep_args, where=where)
        first, notes = enqueued(settings.enqueue_trials if where == "hydra.sweeper.params" else [], space, where)
        for note in notes:
            _display.say(f"runner: {note}")
        if not space.distributions:
            raise ConfigError(
                f"{where} is empty: nothing to search (e.g. sweep=lightgbm, or "
                "model.params.num_leaves='int(interval(15,255))' on the command line)"
            )
        choices = OmegaConf.select(self.config, "hydra.runtime.choices", default={}) or {}
        n_jobs = _settings.workers(settings, self.in_process, upstream=choices.get("hydra/sweeper") == "optuna")
        _settings.check_threads(space.distributions, n_jobs, self.in_process)
        if not self.in_process:
            check_launcher(self.config)  # no typed password pickled into job files
        base = composer.set_base(fixed_args, space, n_jobs, self.in_process)
        hook = _custom.load(settings.custom_search_space)
        if hook is not None:
            _custom.dry_run(hook, str(settings.custom_search_space), self.config, space, base)
        metrics, directions = objective(settings.metric, settings.direction, base)
        sampler = build("sampler", settings.sampler, space)
        pruner = build("pruner", settings.pruner, space)
        halving = Halving(settings.min_fraction, settings.reduction_factor)
        halving.check()
        all_rows = why_all_rows(
            settings.strategy, pruner[1]["name"], sampler[1]["name"], len(directions), hook is not None
        )
        if all_rows:
            _display.say(f"runner: every trial on all rows (as hydra.sweeper.strategy=fast): {all_rows}")
        if all_rows is None:
            options = {"min_resource": 1, "reduction_factor": halving.factor, "min_early_stopping_rate": 0}
            pruner = (halving_pruner(halving.factor), {"name": "SuccessiveHalvingPruner", "options": options})
        study_name = settings.study_name or f"runner-{choices.get('sweep') or base.tracker.experiment}"
        return Plan(
            settings,
            composer,
            space,
            base,
            hook,
            metrics,
            directions,
            study_name,
            sampler,
            pruner,
            halving=halving if all_rows is None else None,
            n_jobs=n_jobs,
            enqueue=first,
        )

    def _open(self, plan: Plan, started: float) -> Tuple[Sweep, Budget]:
        """Step 3: the data prefetched while the study opens; the study and its trial budget."""
        settings = plan.settings
        # Every trial reads the same data (no config group searched): pull and prepare it
        # now, while the study, the tracking store and the parent run are set up.
        if self.in_process and not plan.composer.slow_keys:
            from runner.job import prefetch

            self._prefetch = prefetch(plan.base, query_tag=f"runner sweep study={plan.study_name}")
            # Imports hold the GIL: LightGBM's (with scikit-learn and scipy, ~1.3 s) is taken
            # here, while the prefetch reads, so that the prefetch's Dataset construction
            # (no GIL, both cores) overlaps MLflow's import below instead of following it.
            import lightgbm  # noqa: F401
        url = storage_url(settings.storage, plan.study_name)
        storage, study = open_study(url, plan.study_name, plan.sampler[0], plan.pruner[0], plan.directions)
        for note in reconcile(study, plan.space, redact_url(url)):  # a space changed since the study began
            _display.say(f"runner: study {plan.study_name!r}: {note}")
        grid = plan.sampler[1].get("grid")
        limit = settings.n_trials
        if grid:  # GridSampler: no more trials than the grid has points
            limit = min(limit, math.prod(len(v) for v in grid.values()) or limit)
        if plan.enqueue and not study.get_trials(deepcopy=False):  # a new study: its first trials
            for params in plan.enqueue[:limit]:
                study.enqueue_trial(params, skip_if_exists=True)
        sweep = Sweep(study, url, plan.metrics, plan.directions, plan.space, limit, started, storage=storage)
        budget = Budget(
            sweep,
            stop=self.stop,
            heartbeat_timeout=settings.heartbeat_timeout,
            max_failures=settings.max_failures,
            max_failure_rate=settings.max_failure_rate,
            timeout=settings.timeout,
            on_tell=functools.partial(_display.show_progress, sweep) if settings.progress else None,
            extend=_custom.extend(plan.hook, str(settings.custom_search_space), self._config) if plan.hook else None,
        )
        return sweep, budget

    def _parent_tags(self, plan: Plan, sweep: Sweep) -> Dict[str, Any]:
        """The parent run's optuna.* tags: how the study searches."""
        sampler, pruner, directions = plan.sampler[1], plan.pruner[1], plan.directions
        return {
            Tag.SWEEP: "runner_optuna",
            Tag.STUDY_NAME: plan.study_name,
            Tag.SAMPLER: sampler["name"],
            Tag.SAMPLER_OPTIONS: json.dumps(sampler["options"], default=str),
            Tag.PRUNER: pruner["name"],
            Tag.PRUNER_OPTIONS: json.dumps(pruner["options"], default=str),
            Tag.DIRECTION if len(directions) == 1 else Tag.DIRECTIONS: ",".join(directions),
            Tag.METRIC: ",".join(plan.metrics),
            Tag.STORAGE: redact_url(sweep.storage_url),
            Tag.N_TRIALS: plan.settings.n_trials,
            Tag.N_JOBS: plan.n_jobs,
            Tag.SEARCH_SPACE: json.dumps(describe(plan.space)),
            Tag.LAUNCHER: "threads" if self.in_process else OmegaConf.select(self._config, "hydra.launcher._target_"),
        }

    def _run(self, plan: Plan, sweep: Sweep, budget: Budget, tracker: Tracker, parent: Run) -> Any:
        """Steps 4-5 inside the parent run: recovery, the trials; then the summary."""
        settings, composer, study_name = plan.settings, plan.composer, plan.study_name
        _recovery.fail_stale(sweep, tracker, budget)
        _recovery.give_runs(sweep, tracker, plan.base)
        self._one_at_a_time_if_batched(plan, parent)
        before = budget.counts()
        _display.say(
            f"runner: study {study_name!r} ({'resumed' if parent.adopted or before['finished'] else 'new'}, "
            f"{before['finished']}/{sweep.limit} trials finished) in {redact_url(sweep.storage_url)}; parent run "
            f"{parent.id}; {plan.sampler[1]['name']} sampler, {plan.pruner[1]['name']}, "
            f"{'threads' if self.in_process else 'launcher'} x{plan.n_jobs}"
        )
        self._save_multirun_yaml()
        ctx = TrialContext(
            study_name,
            parent.id,
            plan.metrics,
            plan.directions,
            settings.report_every,
            (Path.cwd() / ".runner" / "models" / safe_name(study_name)).resolve(),
            self.stop,
            prune=plan.pruner[1]["name"] != "NopPruner" and plan.halving is None,
            base_config=keep_base_config(tracker, parent.id, composer),
            halving=plan.halving,
        )
        loop_started = time.perf_counter()
        self._trials_started = True
        ahead = Ahead(budget, warm).start()  # the end's imports, during the last trials
        try:
            if self.in_process:
                run_threads(budget, plan.n_jobs, composer, ctx, tracker, settings.heartbeat_interval)
            else:
                assert self.launcher is not None  # setup() instantiated it for a non-basic launcher
                run_batches(self.launcher, budget, plan.n_jobs, composer, ctx, settings.heartbeat_interval)
        finally:
            ahead.close()
        if self._prefetch is not None:
            from runner.job import MEMO

            budget.add_unreported_pull(MEMO.unclaimed_queries())
        return self._conclude(plan, sweep, budget, tracker, parent, time.perf_counter() - loop_started)

    def _one_at_a_time_if_batched(self, plan: Plan, parent: Run) -> None:
        """n_jobs null and a training table read in batches (too large to keep in memory,
        runner/model/batches.py): trials one at a time with every core. Each concurrent trial
        would hold its own binned Dataset and histograms, and at 10^6 rows and more LightGBM
        scales with threads (docs/sweeps.md). Known once the prefetch has prepared the data,
        which the first trials wait for anyway."""
        if self._prefetch is None or plan.settings.n_jobs is not None or plan.n_jobs == 1:
            return
        from runner.job import MEMO

        if not MEMO.reads_in_batches(plan.base):
            return
        plan.n_jobs = 1
        plan.composer.unsplit_threads()
        parent.log(tags={Tag.N_JOBS: 1})
        _display.say("runner: one trial at a time with every core: the training table is read in batches")

    def _conclude(
        self, plan: Plan, sweep: Sweep, budget: Budget, tracker: Tracker, parent: Run, loop_seconds: float
    ) -> Any:
        """Step 6: the summary and the registered model, or the parent left to other workers."""
        study_name = plan.study_name
        if budget.fatal:
            raise ConfigError(budget.fatal)
        others = budget.leave()
        if others:
            # Workers sharing the study: the last one to finish writes the summary, registers
            # the model and ends the parent run; this one leaves the parent RUNNING.
            parent.status = LEFT_RUNNING
            _display.say(
                f"runner: study {study_name!r}: this worker ran {budget.session_done} trials; "
                f"{others} other worker(s) still in the study: the last worker to finish "
                f"writes the summary and ends parent run {parent.id}"
            )
            return summary_of(sweep, None)
        barrier("summary")  # test hook: the trials are done, the summary is next
        with study_lock(sweep.storage_url, study_name):  # one summary/registration at a time
            summary = finish(
                sweep,
                budget,
                tracker,
                plan.base,
                plan.composer,
                top_k=plan.settings.top_k,
                registered_model=plan.settings.registered_model,
                loop_seconds=loop_seconds,
            )
            log_lineage(sweep, tracker, plan.composer, next(iter(ranked(sweep)), None))
        assert self.config is not None
        _results.write(str(self.config.hydra.sweep.dir), sweep.study, plan.directions)
        return summary

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
