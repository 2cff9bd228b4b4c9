"""One job: features (cached, memoized per process) -> LightGBM -> one MLflow run.

Used by `python -m runner` and, per trial, by the sweepers (through JobHooks): the run
ends FINISHED, FAILED with a runner.error tag, or the status a hook gives for an
exception its caller raised on purpose; never RUNNING.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from ..data import FeatureSet, validate
from ..errors import RunnerError, first_line
from ..interrupts import INTERRUPTS, as_interrupted
from ..testhooks import kill_point
from ..tracking import Tracker, dataset_digest, flatten
from .hooks import JobHooks
from .memo import prepared_data
from .tags import base_tags, overrides

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    run_id: str
    metrics: Dict[str, float]
    features: FeatureSet
    headline: str
    seconds: float
    model_uri: Optional[str] = None
    status: str = "FINISHED"
    booster: Any = None
    prepared: Any = None  # runner.model.Prepared
    parent_run_id: Optional[str] = None
    overrides: List[str] = field(default_factory=list)  # the job's Hydra overrides

    @property
    def overrides_values(self) -> Dict[str, str]:
        """The overrides as key -> value text (a grid job's parameters)."""
        return dict(o.split("=", 1) for o in self.overrides if "=" in o)


def run_job(
    cfg: DictConfig,
    *,
    tracker: Optional[Tracker] = None,
    parent_run_id: Optional[str] = None,
    hooks: Optional[JobHooks] = None,
) -> JobResult:
    """Run one job end to end as one MLflow run (a child of parent_run_id if given)."""
    from ..model import headline, train

    hooks = hooks or JobHooks()
    started = time.perf_counter()
    validate(cfg.data)
    tracker = tracker or Tracker(cfg.tracker)
    tags = {**base_tags(cfg, hooks.overrides), **hooks.tags}
    with INTERRUPTS.deferred() as gate:
        # A signal waits until the run exists and this try ends it, and while it is ended.
        with hooks.starting():
            run_id = tracker.start_run(hooks.run_name or cfg.get("run_name"), tags, parent_run_id=parent_run_id)
            if hooks.on_run:
                hooks.on_run(run_id)
        status = "FAILED"
        run_tags: Dict[str, Any] = {}
        try:
            gate.open()
            features, prepared = prepared_data(cfg, query_tag=f"runner run_id={run_id}")
            run_tags.update(_feature_tags(features, prepared.objective))
            result = train(prepared, cfg.model, callbacks=hooks.callbacks)
            metrics = dict(result.metrics)
            metrics.update({f"rows_{k}": float(v) for k, v in prepared.sizes.items()})
            metrics["features_seconds"] = features.seconds
            run_tags.update(hooks.tags_at_end("FINISHED"))
            tracker.log(
                run_id, params=flatten(OmegaConf.to_container(cfg, resolve=True)), metrics=metrics, tags=run_tags
            )
            kill_point("trial")  # test hook: logged, run not ended yet
            if hooks.log_config:  # what `python -m runner.rerun` reads (the overrides: tag runner.overrides)
                tracker.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
            model_uri = None
            if hooks.log_model if hooks.log_model is not None else cfg.tracker.log_model:
                tracker.log_text(run_id, json.dumps(overrides(hooks.overrides), indent=1), "config/overrides.json")
                _log_artifacts(tracker, run_id, cfg, features, prepared, result.booster)
                model_uri = tracker.log_model(run_id, result.booster, prepared)  # takes raw rows
            status = "FINISHED"
            return JobResult(
                run_id,
                result.metrics,
                features,
                headline(prepared.objective),
                time.perf_counter() - started,
                model_uri,
                booster=result.booster,
                prepared=prepared,
                parent_run_id=parent_run_id,
                overrides=overrides(hooks.overrides),
            )
        except BaseException as exc:
            owned = hooks.owned_status(exc)
            if owned is not None:
                status = owned
                _try_log(
                    tracker,
                    run_id,
                    params=flatten(OmegaConf.to_container(cfg, resolve=True)),
                    tags={**run_tags, **hooks.tags_at_end(owned, exc)},
                )
            elif isinstance(exc, KeyboardInterrupt):  # Ctrl-C / SIGTERM: the user stopped it
                status = "KILLED"
                stop = as_interrupted(exc)
                _try_log(
                    tracker,
                    run_id,
                    tags={"runner.interrupted": stop.name, **run_tags, **hooks.tags_at_end("KILLED", exc)},
                )
                INTERRUPTS.keep(f"run {run_id} ended KILLED")
            else:
                message = first_line(exc) if str(exc) else type(exc).__name__
                _try_log(
                    tracker,
                    run_id,
                    tags={
                        "runner.error": f"{type(exc).__name__}: {message}",
                        **run_tags,
                        **hooks.tags_at_end("FAILED", exc),
                    },
                )
            raise
        finally:
            gate.shut()
            try:
                tracker.end(run_id, status)
            except RunnerError as exc:
                log.error("%s", exc)


def _feature_tags(features: FeatureSet, objective: str) -> Dict[str, Any]:
    return {
        "runner.cache": "offline-hit" if features.offline else "hit" if features.cache_hit else "miss",
        "runner.cache_key": features.key,
        "runner.dataset.digest": dataset_digest(features),  # the digest of the runs' dataset inputs
        "runner.warehouse.feature_queries": features.feature_queries,
        "runner.warehouse.query_ids": ",".join(features.query_ids) or "none",
        "runner.warehouse.started": str(features.warehouse_started).lower(),
        "runner.objective": objective,
    }


def _try_log(tracker: Tracker, run_id: str, **kwargs: Any) -> None:
    try:
        tracker.log(run_id, **kwargs)
    except Exception:  # the tracker itself may be what failed
        pass


def _log_artifacts(tracker: Tracker, run_id: str, cfg: DictConfig, features: FeatureSet, prepared, booster) -> None:
    import pandas as pd

    tracker.log_text(run_id, features.sql, "data/feature_query.sql")
    if prepared.categories:
        tracker.log_text(run_id, json.dumps(prepared.categories, indent=1), "data/categories.json")
    importance = pd.DataFrame({"feature": booster.feature_name(), "gain": booster.feature_importance("gain")})
    tracker.log_text(
        run_id, importance.sort_values("gain", ascending=False).to_csv(index=False), "model_info/feature_importance.csv"
    )
    log_lineage(tracker, run_id, cfg, features, prepared)


def log_lineage(tracker: Tracker, run_id: str, cfg: DictConfig, features: FeatureSet, prepared) -> None:
    """The training split as the run's MLflow dataset input (digest: dataset_digest)."""
    X, y, _ = prepared.parts["train"]
    tracker.log_dataset(run_id, X.assign(**{cfg.data.label: y}), features, targets=cfg.data.label)
