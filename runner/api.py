"""runner from Python: notebooks (Jupyter, SageMaker Studio, Snowflake Notebooks) and scripts.

    import runner
    result = runner.run(["model.params.num_leaves=63"])           # one run -> runner.job.JobResult
    summary = runner.sweep(["sweep=lightgbm", "hydra.sweeper.n_trials=10"])   # -> SweepSummary
    result = runner.run(["data.label=target"], frame=df)        # a pandas DataFrame as the data

Both compose the config with Hydra's compose API from runner's packaged conf/ (plus
`config_dir`, a folder of your own configs, as --config-dir; `config_name`, a primary config
of yours there that extends runner's, as --config-name), never
read sys.argv and never exit: errors raise runner.RunnerError subclasses with the same
one-line messages the command line prints. `session=` is a Snowpark Session of your own
(Snowflake Notebooks: get_active_session()): used for the data config's warehouse instead of
opening one (data.backend must be snowflake), and left open. `frame=` is a pandas DataFrame
used as the data (data=file unless another data= override is given): written once to
`.runner/frames/<sha256>.parquet` and loaded as table DATA of the embedded warehouse, so
the run's data.path names a file that re-creates it. Each call starts from a clean Hydra
state, so calls can follow each other in one process.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence

from .errors import ConfigError, RunnerError, first_line

if TYPE_CHECKING:
    from .job import JobResult


@dataclass
class SweepSummary:
    """What a sweep produced. best_*: the best trial (runner's Optuna sweeper) or job (grid)."""

    parent_run_id: Optional[str]
    best_value: Optional[float]
    best_params: Dict[str, Any] = field(default_factory=dict)
    best_run_id: Optional[str] = None
    best_trial: Optional[int] = None
    study_name: Optional[str] = None
    metric: Optional[str] = None
    raw: Any = None  # what the sweeper returned


def run(
    overrides: Optional[Sequence[str]] = None,
    *,
    config_dir: Optional[str] = None,
    session: Any = None,
    config_name: str = "config",
    frame: Any = None,
) -> JobResult:
    """Run one job; return its runner.job.JobResult (run_id, metrics, model_uri, ...)."""
    from hydra import compose

    from .job import JobHooks, run_job
    from .tracking import Tracker

    given = _with_frame(list(overrides or []), frame)
    with _hydra(config_dir), _calls(session):
        try:
            cfg = compose(config_name=config_name, overrides=given)
        except RunnerError:
            raise
        except Exception as exc:  # Hydra's own composition errors
            raise ConfigError(f"overrides {given}: {first_line(exc)}") from None
        tracker = Tracker(cfg.tracker)
        return run_job(cfg, tracker=tracker, hooks=JobHooks(overrides=given))


def sweep(
    overrides: Optional[Sequence[str]] = None,
    *,
    config_dir: Optional[str] = None,
    session: Any = None,
    config_name: str = "config",
    frame: Any = None,
) -> SweepSummary:
    """Run a sweep (runner's Optuna sweeper with sweep=..., or a grid of comma lists) and
    return its SweepSummary."""
    from hydra.core.global_hydra import GlobalHydra

    from .commands.app import task

    given = _with_frame(list(overrides or []), frame)
    with _hydra(config_dir), _calls(session):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        try:
            raw = hydra.multirun(config_name=config_name, task_function=task, overrides=given)
        except RunnerError:
            raise
        except Exception as exc:
            if type(exc).__module__.startswith(("hydra", "omegaconf")):
                raise ConfigError(f"overrides {given}: {first_line(exc)}") from None
            raise
    return _summary(raw)


FRAMES_DIR = Path(".runner", "frames")


def _with_frame(overrides: List[str], frame: Any) -> List[str]:
    """The overrides that load `frame` (a pandas DataFrame): written as Parquet to
    .runner/frames/<sha256 of the file>.parquet (kept: the run's data.path re-creates it)."""
    if frame is None:
        return overrides
    import hashlib
    import os
    import tempfile

    if not hasattr(frame, "to_parquet"):
        raise ConfigError(f"frame= must be a pandas DataFrame, got {type(frame).__name__}")
    try:
        FRAMES_DIR.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=FRAMES_DIR, suffix=".tmp")
        os.close(fd)
        try:
            frame.to_parquet(tmp, index=False)
            h = hashlib.sha256()
            with open(tmp, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
            path = (FRAMES_DIR / f"{h.hexdigest()[:32]}.parquet").resolve()
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"frame=: cannot write it under {FRAMES_DIR.resolve()}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:  # pyarrow cannot convert a column (mixed types...)
        raise ConfigError(f"frame=: cannot be written as Parquet: {first_line(exc)}") from None
    chosen = [] if any(o.lstrip("+~").startswith("data=") for o in overrides) else ["data=file"]
    return chosen + overrides + [f"data.path={path}"]


def _summary(raw: Any) -> SweepSummary:
    if isinstance(raw, dict):  # runner's Optuna sweeper
        values = raw.get("best_values") or [None]
        return SweepSummary(
            raw.get("parent_run_id"),
            values[0],
            dict(raw.get("best_params") or {}),
            raw.get("best_run_id"),
            raw.get("best_trial"),
            raw.get("study_name"),
            raw.get("metric"),
            raw,
        )
    from .model.metrics import maximize

    jobs = [ret.return_value for batch in raw or [] for ret in batch]
    results = [j for j in jobs if j is not None]
    if not results:
        return SweepSummary(None, None, raw=raw)
    metric = f"valid_{results[0].headline}"
    pick = max if maximize(metric) else min
    best = pick(results, key=lambda r: r.metrics[metric])
    # A grid job's params: the overrides whose values differ between the jobs.
    values = [r.overrides_values for r in results]
    swept = {k for v in values for k in v if len({str(w.get(k)) for w in values}) > 1}
    params = {k: v for k, v in best.overrides_values.items() if k in swept}
    return SweepSummary(best.parent_run_id, best.metrics[metric], params, best.run_id, None, None, metric, raw)


@contextlib.contextmanager
def _hydra(config_dir: Optional[str]) -> Iterator[None]:
    """Hydra initialized as `runner [--config-dir DIR]` initializes it: runner's conf/ as the
    primary config folder, DIR (if any) added to the search path as Hydra's --config-dir adds
    it. Hydra's global state is put back as it was afterwards (as hydra.initialize_config_dir
    does)."""
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    from .commands.app import conf_dir

    version.setbase("1.3")
    search_path = create_config_search_path(search_path_dir=conf_dir())
    if config_dir is not None:
        path = Path(config_dir).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"config_dir={config_dir!r} is not a folder")
        search_path.prepend(provider="command-line", path=f"file://{path}", anchor=SearchPathQuery(provider="schema"))
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    Hydra.create_main_hydra2(task_name="runner", config_search_path=search_path)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = None
        restore_gh_from_backup(backup)


@contextlib.contextmanager
def _calls(session: Any) -> Iterator[None]:
    """Errors raised (not printed and exited), logs scrubbed, a given Snowpark session used."""
    from .console import ERRORS, quiet_libraries
    from .data.warehouse import GIVEN
    from .secrets import install_log_filter

    install_log_filter()
    quiet_libraries()
    with ERRORS.raising(), GIVEN.use(session):
        yield


__all__: List[str] = ["SweepSummary", "run", "sweep"]
