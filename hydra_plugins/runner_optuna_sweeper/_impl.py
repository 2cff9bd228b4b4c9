"""The runner Optuna sweeper: an Optuna study whose trials are nested MLflow runs.

Loaded only when a sweep starts (the plugin scan skips modules named _*).

Flow of `python -m runner --multirun sweep=lightgbm`:
  1. parse hydra.sweeper.params (+ sweep overrides on the command line) with Hydra's
     override parser, check every key against the composed config, fail before any trial;
  2. open/create the study (load_if_exists) in the storage (default: SQLite file
     .runner/optuna/<study>.db under the current directory), fail stale RUNNING trials
     left by a killed process (Optuna FAIL, child run FAILED);
  3. reuse the study's parent MLflow run (study user attr mlflow_parent_run_id) or create it;
  4. n_jobs worker threads loop ask -> trial -> tell until the study has n_trials
     COMPLETE+PRUNED trials (no batch barrier). Each trial composes its own config
     (config_loader.load_sweep_config, serialized by a lock) and calls
     runner.pipeline.run_job directly with a pruning callback: three MLflow requests
     per trial (create, one log_batch, terminate), features pulled once per process,
     LightGBM Datasets reused per thread. With a non-basic Hydra launcher (joblib...)
     trials run as launcher jobs in batches of n_jobs instead: the job re-attaches to
     its trial from the storage (so the storage must be reachable from the workers,
     also for pruning) and returns its outcome; this process tells Optuna;
  5. the parent gets best value(s)/params/child run id, a top-k table, history and
     importance plots, and the best trial's model (saved locally by each trial, only
     the winner uploaded) is registered.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from runner.cache import kill_point as _kill_point
from runner.errors import ConfigError, RunnerError
from runner.secrets import redact_url, scrub

from ._search_space import SearchSpace, check_keys, describe, encode, grid_space, parse_space

log = logging.getLogger("runner.sweep")

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
# Environment of a trial run by a Hydra launcher job (set through hydra.job.env_set).
ENV_TRIAL = "RUNNER_OPTUNA_TRIAL_ID"
ENV_STUDY = "RUNNER_OPTUNA_STUDY"
ENV_STORAGE = "RUNNER_OPTUNA_STORAGE"
ENV_PARENT = "RUNNER_PARENT_RUN_ID"
ENV_REPORT_EVERY = "RUNNER_OPTUNA_REPORT_EVERY"
ENV_METRICS = "RUNNER_OPTUNA_METRICS"
ENV_MODEL_DIR = "RUNNER_OPTUNA_MODEL_DIR"

MAXIMIZE_SUFFIXES = ("auc", "accuracy", "r2", "f1", "macro_f1", "precision", "recall", "map", "ndcg")
_COMPOSE_LOCK = threading.Lock()


class SweepStopped(Exception):
    """Raised in a running trial's LightGBM loop when the sweep is being stopped."""


# ------------------------------------------------------------------ helpers


def _states():
    from optuna.trial import TrialState

    return TrialState


def default_direction(metric: str) -> str:
    name = metric.split("_", 1)[1] if metric.startswith(("valid_", "test_")) else metric
    return "maximize" if name.endswith(MAXIMIZE_SUFFIXES) else "minimize"


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"


def make_storage(url: str):
    """An Optuna storage for a URL: journal:PATH (JournalFileBackend) or any RDB URL."""
    import optuna

    shown = redact_url(url)
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = url[len("journal:"):]
            path = path[2:] if path.startswith("//") else path
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(path))
        kwargs: Dict[str, Any] = {}
        if url.startswith("sqlite:"):
            # Several worker threads write: wait for the file lock instead of failing.
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        # Workers starting together on an empty database would race creating Optuna's tables
        # (PostgreSQL: UniqueViolation on pg_type): one creates them, the others wait.
        with study_lock(url, "<optuna schema>"):
            return optuna.storages.RDBStorage(url, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"hydra.sweeper.storage={shown}: cannot open the Optuna storage: "
                          f"{scrub(text, [url])[:300]}") from None


@contextmanager
def study_lock(url: str, study_name: str, timeout: float = 600.0):
    """Mutual exclusion between every process sharing the study's storage, for the
    sweep's once-per-study steps (creating the parent run, the summary/registration).

    PostgreSQL: a session-level advisory lock (pg_advisory_lock on a key hashed from
    the study name) on its own connection; MySQL/MariaDB: GET_LOCK. The server drops
    either when the holder's connection closes, so a killed worker never leaves it
    held. SQLite file / journal file (one machine): fcntl lock on a file beside it.
    Other storages: no lock (a warning; start workers one at a time there).
    """
    name = f"runner_optuna:{study_name}"
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    if url.startswith(("postgresql", "postgres", "mysql", "mariadb")):
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        pg = url.startswith("postgres")
        try:
            engine = sqlalchemy.create_engine(url, poolclass=NullPool)
            conn = engine.connect()
        except Exception as exc:
            raise ConfigError(f"hydra.sweeper.storage={redact_url(url)}: cannot connect for the study lock: "
                              f"{scrub(_first_line(exc), [url])[:300]}") from None
        try:
            if pg:
                key = int.from_bytes(digest, "big", signed=True)
                conn.execute(sqlalchemy.text(f"SET lock_timeout = '{int(timeout * 1000)}ms'"))
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            else:
                got = conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, :t)"),
                                   {"n": "runner_optuna:" + digest.hex(), "t": int(timeout)}).scalar()
                if got != 1:
                    raise ConfigError(f"study {study_name!r}: the study lock was not free within {timeout:.0f}s")
            conn.commit()  # the lock is per session: it outlives this transaction
            yield
        finally:
            conn.close()  # releases the lock (session end)
            engine.dispose()
        return
    path = None
    if url.startswith("sqlite:///") and ":memory:" not in url:
        path = url[len("sqlite:///"):].split("?", 1)[0]
    elif url.startswith("journal:"):
        path = url[len("journal:"):]
        path = path[2:] if path.startswith("//") else path
    if path is None:
        if not url.startswith("sqlite"):
            log.warning("storage %s: no cross-process lock for the parent run and summary; start workers "
                        "one at a time", redact_url(url).split(":", 1)[0])
        yield
        return
    import fcntl

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.runner-lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build(kind: str, node: Any, space: Optional[SearchSpace] = None) -> Tuple[Any, Dict[str, Any]]:
    """The Optuna sampler or pruner of hydra.sweeper.<kind>, and its description for tags."""
    from hydra.utils import instantiate

    spec = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
    if not spec.get("_target_"):
        spec["_target_"] = "optuna.pruners.NopPruner" if kind == "pruner" else "optuna.samplers.TPESampler"
    name = spec["_target_"].rsplit(".", 1)[-1]
    # null means Optuna's own default: leave it out rather than pass None.
    spec = {k: v for k, v in spec.items() if v is not None}
    options = {k: v for k, v in spec.items() if k != "_target_"}
    if name == "GridSampler" and not spec.get("search_space"):
        spec["search_space"] = grid_space(space)
    needs = {"CmaEsSampler": ("cmaes", "cmaes"), "GPSampler": ("torch", "torch")}.get(name)
    if needs:
        try:
            __import__(needs[0])
        except ImportError:
            raise ConfigError(f"hydra/sweeper/{kind}={name} needs the {needs[1]!r} package: "
                              f"pip install {needs[1]} (or choose another {kind})") from None
    try:
        obj = instantiate(spec, _convert_="all")
    except Exception as exc:
        raise ConfigError(f"hydra.sweeper.{kind} ({spec['_target_']}): {_first_line(exc)}") from None
    return obj, {"name": name, "options": options}


