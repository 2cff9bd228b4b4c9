"""Trials as jobs of a Hydra launcher (hydra/launcher=joblib...), in batches of n_jobs.

The sweeper asks the trials and passes each job its trial through the environment
(hydra.job.env_set); the job re-attaches to the trial from the storage (so the storage
must be reachable from the workers, also for pruning) and returns its Outcome as a
dict; the sweeper tells Optuna.

Launchers that write the pickled jobs to files (submitit: hydra.sweep.dir/.submitit/; ray)
carry the sweep's Hydra config there: a password typed into hydra.sweeper.storage is refused
before the study is opened (check_launcher), ${oc.env:VAR} stays an interpolation in them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict

from omegaconf import DictConfig, OmegaConf

from runner import env
from runner.errors import ConfigError, RunnerError, first_line
from runner.names import TrialAttr
from runner.secrets import redact_url, scrub

from ._budget import Budget
from ._compose import Composer
from ._halving import halving_from_env
from ._lineage import trial_context
from ._liveness import owner_info
from ._loop import start_heartbeat
from ._search_space import encode
from ._storage import make_storage
from ._trial import Outcome, TrialContext, execute_trial

if TYPE_CHECKING:
    from hydra.core.utils import JobReturn
    from hydra.plugins.launcher import Launcher
    from optuna.trial import Trial

# Launchers whose jobs are pickled into files (the sweep's config with them).
PICKLES_TO_FILES = ("hydra_plugins.hydra_submitit_launcher.", "hydra_plugins.hydra_ray_launcher.")


class LauncherJobError(RunnerError):
    """A launcher job ended without a result (killed by its scheduler, its worker lost)."""


def check_launcher(config: DictConfig) -> None:
    """Before the study: no password typed into hydra.sweeper.storage when the launcher
    writes the jobs (with the sweep's config) to files."""
    from urllib.parse import urlsplit

    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    if not target.startswith(PICKLES_TO_FILES):
        return
    raw = OmegaConf.to_container(config.hydra.sweeper, resolve=False).get("storage")  # type: ignore[union-attr]
    try:
        password = urlsplit(raw).password if isinstance(raw, str) else None
    except ValueError:
        password = None
    if password and "${" not in password:
        raise ConfigError(
            f"hydra.sweeper.storage={redact_url(str(raw))}: a password typed into the URL would be "
            f"written into the job files {target.rsplit('.', 1)[-1]} keeps under hydra.sweep.dir; "
            f"put ${{oc.env:{env.STORAGE_PASSWORD}}} in the URL in place of the password and export "
            f"{env.STORAGE_PASSWORD} (docs/cluster.md)"
        )


def launched_trial(cfg: DictConfig) -> Dict[str, Any]:
    """Task function of launcher jobs: run the trial named by the environment."""
    import optuna

    from runner.console import quiet_libraries
    from runner.secrets import install_log_filter
    from runner.tracking import Tracker

    install_log_filter()
    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = make_storage(os.environ[env.OPTUNA_STORAGE])
        study = optuna.load_study(study_name=os.environ[env.OPTUNA_STUDY], storage=storage)
        # The trial the sweeper asked, by number, through the storage's public API.
        study_id = storage.get_study_id_from_name(study.study_name)
        number = int(os.environ[env.OPTUNA_TRIAL_NUMBER])
        trial = optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))
        trial.set_user_attr(TrialAttr.WORKER, owner_info())  # the launcher's process running it
        metrics = os.environ[env.OPTUNA_METRICS].split(",")
        report_every = int(os.environ.get(env.OPTUNA_REPORT_EVERY, "1"))
        ctx = TrialContext(
            study_name=study.study_name,
            parent_run_id=os.environ.get(env.PARENT_RUN_ID) or None,
            metrics=metrics,
            directions=[d.name.lower() for d in study.directions],
            report_every=max(1, report_every),
            model_dir=Path(os.environ[env.OPTUNA_MODEL_DIR]),
            prune=report_every > 0,
            base_config=os.environ.get(env.OPTUNA_BASE_CONFIG) or None,
            halving=halving_from_env(os.environ.get(env.OPTUNA_HALVING)),
        )
        tracker = Tracker(cfg.tracker)
    except KeyError as exc:
        return Outcome(
            "FAIL",
            error=f"launcher job without {exc.args[0]} in its environment: the launcher "
            "must pass hydra.job.env_set and the sweeper's environment",
        ).as_dict()
    except RunnerError as exc:
        return Outcome("FAIL", error=f"{type(exc).__name__}: {first_line(exc)}", fatal=True).as_dict()
    try:
        from hydra.core.hydra_config import HydraConfig

        job_overrides = list(HydraConfig.get().overrides.task)
    except Exception:
        job_overrides = []
    return execute_trial(trial, cfg, job_overrides, ctx, tracker).as_dict()


