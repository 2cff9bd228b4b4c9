"""One job: features (cached, memoized per process) -> LightGBM -> MLflow run.

Used by `python -m runner` and, per trial, by the sweepers: inside one process
the pulled features and the LightGBM Datasets are built once and reused.
"""
from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from . import __version__
from .cache import FeatureCache, kill_point
from .errors import RunnerError, WarehouseError
from .features import FeatureSet, embedded_features, load_features, offline_features, validate
from .secrets import scrub
from .tracking import Tracker, flatten, git_state

log = logging.getLogger(__name__)

# (data config digest, objective) -> [FeatureSet, Prepared, claimed]; one entry per process is
# typical. `claimed` turns true once a job has reported the pull (its queries, its time):
# the jobs after it report a reuse.
_PREPARED: Dict[str, List[Any]] = {}
# Errors of a background prefetch, raised by the job that needs that data.
_PREFETCH_ERRORS: Dict[str, BaseException] = {}
# Trials may run in threads: one pull per process. The first thread to ask owns the
# Prepared split and its LightGBM Datasets; every other thread gets its own view, so
# Datasets are never shared by concurrent lgb.train calls.
_PREPARED_LOCK = threading.Lock()
_THREAD = threading.local()
# Connector messages of a warehouse that cannot be reached at all (network, host down).
_UNREACHABLE_WH = re.compile(r"Could not connect to Snowflake backend|Connection refused|Failed to establish|"
                             r"Max retries exceeded|Name or service not known|timed out", re.IGNORECASE)


@dataclass
class JobResult:
    run_id: str
    metrics: Dict[str, float]
    features: FeatureSet
    headline: str
    seconds: float
    model_uri: Optional[str] = None
    status: str = "FINISHED"
    extra: Dict[str, Any] = field(default_factory=dict)


def _data_digest(cfg: DictConfig) -> str:
    return json.dumps({"data": OmegaConf.to_container(cfg.data, resolve=True),
                       "objective": cfg.model.params.objective}, sort_keys=True, default=str)


def prepared_data(cfg: DictConfig, query_tag: Optional[str] = None):
    """FeatureSet and Prepared split for cfg.data, pulled at most once per process."""
    with _PREPARED_LOCK:
        features, prepared = _prepared_data(cfg, query_tag)
        if prepared.owner is None:
            prepared.owner = threading.get_ident()
    views = _THREAD.__dict__.setdefault("views", {})
    view = views.get(id(prepared))
    if view is None or view[0] is not prepared:
        mine = prepared.owner == threading.get_ident()
        view = (prepared, prepared if mine else dataclasses.replace(prepared, datasets={}))
        views.clear()
        views[id(prepared)] = view
    return features, view[1]


def prefetch(cfg: DictConfig, query_tag: Optional[str] = None) -> threading.Thread:
    """Pull and prepare cfg's features, and build their LightGBM Datasets, in a background
    thread while the caller sets up (a sweep: study, tracking store, parent run). The first
    job that asks for the same data waits for it and reports the pull as its own; an error
    is raised by that job, as if it had pulled itself."""
    def work() -> None:
        from .train import datasets, lgb_params

        digest = _data_digest(cfg)
        with _PREPARED_LOCK:
            try:
                _, prepared = _prepared_data(cfg, query_tag, claim=False)
            except BaseException as exc:  # noqa: BLE001 - handed to the job that needs the data
                _PREFETCH_ERRORS[digest] = exc
                return
            try:
                datasets(prepared, lgb_params(cfg.model, prepared))
            except Exception as exc:  # the job builds them itself and reports the problem
                log.debug("prefetch: Datasets not built: %s", exc)

    thread = threading.Thread(target=work, name="runner-prefetch", daemon=True)
    thread.start()
    return thread