def _test_barrier(point: str) -> None:
    """Test hook (tests/test_distributed.py): RUNNER_TEST_BARRIER=<point>:<dir>:<n> makes
    the process wait at barrier(<point>) until n processes have reached it (at most 120 s)."""
    spec = os.environ.get("RUNNER_TEST_BARRIER")
    if not spec or not spec.startswith(point + ":"):
        return
    folder, _, n = spec[len(point) + 1:].rpartition(":")
    Path(folder).mkdir(parents=True, exist_ok=True)
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(Path(folder).iterdir())) < int(n) and time.monotonic() < deadline:
        time.sleep(0.05)


def _proc_start(pid: int) -> Optional[str]:
    """Start time of a process (clock ticks since boot, Linux), to tell pid reuse apart."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
        return text.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_info() -> Dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _proc_start(os.getpid())}


def stale_reason(attrs: Dict[str, Any], started: Optional[float], timeout: float,
                 now: Optional[float] = None) -> Optional[str]:
    """Why a RUNNING trial has no live owner, or None if it may still be running."""
    now = now or time.time()
    owner = attrs.get("runner.owner") or {}
    beat = attrs.get("runner.heartbeat") or started
    if owner.get("host") == socket.gethostname() and owner.get("pid"):
        pid = int(owner["pid"])
        if pid == os.getpid():
            return None  # ours (a resumed sweep never holds RUNNING trials at start)
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            return f"owner process {pid} on {owner['host']} is gone"
        if owner.get("start") and _proc_start(pid) not in (None, owner["start"]):
            return f"owner process {pid} on {owner['host']} is gone (pid reused)"
        return None
    if beat is not None and now - float(beat) > timeout:
        return f"no heartbeat for {now - float(beat):.0f}s (> heartbeat_timeout {timeout:.0f}s)"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"


# ------------------------------------------------------------------ pruning


class PruningCallback:
    """LightGBM callback: report the validation metric every `every` rounds, prune when told.

    Also stops the trial when the sweep is being stopped (Ctrl-C, a fatal error elsewhere).
    """

    order = 30

    def __init__(self, trial, metric: Optional[str], maximize: bool, every: int = 1,
                 stop: Optional[threading.Event] = None, prune: bool = True):
        self.trial = trial
        self.metric = metric
        self.maximize = maximize
        self.every = max(1, int(every))
        self.stop = stop
        self.prune = prune
        self.warned = False

    def _pick(self, results):
        valid = [r for r in results if r[0] == "valid"]
        for r in valid:
            if self.metric and r[1] == self.metric:
                return r
        for r in valid:
            if bool(r[3]) == self.maximize:
                return r
        return None

    def __call__(self, env) -> None:
        import optuna

        if self.stop is not None and self.stop.is_set():
            raise SweepStopped("the sweep is stopping")
        if not self.prune:
            return
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


# ------------------------------------------------------------------ one trial


@dataclass
class TrialContext:
    study_name: str
    parent_run_id: Optional[str]
    metrics: List[str]
    directions: List[str]
    report_every: int
    model_dir: Path
    stop: Optional[threading.Event] = None
    prune: bool = True  # False with NopPruner: no per-round report to the storage


@dataclass
class Outcome:
    state: str  # COMPLETE, PRUNED, FAIL
    values: Optional[List[float]] = None
    run_id: Optional[str] = None
    error: Optional[str] = None
    fatal: bool = False
    feature_queries: int = 0
    seconds: float = 0.0
    metrics: Dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


def execute_trial(trial, cfg: DictConfig, overrides: Sequence[str], ctx: TrialContext, tracker) -> Outcome:
    """Run one trial as a child MLflow run; never raises for trial failures."""
    from runner.pipeline import run_job
    from runner.train import OBJECTIVES

    started = time.perf_counter()
    values_sampled = dict(trial.params)
    lgb_metric = cfg.model.metric or OBJECTIVES.get(cfg.model.params.objective)
    wanted = ctx.metrics[0].split("_", 1)[1] if ctx.metrics[0].startswith("valid_") else lgb_metric
    callback = PruningCallback(trial, wanted, ctx.directions[0] == "maximize", ctx.report_every,
                               stop=ctx.stop, prune=ctx.prune and len(ctx.directions) == 1)
    run_ids: List[str] = []

    def on_run(run_id: str) -> None:
        run_ids.append(run_id)
        trial.set_user_attr("mlflow_run_id", run_id)

    def final_tags(status: str) -> Dict[str, Any]:
        state = {"FINISHED": "COMPLETE", "KILLED": "PRUNED"}.get(status, "FAIL")
        tags = {"optuna.state": state, "optuna.params": json.dumps(values_sampled, default=str)}
        tags.update({f"optuna.param.{k}": v for k, v in values_sampled.items()})
        return tags

    try:
        result = run_job(cfg, tracker=tracker, parent_run_id=ctx.parent_run_id, run_name=f"trial-{trial.number}",
                         extra_tags={"optuna.trial_number": trial.number, "optuna.study_name": ctx.study_name,
                                     "runner.sweep": "runner_optuna",
                                     "runner.worker": f"{socket.gethostname()}:{os.getpid()}"},
                         callbacks=[callback], log_model=False, on_run=on_run, job_overrides=list(overrides),
                         final_tags=final_tags)
    except BaseException as exc:  # noqa: BLE001 - every outcome is reported to Optuna
        seconds = time.perf_counter() - started
        run_id = run_ids[0] if run_ids else None
        if type(exc).__name__ == "TrialPruned":
            return Outcome("PRUNED", run_id=run_id, error=_first_line(exc), seconds=seconds)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        fatal = isinstance(exc, RunnerError)
        if not isinstance(exc, (RunnerError, SweepStopped)):
            log.warning("trial %d failed: %s", trial.number, _first_line(exc), exc_info=True)
        return Outcome("FAIL", run_id=run_id, error=f"{type(exc).__name__}: {_first_line(exc)}", fatal=fatal,
                       seconds=seconds)
    missing = [m for m in ctx.metrics if m not in result.metrics]
    if missing:
        return Outcome("FAIL", run_id=result.run_id, fatal=True, seconds=time.perf_counter() - started,
                       error=f"ConfigError: hydra.sweeper.metric={missing[0]!r} is not a metric of the job "
                             f"(metrics: {', '.join(sorted(result.metrics))})")
    model_path = ctx.model_dir / f"{trial.number}.txt"
    try:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        result.extra["booster"].save_model(str(model_path))
        trial.set_user_attr("model_path", str(model_path))
    except Exception as exc:  # the winner is retrained at the end if its file is missing
        log.warning("trial %d: model not saved locally: %s", trial.number, _first_line(exc))
    return Outcome("COMPLETE", values=[float(result.metrics[m]) for m in ctx.metrics], run_id=result.run_id,
                   feature_queries=result.features.feature_queries, seconds=time.perf_counter() - started,
                   metrics=dict(result.metrics))


def launched_trial(cfg: DictConfig) -> Dict[str, Any]:
    """Task function of launcher jobs (hydra/launcher=joblib...): run the trial named by env."""
    import optuna

    from runner.app import quiet_libraries
    from runner.secrets import install_log_filter
    from runner.tracking import Tracker

    install_log_filter()
    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage_url = os.environ[ENV_STORAGE]
        study = optuna.load_study(study_name=os.environ[ENV_STUDY], storage=make_storage(storage_url))
        trial = optuna.trial.Trial(study, int(os.environ[ENV_TRIAL]))
        trial.set_user_attr("runner.worker", owner_info())  # the launcher's process running it
        metrics = os.environ[ENV_METRICS].split(",")
        ctx = TrialContext(study_name=study.study_name, parent_run_id=os.environ.get(ENV_PARENT) or None,
                           metrics=metrics, directions=[d.name.lower() for d in study.directions],
                           report_every=max(1, int(os.environ.get(ENV_REPORT_EVERY, "1"))),
                           model_dir=Path(os.environ[ENV_MODEL_DIR]),
                           prune=int(os.environ.get(ENV_REPORT_EVERY, "1")) > 0)
        tracker = Tracker(cfg.tracker)
    except KeyError as exc:
        return Outcome("FAIL", error=f"launcher job without {exc.args[0]} in its environment: the launcher "
                                     "must pass hydra.job.env_set and the sweeper's environment").as_dict()
    except RunnerError as exc:
        return Outcome("FAIL", error=f"{type(exc).__name__}: {_first_line(exc)}", fatal=True).as_dict()
    try:
        from hydra.core.hydra_config import HydraConfig

        job_overrides = list(HydraConfig.get().overrides.task)
    except Exception:
        job_overrides = []
    return execute_trial(trial, cfg, job_overrides, ctx, tracker).as_dict()


# ------------------------------------------------------------------ the sweeper


class RunnerOptunaSweeperImpl:
    def __init__(self, settings: Dict[str, Any]):
        self.s = dict(settings)
        self.launcher = None
        self.config: Optional[DictConfig] = None
        self._ask_lock = threading.Lock()
        self._print_lock = threading.Lock()
        self._done = threading.Condition()
        self.stop = threading.Event()
        self._fatal: Optional[str] = None
        self._stop_reason: Optional[str] = None
        self._failures = 0
        self._session_done = 0
        self._feature_queries = 0
        self._mine: Dict[int, int] = {}  # trial number -> trial id, running in this process
        self.loop_seconds = 0.0
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
                hydra_context=hydra_context, task_function=launched_trial, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        try:
            return self._sweep(arguments)
        except RunnerError as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"runner: error: {scrub(str(exc))}", file=sys.stderr, flush=True)
            sys.exit(2)
        finally:
            # No warehouse or cache write cut off at exit, unless the sweep failed before its
            # trials (then the error comes at once; a cut-off cache write leaves only a temp
            # file, which the next writer of that entry removes).
            if self._prefetch is not None and self._trials_started:
                self._prefetch.join()

    # composition -------------------------------------------------------------

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """The task config of one job (no hydra node), as Hydra's launcher would compose it."""
        assert self.config is not None
        with _COMPOSE_LOCK:
            cfg = self.config_loader.load_sweep_config(self.config, list(overrides))
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        return cfg

    def trial_config(self, values: Dict[str, Any]) -> DictConfig:
        """The task config of a trial: Hydra composition when a config group is searched,
        else the sampled values set on a copy of the composed base config (what Hydra's
        key=value override does, without recomposing every file: ~1 s -> ~1 ms)."""
        if self._slow_keys:
            return self.compose(self.fixed_args + self.space.overrides(values))
        import copy

        cfg = copy.deepcopy(self.base)
        for key, value in values.items():
            OmegaConf.update(cfg, key, value, merge=True)
        return cfg

    def _compose_checked(self, overrides: Sequence[str], what: str) -> DictConfig:
        try:
            return self.compose(overrides)
        except Exception as exc:
            text = _first_line(exc)
            raise ConfigError(f"{what}: {text}") from None

    # the sweep ---------------------------------------------------------------

    def _sweep(self, arguments: List[str]) -> Any:
        import optuna

        from runner.app import quiet_libraries
        from runner.secrets import install_log_filter
        from runner.tracking import Tracker

        install_log_filter()
        quiet_libraries()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = self.s
        self.started = time.perf_counter()

        # 1. search space, checked before anything runs
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create(config_loader=self.config_loader)
        fixed_args, sweep_args = [], []
        for arg in arguments:
            (sweep_args if parser.parse_override(arg).is_sweep_override() else fixed_args).append(arg)
        space = parse_space(s.get("params") or {}, sweep_args)
        if not space.distributions:
            raise ConfigError("hydra.sweeper.params is empty: nothing to search (e.g. sweep=lightgbm, or "
                              "model.params.num_leaves='int(interval(15,255))' on the command line)")
        n_jobs = int(s.get("n_jobs") or 1)
        if n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_jobs must be >= 1, got {n_jobs}")
        n_trials = int(s.get("n_trials") or 0)
        if n_trials < 1:
            raise ConfigError(f"hydra.sweeper.n_trials must be >= 1, got {n_trials}")
        base = self._compose_checked(fixed_args, "the command line's overrides")
        check_keys(space, base)
        extra = [f"{k}={v}" for k, v in space.fixed.items()]  # fixed values in hydra.sweeper.params
        space.fixed.clear()
        if n_jobs > 1 and self.in_process and int(OmegaConf.select(base, "model.params.num_threads", default=0) or 0) == 0:
            extra.append(f"model.params.num_threads={max(1, (os.cpu_count() or 1) // n_jobs)}")  # no oversubscription
        if extra:
            fixed_args += extra
            base = self._compose_checked(fixed_args, "the fixed values of hydra.sweeper.params")
        self.fixed_args = fixed_args
        self.space = space
        self.base = base
        choices = OmegaConf.select(self.config, "hydra.runtime.choices", default={}) or {}
        self._slow_keys = [k for k in space.distributions if k in choices or "/" in k or k[:1] in "+~"]
        self._check_bounds(space)

        # 2. objective
        metrics = s.get("metric")
        metrics = [metrics] if isinstance(metrics, str) else list(metrics or [])
        direction = s.get("direction")
        directions = [direction] if isinstance(direction, str) else list(direction or [])
        if not metrics:
            from runner.train import headline

            if len(directions) > 1:
                raise ConfigError("hydra.sweeper.direction is a list (multi-objective): set "
                                  "hydra.sweeper.metric to a list of as many job metrics")
            metrics = [f"valid_{headline(base.model.params.objective)}"]
        if not directions:
            directions = [default_direction(m) for m in metrics]
        if len(directions) != len(metrics):
            raise ConfigError(f"hydra.sweeper.direction has {len(directions)} entries but hydra.sweeper.metric "
                              f"has {len(metrics)}")
        for d in directions:
            if d not in ("maximize", "minimize"):
                raise ConfigError(f"hydra.sweeper.direction must be maximize or minimize, got {d!r}")
        self.metrics, self.directions = metrics, directions

        # 3. sampler, pruner, storage, study
        sampler, sampler_desc = self._build("sampler", space)
        pruner, pruner_desc = self._build("pruner", space)
        choices = OmegaConf.select(self.config, "hydra.runtime.choices", default={}) or {}
        study_name = s.get("study_name") or f"runner-{choices.get('sweep') or base.tracker.experiment}"
        # Every trial reads the same data (no config group searched): pull and prepare it
        # now, while the study, the tracking store and the parent run are set up.
        if self.in_process and not self._slow_keys:
            from runner.pipeline import prefetch

            self._prefetch = prefetch(base, query_tag=f"runner sweep study={study_name}")
        storage_url = s.get("storage") or "sqlite:///" + str(
            (Path.cwd() / ".runner" / "optuna" / f"{safe_name(study_name)}.db").resolve())
        if storage_url.startswith("sqlite:///"):
            Path(storage_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.storage_url = storage_url
        shown_storage = redact_url(storage_url)
        storage = make_storage(storage_url)
        try:
            study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=study_name,
                                        load_if_exists=True,
                                        **({"direction": directions[0]} if len(directions) == 1
                                           else {"directions": directions}))
        except Exception as exc:
            raise ConfigError(f"hydra.sweeper.storage={shown_storage}: cannot open study {study_name!r}: "
                              f"{scrub(_first_line(exc), [storage_url])}") from None
        have = [d.name.lower() for d in study.directions]
        if have != directions:
            raise ConfigError(f"study {study_name!r} in {shown_storage} optimizes {have}, not {directions}: "
                              "set hydra.sweeper.direction to match, or a new hydra.sweeper.study_name")
        self.study = study
        self.budget = n_trials
        if sampler_desc["name"] == "GridSampler":
            size = math.prod(len(v) for v in sampler.__dict__.get("_search_space", {}).values()) or n_trials
            self.budget = min(n_trials, size)
        self.model_dir = (Path.cwd() / ".runner" / "models" / safe_name(study_name)).resolve()

        # 4. parent run
        task_cfg = base
        tracker = Tracker(task_cfg.tracker)
        self.tracker = tracker
        settings_tags = {
            "runner.sweep": "runner_optuna", "optuna.study_name": study_name,
            "optuna.sampler": sampler_desc["name"], "optuna.sampler.options": json.dumps(sampler_desc["options"], default=str),
            "optuna.pruner": pruner_desc["name"], "optuna.pruner.options": json.dumps(pruner_desc["options"], default=str),
            "optuna.direction" if len(directions) == 1 else "optuna.directions": ",".join(directions),
            "optuna.metric": ",".join(metrics), "optuna.storage": shown_storage, "optuna.n_trials": n_trials,
            "optuna.n_jobs": n_jobs, "optuna.search_space": json.dumps(describe(space)),
            "optuna.launcher": "threads" if self.in_process else OmegaConf.select(self.config, "hydra.launcher._target_"),
        }
        self.parent_run_id, resumed = self._ensure_parent(study, tracker, task_cfg, arguments, settings_tags)
        parent_status = "FAILED"
        try:
            self._fail_stale(study, tracker)
            before = self._counts()
            self._say(f"runner: study {study_name!r} ({'resumed' if resumed or before['finished'] else 'new'}, "
                      f"{before['finished']}/{self.budget} trials finished) in {shown_storage}; parent run "
                      f"{self.parent_run_id}; {sampler_desc['name']} sampler, {pruner_desc['name']}, "
                      f"{'threads' if self.in_process else 'launcher'} x{n_jobs}")
            self._save_multirun_yaml()
            ctx = TrialContext(study_name, self.parent_run_id, metrics, directions, int(s.get("report_every") or 1),
                               self.model_dir, self.stop, prune=pruner_desc["name"] != "NopPruner")
            loop_started = time.perf_counter()
            self._trials_started = True
            if self.in_process:
                self._run_threads(ctx, n_jobs)
            else:
                self._run_launcher(ctx, n_jobs)
            self.loop_seconds = time.perf_counter() - loop_started
            if self._fatal:
                raise _Fatal(self._fatal)
            others = self._others_running()
            if others:
                # Workers sharing the study: the last one to finish writes the summary, registers
                # the model and ends the parent run; this one leaves the parent RUNNING.
                parent_status = None
                self._say(f"runner: study {study_name!r}: this worker ran {self._session_done} trials; "
                          f"{others} trial(s) still running in other workers: the last worker to finish "
                          f"writes the summary and ends parent run {self.parent_run_id}")
                return {"best_trial": None, "best_values": None, "parent_run_id": self.parent_run_id}
            with study_lock(self.storage_url, study_name):  # one summary/registration at a time
                summary = self._finish(study, tracker, task_cfg)
            parent_status = "FINISHED"
            return summary
        except KeyboardInterrupt:
            parent_status = "KILLED"
            raise
        except _Fatal as exc:
            raise ConfigError(str(exc)) from None
        finally:
            self.stop.set()
            if parent_status not in (None, "FINISHED"):
                try:
                    if self._others_running():
                        log.warning("parent run %s left RUNNING: other workers still run trials of the study",
                                    self.parent_run_id)
                        parent_status = None
                except Exception:
                    pass
            try:
                if parent_status is None:
                    raise _Deferred()
                tracker.log(self.parent_run_id, tags={"runner.sweep.status": parent_status,
                                                      **({"runner.error": self._fatal} if self._fatal else {})})
                tracker.end(self.parent_run_id, parent_status)
            except _Deferred:
                pass
            except RunnerError as exc:
                log.error("%s", exc)

    # building blocks ---------------------------------------------------------

    def _check_bounds(self, space: SearchSpace) -> None:
        """Build the config once with every low and once with every high bound, so a bound
        that does not fit the schema (a float for an int setting...) fails before any trial."""
        from optuna.distributions import CategoricalDistribution

        for side in ("low", "high"):
            values = {k: getattr(d, side) for k, d in space.distributions.items()
                      if not isinstance(d, CategoricalDistribution)}
            if not values:
                continue
            try:
                self.trial_config(values)
            except Exception as exc:
                text = _first_line(exc)
                culprit = next((k for k in values if k in text or k.rsplit(".", 1)[-1] in text), None) \
                    or next(iter(values))
                raise ConfigError(f"{space.origin.get(culprit, culprit)}: {side} bound {values[culprit]!r} "
                                  f"does not fit the config: {text}") from None

    def _build(self, kind: str, space: SearchSpace) -> Tuple[Any, Dict[str, Any]]:
        return build(kind, self.s.get(kind), space)

    def _ensure_parent(self, study, tracker, task_cfg, arguments, tags) -> Tuple[str, bool]:
        """The study's parent run: reused, or created by exactly one of the workers that start
        the study together. The check-and-create runs under study_lock (an advisory lock on
        PostgreSQL), so a second worker waits, then finds and reuses the first one's id."""
        _test_barrier("parent")  # test hook: every worker gets here before any creates
        with study_lock(self.storage_url, study.study_name):
            return self._ensure_parent_locked(study, tracker, task_cfg, arguments, tags)

    def _ensure_parent_locked(self, study, tracker, task_cfg, arguments, tags) -> Tuple[str, bool]:
        from runner.pipeline import base_tags

        run_id = study.user_attrs.get("mlflow_parent_run_id")  # read inside the lock
        if run_id:
            try:
                run = tracker.client.get_run(run_id)
            except Exception:
                run = None
            if run is not None and run.info.lifecycle_stage == "active" and \
                    run.info.experiment_id == tracker.experiment_id():
                try:
                    if run.info.status != "RUNNING":
                        tracker.client.update_run(run_id, status="RUNNING")
                except Exception as exc:
                    raise tracker._fail(f"reopen parent run {run_id}", exc) from None
                tracker.log(run_id, tags={**tags, "runner.sweep.status": "RUNNING"})
                return run_id, True
            log.warning("study %s: parent run %s is not in experiment %r of %s: starting a new parent run",
                        study.study_name, run_id, tracker.cfg.experiment, tracker.display_uri)
        all_tags = {**base_tags(task_cfg, arguments), **tags, "runner.sweep.status": "RUNNING"}
        run_id = tracker.start_run(study.study_name, all_tags)
        params = {"study_name": study.study_name, "sampler": tags["optuna.sampler"], "pruner": tags["optuna.pruner"],
                  "direction": ",".join(self.directions), "metric": ",".join(self.metrics),
                  "storage": tags["optuna.storage"], "n_trials_at_start": tags["optuna.n_trials"]}
        params.update({f"space.{k}": v for k, v in describe(self.space).items()})
        tracker.log(run_id, params=params)
        study.set_user_attr("mlflow_parent_run_id", run_id)
        return run_id, False

    def _fail_stale(self, study, tracker) -> None:
        """Trials left RUNNING by a dead process: FAIL in Optuna, FAILED in MLflow."""
        TrialState = _states()
        failed_runs = set()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            started = t.datetime_start.timestamp() if t.datetime_start else None
            reason = stale_reason(t.user_attrs, started, float(self.s.get("heartbeat_timeout") or 600))
            if reason is None:
                continue
            try:
                study._storage.set_trial_user_attr(t._trial_id, "stale", reason)
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except Exception as exc:  # finished concurrently by its owner after all
                log.debug("trial %d: %s", t.number, exc)
                continue
            self._say(f"runner: trial {t.number} was left RUNNING ({reason}): marked FAIL")
            run_id = t.user_attrs.get("mlflow_run_id")
            if run_id:
                self._end_child(tracker, run_id, reason)
                failed_runs.add(run_id)
        # Child runs created just before a kill, whose id never reached the study. Trial states
        # are read after the run list: other workers sharing the study start and finish trials
        # meanwhile, and only a child whose trial has FAILed (or is unknown) is an orphan.
        try:
            runs = tracker.client.search_runs(
                [tracker.experiment_id()],
                f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and attributes.status = 'RUNNING'",
                max_results=1000)
        except Exception as exc:
            raise tracker._fail("list running child runs", exc) from None
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        alive = {n for n, t in trials.items() if t.state != TrialState.FAIL}
        for run in runs:
            number = run.data.tags.get("optuna.trial_number")
            t = trials.get(int(number)) if number is not None else None
            if t is not None and t.state in (TrialState.COMPLETE, TrialState.PRUNED) and \
                    t.user_attrs.get("mlflow_run_id") == run.info.run_id:
                self._finish_child(tracker, run, t)  # finished in Optuna; MLflow missed its end
                continue
            if run.info.run_id in failed_runs or (number is not None and int(number) in alive):
                continue
            self._say(f"runner: child run {run.info.run_id} (trial {number}) was left RUNNING but its trial "
                      f"is {t.state.name if t is not None else 'unknown'} in Optuna: marked FAILED")
            self._end_child(tracker, run.info.run_id, "its trial is no longer running")

    def _finish_child(self, tracker, run, t) -> None:
        """A trial finished in Optuna whose child run never got its end (e.g. a tracking outage):
        fill what is missing from the study and end it as Optuna has it."""
        TrialState = _states()
        status = "FINISHED" if t.state == TrialState.COMPLETE else "KILLED"
        metrics = {m: v for m, v in zip(self.metrics, t.values or []) if m not in run.data.metrics}
        params = {k: v for k, v in t.params.items() if k not in run.data.params}
        try:
            tracker.log(run.info.run_id, metrics=metrics, params=params,
                        tags={"optuna.state": t.state.name, "runner.resume.filled": "end" +
                              "".join(f",{k}" for k in [*metrics, *params])})
            tracker.end(run.info.run_id, status)
        except RunnerError as exc:
            log.warning("could not end child run %s of trial %d: %s", run.info.run_id, t.number, exc)
            return
        self._say(f"runner: trial {t.number} finished in Optuna ({t.state.name}) but its MLflow run "
                  f"{run.info.run_id} was left RUNNING: ended {status}"
                  + (f", filled missing {', '.join([*metrics, *params])}" if metrics or params else ""))

    def _end_child(self, tracker, run_id: str, reason: str) -> None:
        try:
            tracker.log(run_id, tags={"optuna.state": "FAIL", "runner.error": f"stale trial: {reason}"})
            tracker.end(run_id, "FAILED")
        except RunnerError as exc:
            log.warning("could not end stale child run %s: %s", run_id, exc)

    def _save_multirun_yaml(self) -> None:
        try:
            sweep_dir = Path(self.config.hydra.sweep.dir)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            # Like Hydra's basic sweeper, minus credentials (a storage URL may carry a password).
            text = OmegaConf.to_yaml(self.config)
            (sweep_dir / "multirun.yaml").write_text(scrub(text))
        except Exception as exc:
            log.debug("multirun.yaml not saved: %s", exc)

    # budget ------------------------------------------------------------------

    def _counts(self) -> Dict[str, Any]:
        TrialState = _states()
        trials = self.study.get_trials(deepcopy=False)
        c = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "waiting": 0}
        best = None
        for t in trials:
            if t.state == TrialState.COMPLETE:
                c["complete"] += 1
                if len(self.directions) == 1 and t.values:
                    v = t.values[0]
                    if best is None or (v > best[0] if self.directions[0] == "maximize" else v < best[0]):
                        best = (v, t.number)
            elif t.state == TrialState.PRUNED:
                c["pruned"] += 1
            elif t.state == TrialState.FAIL:
                c["failed"] += 1
            elif t.state == TrialState.RUNNING:
                c["running"] += 1
            elif t.state == TrialState.WAITING:
                c["waiting"] += 1
        c["finished"] = c["complete"] + c["pruned"]
        c["best"] = best
        return c

    def _others_running(self) -> int:
        """RUNNING trials of the study owned by other live processes (workers sharing it)."""
        TrialState = _states()
        me = owner_info()
        timeout = float(self.s.get("heartbeat_timeout") or 600)
        n = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = t.user_attrs.get("runner.owner") or {}
            if owner.get("host") == me["host"] and owner.get("pid") == me["pid"]:
                continue
            started = t.datetime_start.timestamp() if t.datetime_start else None
            if stale_reason(t.user_attrs, started, timeout) is None:
                n += 1
        return n

    def _ask(self):
        """A new trial, or None when the budget is (about to be) spent. Serialized in-process."""
        TrialState = _states()
        with self._ask_lock:
            c = self._counts()
            if c["finished"] + c["running"] + c["waiting"] >= self.budget:
                return None
            trial = self.study.ask(self.space.distributions)
            trial.set_user_attr("runner.owner", owner_info())
            # Other processes may share the storage: count what is numbered before us.
            counted = [t for t in self.study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING,
                                        TrialState.WAITING)) if t.number < trial.number]
            if len(counted) >= self.budget:
                trial.set_user_attr("over_budget", True)
                self.study.tell(trial, state=TrialState.FAIL)
                return False
            self._mine[trial.number] = trial._trial_id
            return trial

    def _tell(self, trial, outcome: Outcome) -> None:
        TrialState = _states()
        try:
            if outcome.feature_queries:  # summed over the study's trials for the parent run
                trial.set_user_attr("feature_queries", outcome.feature_queries)
            if outcome.state == "COMPLETE":
                self.study.tell(trial, outcome.values)
            elif outcome.state == "PRUNED":
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                if outcome.error:
                    trial.set_user_attr("error", outcome.error[:1000])
                if outcome.error and outcome.error.startswith("SweepStopped"):
                    trial.set_user_attr("interrupted", True)
                self.study.tell(trial, state=TrialState.FAIL)
        finally:
            self._mine.pop(trial.number, None)
        with self._done:
            self._session_done += outcome.state in ("COMPLETE", "PRUNED")
            self._feature_queries += outcome.feature_queries
            if outcome.state == "FAIL" and not (outcome.error or "").startswith("SweepStopped"):
                self._failures += 1
                if outcome.fatal and not self._fatal:
                    self._fatal = f"trial {trial.number}: {outcome.error.split(': ', 1)[-1]}"
                    self.stop.set()
                max_failures = int(self.s.get("max_failures") or 0)
                if max_failures and self._failures >= max_failures and not self.stop.is_set():
                    self._stop_reason = (f"{self._failures} trials failed (hydra.sweeper.max_failures="
                                         f"{max_failures}); last: {outcome.error}")
                    self.stop.set()
            self._done.notify_all()
        self._progress(trial.number, outcome)

    # running trials ----------------------------------------------------------

    def _timed_out(self) -> bool:
        timeout = self.s.get("timeout")
        if timeout and time.perf_counter() - self.started > float(timeout):
            if not self._stop_reason:
                self._stop_reason = f"hydra.sweeper.timeout={timeout}s reached"
            return True
        return False

    def _run_threads(self, ctx: TrialContext, n_jobs: int) -> None:
        def worker() -> None:
            while not self.stop.is_set() and not self._timed_out():
                trial = self._ask()
                if trial is False:
                    return  # another process took the last slot
                if trial is None:
                    c = self._counts()
                    if c["finished"] >= self.budget:
                        return
                    with self._done:  # wait for a running trial (ours or another process's) to end
                        self._done.wait(timeout=1.0)
                    continue
                overrides = self.fixed_args + self.space.overrides(trial.params)
                try:
                    trial.set_user_attr("overrides", [scrub(o) for o in overrides])
                    cfg = self.trial_config(trial.params)
                except Exception as exc:
                    outcome = Outcome("FAIL", error=f"ConfigError: composing the trial's config failed: "
                                                    f"{_first_line(exc)}", fatal=True)
                else:
                    outcome = execute_trial(trial, cfg, overrides, ctx, self.tracker)
                self._tell(trial, outcome)
                _kill_point("between_trials")  # test hook (runner/cache.py)

        threads = [threading.Thread(target=worker, name=f"runner-optuna-{i}", daemon=True) for i in range(n_jobs)]
        beat = threading.Thread(target=self._heartbeat, name="runner-optuna-heartbeat", daemon=True)
        for t in threads:
            t.start()
        beat.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
        except KeyboardInterrupt:
            self.stop.set()
            self._stop_reason = "interrupted"
            for t in threads:
                t.join(timeout=30)
            raise

    def _heartbeat(self) -> None:
        interval = float(self.s.get("heartbeat_interval") or 30)
        while not self.stop.wait(interval):
            for number, trial_id in list(self._mine.items()):
                try:
                    self.study._storage.set_trial_user_attr(trial_id, "runner.heartbeat", time.time())
                except Exception:  # finished meanwhile
                    pass

    def _run_launcher(self, ctx: TrialContext, n_jobs: int) -> None:
        """Batches of n_jobs trials through the configured Hydra launcher."""
        assert self.launcher is not None
        os.environ[ENV_STORAGE] = self.storage_url  # inherited by local launchers' workers
        env = {ENV_STUDY: ctx.study_name, ENV_PARENT: ctx.parent_run_id or "", ENV_METRICS: ",".join(ctx.metrics),
               ENV_REPORT_EVERY: str(ctx.report_every if ctx.prune else 0), ENV_MODEL_DIR: str(ctx.model_dir)}
        if redact_url(self.storage_url) == self.storage_url:
            env[ENV_STORAGE] = self.storage_url
        job_idx = 0
        beat = threading.Thread(target=self._heartbeat, name="runner-optuna-heartbeat", daemon=True)
        beat.start()
        while not self.stop.is_set() and not self._timed_out():
            batch = []
            for _ in range(n_jobs):
                trial = self._ask()
                if not trial:
                    break
                batch.append(trial)
            if not batch:
                break
            jobs = []
            for trial in batch:
                overrides = self.fixed_args + self.space.overrides(trial.params)
                trial.set_user_attr("overrides", [scrub(o) for o in overrides])
                sets = {**env, ENV_TRIAL: str(trial._trial_id)}
                jobs.append(overrides + [f"++hydra.job.env_set.{k}={encode(v)}" for k, v in sets.items()])
            returns = self.launcher.launch(jobs, initial_job_idx=job_idx)
            job_idx += len(jobs)
            for trial, ret in zip(batch, returns):
                try:
                    value = ret.return_value
                    outcome = Outcome(**value) if isinstance(value, dict) else \
                        Outcome("FAIL", error=f"launcher job returned {type(value).__name__}")
                except Exception as exc:
                    outcome = Outcome("FAIL", error=f"{type(exc).__name__}: {_first_line(exc)}")
                if outcome.state == "FAIL" and outcome.run_id is None:
                    outcome.run_id = trial.user_attrs.get("mlflow_run_id") if hasattr(trial, "user_attrs") else None
                self._tell(trial, outcome)

    # output ------------------------------------------------------------------

    def _say(self, text: str) -> None:
        with self._print_lock:
            print(text, file=sys.stderr, flush=True)

    def _progress(self, number: int, outcome: Outcome) -> None:
        if not self.s.get("progress", True):
            return
        c = self._counts()
        elapsed = time.perf_counter() - self.started
        remaining = max(0, self.budget - c["finished"])
        eta = f"ETA {_duration(elapsed / self._session_done * remaining)}" if self._session_done and remaining else (
            "ETA 0s" if not remaining else "ETA ?")
        best = f"best {self.metrics[0]}={c['best'][0]:.4f} (#{c['best'][1]})" if c["best"] else "best -"
        what = {"COMPLETE": f"{self.metrics[0]}={outcome.values[0]:.4f}" if outcome.values else "complete",
                "PRUNED": "pruned", "FAIL": f"FAILED ({(outcome.error or '')[:120]})"}[outcome.state]
        self._say(f"[{self.study.study_name}] trial {number} {what} in {outcome.seconds:.1f}s | "
                  f"{c['finished']}/{self.budget} done, {c['running']} running, {c['pruned']} pruned, "
                  f"{c['failed']} failed | {best} | {_duration(elapsed)} elapsed, {eta}")

    def _ranked(self, study) -> List[Any]:
        TrialState = _states()
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
        if len(self.directions) > 1:
            front = {t.number for t in study.best_trials}
            key = (lambda t: (t.number not in front, -t.values[0] if self.directions[0] == "maximize" else t.values[0]))
        else:
            key = (lambda t: -t.values[0] if self.directions[0] == "maximize" else t.values[0])
        return sorted(done, key=key)

    def _finish(self, study, tracker, task_cfg) -> Dict[str, Any]:
        import pandas as pd

        c = self._counts()
        ranked = self._ranked(study)
        best = ranked[0] if ranked else None
        top_k = max(1, int(self.s.get("top_k") or 5))
        rows = []
        for rank, t in enumerate(ranked[:top_k], 1):
            row = {"rank": rank, "trial": t.number, "state": t.state.name}
            row.update({m: v for m, v in zip(self.metrics, t.values)})
            row["run_id"] = t.user_attrs.get("mlflow_run_id", "")
            row.update({k: t.params.get(k) for k in self.space.distributions})
            rows.append(row)
        table = pd.DataFrame(rows)
        pid = self.parent_run_id
        metrics: Dict[str, float] = {"trials_complete": c["complete"], "trials_pruned": c["pruned"],
                                     "trials_failed": c["failed"], "sweep_seconds": time.perf_counter() - self.started,
                                     "trial_loop_seconds": self.loop_seconds}
        # Study totals (every worker's trials), not just this process's.
        TrialState = _states()
        finished = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        study_queries = sum(int(t.user_attrs.get("feature_queries") or 0) for t in study.get_trials(deepcopy=False))
        tags: Dict[str, Any] = {"runner.warehouse.feature_queries": study_queries or self._feature_queries}
        workers: Dict[str, int] = {}
        for t in finished:
            owner = t.user_attrs.get("runner.owner") or {}
            name = f"{owner.get('host', '?')}:{owner.get('pid', '?')}"
            workers[name] = workers.get(name, 0) + 1
        if len(workers) > 1:
            tags["optuna.workers"] = json.dumps(workers)
        if best is not None:
            for m, v in zip(self.metrics, best.values):
                metrics[f"best_{m}"] = v
            metrics["best_value"] = best.values[0]
            tags.update({"best.trial_number": best.number, "best.run_id": best.user_attrs.get("mlflow_run_id", ""),
                         "best.params": json.dumps(best.params, default=str)})
            tags.update({f"best.param.{k}": v for k, v in best.params.items()})
        if len(self.directions) > 1:
            tags["best.pareto_trials"] = ",".join(str(t.number) for t in study.best_trials)
        # Workers sharing a study may each reach the end: the summary of a given study state
        # is written once (callers hold study_lock), a later identical one only printed.
        state_key = {"finished": c["finished"], "complete": c["complete"], "pruned": c["pruned"],
                     "best": best.number if best else None}
        if study.user_attrs.get("runner.summary") != state_key:
            tracker.log(pid, metrics=metrics, tags=tags, step=c["finished"])
            _kill_point("summary")  # test hook (runner/cache.py)
            if rows:
                tracker.log_text(pid, table.to_csv(index=False), "optuna/top_trials.csv")
                tracker.log_text(pid, _markdown(table), "optuna/top_trials.md")
            self._plots(study, tracker, pid, c)
            registered = self._register(study, tracker, task_cfg, best)
            study.set_user_attr("runner.summary", state_key)
        else:
            done = study.user_attrs.get("registered_model") or {}
            registered = (f"{done.get('name')} v{done.get('version')} (already, trial {done.get('trial')})"
                          if best is not None and done.get("trial") == best.number else None)

        # the summary on stdout
        took = time.perf_counter() - self.started
        lines = [f"runner: study {study.study_name!r}: {c['finished']}/{self.budget} trials finished "
                 f"({c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed) - this run "
                 f"{self._session_done} trials in {took:.1f}s (trial loop {self.loop_seconds:.1f}s), "
                 f"{self._feature_queries} feature queries",
                 f"  parent run {pid} in {tracker.display_uri} (experiment {tracker.cfg.experiment!r})"]
        if self._stop_reason:
            lines.append(f"  stopped early: {self._stop_reason}")
        if len(workers) > 1:
            lines.append("  trials per worker: " + ", ".join(f"{k} {v}" for k, v in sorted(workers.items())))
        if rows:
            lines.append(_text_table(table))
        if registered:
            lines.append(f"  best model registered: {registered}")
        lines.append(f"  storage {redact_url(self.storage_url)} (run the same command again to resume)")
        print("\n".join(lines), flush=True)
        return {"best_trial": best.number if best else None, "best_values": best.values if best else None,
                "parent_run_id": pid}

    def _plots(self, study, tracker, pid: str, c: Dict[str, Any]) -> None:
        import tempfile

        if c["complete"] < 1:
            return
        try:
            import matplotlib

            matplotlib.use("Agg", force=True)
            import matplotlib.pyplot as plt
            from optuna.visualization import matplotlib as ovm
        except ImportError as exc:
            log.warning("plots skipped: %s", exc)
            return
        target = {} if len(self.directions) == 1 else {"target": lambda t: t.values[0],
                                                          "target_name": self.metrics[0]}
        jobs = [("optimization_history.png", lambda: ovm.plot_optimization_history(study, **target))]
        if c["complete"] >= 2:
            jobs.append(("param_importances.png", lambda: ovm.plot_param_importances(study, **target)))
        import warnings

        with tempfile.TemporaryDirectory() as tmp:
            for name, plot in jobs:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        ax = plot()
                    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                    fig.set_size_inches(9, 5.5)
                    fig.tight_layout()
                    path = Path(tmp, name)
                    fig.savefig(path, dpi=100)
                    plt.close(fig)
                except Exception as exc:
                    log.warning("plot %s skipped: %s", name, _first_line(exc))
                    continue
                try:
                    tracker.client.log_artifact(pid, str(path), "optuna")
                except Exception as exc:
                    raise tracker._fail(f"upload {name}", exc) from None

    def _register(self, study, tracker, task_cfg, best) -> Optional[str]:
        name = self.s.get("registered_model") or task_cfg.tracker.get("registered_model")
        if not name or best is None:
            return None
        run_id = best.user_attrs.get("mlflow_run_id")
        if not run_id:
            return None
        done = study.user_attrs.get("registered_model") or {}
        if done.get("name") == name and done.get("trial") == best.number:
            return f"{name} v{done.get('version')} (already, trial {best.number})"
        import lightgbm as lgb

        from runner.pipeline import prepared_data
        from runner.train import train

        cfg = self.trial_config(best.params) if set(best.params) == set(self.space.distributions) else \
            self.compose(best.user_attrs.get("overrides") or [])
        _, prepared = prepared_data(cfg)
        path = best.user_attrs.get("model_path")
        if path and Path(path).exists():
            booster = lgb.Booster(model_file=path)
        else:
            log.warning("trial %d's model file is missing: retraining it", best.number)
            booster = train(prepared, cfg.model).booster
        model_uri = tracker.log_model(run_id, booster, prepared.parts["valid"][0].head(5))
        version = tracker.register(name, run_id, model_uri)
        _kill_point("register")  # test hook (runner/cache.py): registered, not yet recorded in the study
        study.set_user_attr("registered_model", {"name": name, "version": version.version, "trial": best.number})
        tracker.log(self.parent_run_id, tags={"best.registered_model": name,
                                              "best.registered_version": version.version,
                                              "best.model_uri": model_uri})
        return f"{name} v{version.version} ({model_uri})"


class _Fatal(Exception):
    pass


class _Deferred(Exception):
    """The parent run is ended by another worker of the study."""


def _markdown(table) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _text_table(table) -> str:
    cols = list(table.columns)
    cells = [[str(c).split(".")[-1] for c in cols]] + [[_fmt(row[c]) for c in cols] for _, row in table.iterrows()]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    return "\n".join("  " + "  ".join(r[i].ljust(widths[i]) for i in range(len(cols))) for r in cells)