def _outcome(trial: Trial, ret: JobReturn) -> Outcome:
    """A launcher job's return (or its exception) as the trial's Outcome."""
    try:
        value = ret.return_value
        outcome = (
            Outcome(**value)
            if isinstance(value, dict)
            else Outcome("FAIL", error=f"launcher job returned {type(value).__name__}")
        )
    except Exception as exc:
        outcome = Outcome("FAIL", error=f"{type(exc).__name__}: {first_line(exc)}")
    if outcome.state == "FAIL" and outcome.run_id is None:
        outcome.run_id = trial.user_attrs.get(TrialAttr.RUN_ID) if hasattr(trial, "user_attrs") else None
    return outcome


def run_batches(
    launcher: Launcher, budget: Budget, n_jobs: int, composer: Composer, ctx: TrialContext, heartbeat_interval: float
) -> None:
    """Batches of n_jobs trials through the configured Hydra launcher."""
    storage_url = budget.sweep.storage_url
    os.environ[env.OPTUNA_STORAGE] = storage_url  # inherited by local launchers' workers
    job_env = {
        env.OPTUNA_STUDY: ctx.study_name,
        env.PARENT_RUN_ID: ctx.parent_run_id or "",
        env.OPTUNA_METRICS: ",".join(ctx.metrics),
        env.OPTUNA_REPORT_EVERY: str(ctx.report_every if ctx.prune else 0),
        env.OPTUNA_MODEL_DIR: str(ctx.model_dir),
        env.OPTUNA_HALVING: f"{ctx.halving.min_fraction},{ctx.halving.factor}" if ctx.halving else "",
    }
    if redact_url(storage_url) == storage_url:  # never a password on a job's command line
        job_env[env.OPTUNA_STORAGE] = storage_url
    job_idx = 0
    start_heartbeat(budget, heartbeat_interval)
    while not budget.stop.is_set() and not budget.timed_out():
        batch = []
        for _ in range(n_jobs):
            trial = budget.ask()
            if not trial:
                break
            batch.append(trial)
        if not batch:
            break
        jobs = []
        for trial in batch:
            overrides = composer.trial_overrides(trial.params)
            trial.set_user_attr(TrialAttr.OVERRIDES, [scrub(o) for o in overrides])
            sets = {**job_env, env.OPTUNA_TRIAL_NUMBER: str(trial.number)}
            sets[env.OPTUNA_BASE_CONFIG] = trial_context(ctx, composer, trial.params).base_config or ""
            jobs.append(overrides + [f"++hydra.job.env_set.{k}={encode(v)}" for k, v in sets.items()])
        try:
            returns = launcher.launch(jobs, initial_job_idx=job_idx)
        except Exception as exc:  # a job died (scheduler limit, preemption, lost node): no results
            raise LauncherJobError(
                f"a launcher job of trials {[t.number for t in batch]} ended without a result "
                f"({type(exc).__name__}: {first_line(exc)}); a scheduler's limits are "
                "hydra.launcher.timeout_min / mem_gb; the jobs' logs are under hydra.sweep.dir; "
                "run the same command again to resume (trials left RUNNING are marked FAIL)"
            )
        job_idx += len(jobs)
        for trial, ret in zip(batch, returns, strict=False):
            budget.tell(trial, _outcome(trial, ret))