def _prepared_data(cfg: DictConfig, query_tag: Optional[str], claim: bool = True):
    from .train import prepare
    from .warehouse import open_warehouse

    digest = _data_digest(cfg)
    if digest in _PREFETCH_ERRORS:
        raise _PREFETCH_ERRORS.pop(digest)
    entry = _PREPARED.get(digest)
    if entry is not None and not entry[2]:  # pulled by a prefetch: this job reports it
        entry[2] = claim
        return entry[0], entry[1]
    if entry is not None and not cfg.data.refresh:
        features, prepared, _ = entry
        reused = FeatureSet(**{**features.__dict__, "cache_hit": True, "query_ids": [],
                               "feature_queries": 0, "seconds": 0.0})
        return reused, prepared
    validate(cfg.data)
    cache = FeatureCache(cfg.data.cache_dir)
    try:
        features = embedded_features(cfg.data, cache)
        if features is None:
            with open_warehouse(cfg.data) as wh:
                features = load_features(wh, cfg.data, cache, query_tag=query_tag)
    except WarehouseError as exc:
        # Unreachable (not refused, not a bad query): the last cached pull of this data config.
        offline = offline_features(cfg.data, cache, str(exc)) if _UNREACHABLE_WH.search(str(exc)) else None
        if offline is None:
            raise
        features = offline
    prepared = prepare(features.take_table(), cfg.data, cfg.model.params.objective)
    _PREPARED.clear()
    _PREPARED[digest] = [features, prepared, claim]
    return features, prepared


def overrides(explicit: Optional[Sequence[str]] = None) -> List[str]:
    """The job's Hydra overrides (explicit ones when a sweeper runs trials in threads)."""
    if explicit is not None:
        return [scrub(o) for o in explicit]  # "key=scheme://user:pw@host": scrub, not redact_url
    try:
        from hydra.core.hydra_config import HydraConfig

        return [scrub(o) for o in HydraConfig.get().overrides.task]
    except Exception:  # not under Hydra (tests calling run_job directly)
        return []


def base_tags(cfg: DictConfig, job_overrides: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    tags = {"runner.version": __version__, "mlflow.source.name": "python -m runner",
            "mlflow.source.type": "LOCAL", "mlflow.user": _user(),
            "runner.overrides": json.dumps(overrides(job_overrides))}
    tags.update(_code_state())
    tags.update({f"user.{k}": v for k, v in (cfg.get("tags") or {}).items()})
    return tags


_CODE_STATE: Optional[Dict[str, str]] = None


def _code_state() -> Dict[str, str]:
    """git commit/dirty flag of the code this process runs, looked up once per process.

    Two git subprocesses cost ~20-60 ms; a sweep would pay them for every trial. The
    code a process runs is the code it loaded at start, so the first answer stays right.
    """
    global _CODE_STATE
    if _CODE_STATE is None:
        _CODE_STATE = git_state()
    return dict(_CODE_STATE)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def run_job(cfg: DictConfig, *, tracker: Optional[Tracker] = None, parent_run_id: Optional[str] = None,
            run_name: Optional[str] = None, extra_tags: Optional[Dict[str, Any]] = None,
            callbacks: Sequence[Callable] = (), log_model: Optional[bool] = None,
            on_run: Optional[Callable[[str], None]] = None, job_overrides: Optional[Sequence[str]] = None,
            final_tags: Optional[Callable[[str], Dict[str, Any]]] = None) -> JobResult:
    """Run one job end to end; the MLflow run ends FINISHED, or FAILED on any error.

    job_overrides: the job's overrides when HydraConfig does not describe it (trials run
    in threads). final_tags(status): tags sent in the run's last log call, so a sweep
    trial costs three requests (create, one batch, terminate). An exception named
    TrialPruned (Optuna's, raised by a pruning callback) ends the run KILLED with tag
    optuna.state=PRUNED instead of FAILED.
    """
    from .train import headline, train

    started = time.perf_counter()
    validate(cfg.data)
    tracker = tracker or Tracker(cfg.tracker)
    tags = {**base_tags(cfg, job_overrides), **(extra_tags or {})}
    run_id = tracker.start_run(run_name or cfg.get("run_name"), tags, parent_run_id=parent_run_id)
    if on_run:
        on_run(run_id)
    status = "FAILED"
    run_tags: Dict[str, Any] = {}
    try:
        features, prepared = prepared_data(cfg, query_tag=f"runner run_id={run_id}")
        run_tags.update({
            "runner.cache": "offline-hit" if features.offline else "hit" if features.cache_hit else "miss",
            "runner.cache_key": features.key,
            "runner.warehouse.feature_queries": features.feature_queries,
            "runner.warehouse.query_ids": ",".join(features.query_ids) or "none",
            "runner.warehouse.started": str(features.warehouse_started).lower(),
            "runner.objective": prepared.objective,
        })
        result = train(prepared, cfg.model, callbacks=callbacks)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        metrics = dict(result.metrics)
        metrics.update({f"rows_{k}": float(v) for k, v in prepared.sizes.items()})
        metrics["features_seconds"] = features.seconds
        if final_tags:
            run_tags.update(final_tags("FINISHED"))
        tracker.log(run_id, params=flatten(resolved), metrics=metrics, tags=run_tags)
        kill_point("trial")  # test hook (runner/cache.py): logged, run not ended yet
        model_uri = None
        if log_model if log_model is not None else cfg.tracker.log_model:
            _log_artifacts(tracker, run_id, cfg, features, prepared, result, job_overrides)
            model_uri = tracker.log_model(run_id, result.booster, prepared.parts["valid"][0].head(5))
        status = "FINISHED"
        return JobResult(run_id, result.metrics, features, headline(prepared.objective),
                         time.perf_counter() - started, model_uri,
                         extra={"booster": result.booster, "prepared": prepared})
    except BaseException as exc:
        if type(exc).__name__ == "TrialPruned":
            status = "KILLED"
            _mark_pruned(tracker, run_id, cfg, exc, {**run_tags, **(final_tags("KILLED") if final_tags else {})})
        else:
            _mark_failed(tracker, run_id, exc, {**run_tags, **(final_tags("FAILED") if final_tags else {})})
        raise
    finally:
        try:
            tracker.end(run_id, status)
        except RunnerError as exc:
            log.error("%s", exc)


def _mark_pruned(tracker: Tracker, run_id: str, cfg: DictConfig, exc: BaseException,
                 extra: Dict[str, Any]) -> None:
    tags = {**extra, "optuna.state": "PRUNED", "runner.pruned": str(exc)[:500] or "pruned"}
    try:
        tracker.log(run_id, params=flatten(OmegaConf.to_container(cfg, resolve=True)), tags=tags)
    except Exception:  # the tracker itself may be what failed
        pass


def _mark_failed(tracker: Tracker, run_id: str, exc: BaseException,
                 extra: Optional[Dict[str, Any]] = None) -> None:
    message = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
    try:
        tracker.log(run_id, tags={"runner.error": f"{type(exc).__name__}: {message}", **(extra or {})})
    except Exception:  # the tracker itself may be what failed
        pass


def _log_artifacts(tracker: Tracker, run_id: str, cfg: DictConfig, features, prepared, result,
                   job_overrides: Optional[Sequence[str]] = None) -> None:
    import pandas as pd

    tracker.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
    tracker.log_text(run_id, json.dumps(overrides(job_overrides), indent=1), "config/overrides.json")
    tracker.log_text(run_id, features.sql, "data/feature_query.sql")
    if prepared.categories:
        tracker.log_text(run_id, json.dumps(prepared.categories, indent=1), "data/categories.json")
    importance = pd.DataFrame({"feature": result.booster.feature_name(),
                               "gain": result.booster.feature_importance("gain")})
    tracker.log_text(run_id, importance.sort_values("gain", ascending=False).to_csv(index=False),
                     "model_info/feature_importance.csv")
    X, y, _ = prepared.parts["train"]
    frame = X.assign(**{cfg.data.label: y})
    tracker.log_dataset(run_id, frame, features, targets=cfg.data.label)
