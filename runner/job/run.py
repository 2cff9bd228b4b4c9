"""One job: features (cached, memoized per process) -> LightGBM -> one MLflow run.

Used by `python -m runner`, the Python API and, per trial, by the sweepers (through
JobHooks). The run's life (start, the interrupt gate, its end FINISHED / FAILED / KILLED or
the status a hook gives) is Tracker.run's (runner/tracking/lifecycle.py).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from ..data import FeatureSet, validate
from ..model.threads import job_threads
from ..names import Tag
from ..report import FOLDER, Report, build, files, preload, safely
from ..report.page import page
from ..report.single import sections
from ..tracking import Tracker, dataset_digest, flatten
from ..tracking.values import BATCH_ENTITIES, curve_history
from .hooks import JobHooks
from .memo import prepared_data
from .tags import base_tags, overrides

if TYPE_CHECKING:
    import lightgbm as lgb

    from ..model.prepare import Prepared

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
    from ..model.train import LAYOUT_PARAMS

    hooks = hooks or JobHooks()
    started = time.perf_counter()
    validate(cfg.data)
    if hooks.kind == "run" and cfg.tracker.get("report", True):
        preload()  # while the run waits on its warehouse and its store
    tracker = tracker or Tracker(cfg.tracker)
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    # The job's LightGBM calls, in this thread, at its thread count whatever other jobs'
    # threads of this process ask LightGBM for (runner/model/threads.py).
    with (
        job_threads(int(cfg.model.params.get("num_threads") or 0)),
        tracker.run(
            hooks.run_name or cfg.get("run_name"),
            {**base_tags(cfg, hooks.overrides), **hooks.tags},
            parent=parent_run_id,
            kind=hooks.kind,
            guard=hooks.start_guard,
            on_start=(lambda run: hooks.on_run(run.id)) if hooks.on_run else None,
            status_of=hooks.status_of,
            final_tags=hooks.final_tags,
        ) as run,
    ):
        run.pending_params = params  # a run the caller ends on purpose (a pruned trial) keeps them
        features, prepared = prepared_data(cfg, query_tag=f"runner run_id={run.id}")
        run.pending_tags.update(_feature_tags(features, prepared.objective))
        if prepared.all_null:
            run.pending_tags[Tag.ALL_NULL] = ",".join(prepared.all_null)
        history: Dict[str, Any] = {}
        run.pending_history = history
        if hooks.train is not None:
            result = hooks.train(prepared, cfg.model, hooks.callbacks, history)
        else:
            result = train(prepared, cfg.model, callbacks=hooks.callbacks)
        for key in LAYOUT_PARAMS:  # what it trained with (null in the config: chosen by table size)
            params[f"model.params.{key}"] = result.params[key]
        metrics = dict(result.metrics)
        metrics.update({f"rows_{k}": float(v) for k, v in prepared.sizes.items()})
        metrics["features_seconds"] = features.seconds
        report = _report(cfg, hooks, prepared, result)
        if report is not None:
            metrics.update(report.metrics)  # test_precision_score, ... (MLflow's default evaluator's names)
        # One batch: the run's end tags ride with its params and metrics (3 requests a run),
        # and the learning curves in what room the batch has left.
        tags = {**run.pending_tags, **hooks.tags_at_end("FINISHED")}
        room = BATCH_ENTITIES - len(params) - len(tags) - len(metrics) - sum(map(len, history.values()))
        history.update(curve_history(result.curves, result.best_iteration, room))
        run.log(params=params, metrics=metrics, tags=tags, history=history)
        model_uri = _log_outputs(tracker, run.id, cfg, hooks, features, prepared, result.booster)
        if report is not None:
            _log_report(tracker, run.id, features, prepared, result, metrics, report)
    seconds = time.perf_counter() - started
    return JobResult(
        run.id,
        result.metrics,
        features,
        headline(prepared.objective),
        seconds,
        model_uri,
        booster=result.booster,
        prepared=prepared,
        parent_run_id=parent_run_id,
        overrides=overrides(hooks.overrides),
    )


def _log_outputs(
    tracker: Tracker,
    run_id: str,
    cfg: DictConfig,
    hooks: JobHooks,
    features: FeatureSet,
    prepared: Prepared,
    booster: lgb.Booster,
) -> Optional[str]:
    """The run's config and (unless a sweep keeps only its winner's) model and artifacts;
    returns the model's URI, or None."""
    if hooks.log_config:  # what `python -m runner.rerun` reads (the overrides: tag runner.overrides)
        tracker.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
    if not (hooks.log_model if hooks.log_model is not None else cfg.tracker.log_model):
        return None
    tracker.log_text(run_id, json.dumps(overrides(hooks.overrides), indent=1), "config/overrides.json")
    _log_artifacts(tracker, run_id, cfg, features, prepared, booster)
    return tracker.log_model(run_id, booster, prepared)  # takes raw rows


def _report(cfg: DictConfig, hooks: JobHooks, prepared: Prepared, result: Any) -> Optional[Report]:
    """A single run's report (a sweep's trials have none: the sweep reports its best trial)."""
    if hooks.kind != "run" or not cfg.tracker.get("report", True):
        return None
    booster, best = result.booster, result.best_iteration
    report = safely("no evaluation charts", lambda: build(prepared, booster, best, result.curves))
    if report is not None:
        report.start()  # drawn beside the run's logging and its model's saving
    return report


def _log_report(
    tracker: Tracker,
    run_id: str,
    features: FeatureSet,
    prepared: Prepared,
    result: Any,
    metrics: Dict[str, float],
    report: Report,
) -> None:
    """The report's files and its page as the run's `evaluation/` artifacts."""

    def log() -> None:
        facts = [("feature cache key", features.key), ("rows", sum(prepared.sizes.values()))]
        parts = sections(prepared, result.params, metrics, report, facts, features.sql)
        html = page(f"run {run_id}", "runner: the model, its data and its evaluation", parts)
        tracker.log_files(run_id, files(report, html), FOLDER)

    safely("no evaluation report", log)


def _feature_tags(features: FeatureSet, objective: str) -> Dict[str, Any]:
    return {
        Tag.CACHE: "offline-hit" if features.offline else "hit" if features.cache_hit else "miss",
        Tag.CACHE_KEY: features.key,
        Tag.DATASET_DIGEST: dataset_digest(features),  # the digest of the runs' dataset inputs
        Tag.FEATURE_QUERIES: features.feature_queries,
        Tag.QUERY_IDS: ",".join(features.query_ids) or "none",
        Tag.WAREHOUSE_STARTED: str(features.warehouse_started).lower(),
        Tag.OBJECTIVE: objective,
    }


def _log_artifacts(
    tracker: Tracker, run_id: str, cfg: DictConfig, features: FeatureSet, prepared: Prepared, booster: lgb.Booster
) -> None:
    import pandas as pd

    tracker.log_text(run_id, features.sql, "data/feature_query.sql")
    if prepared.categories:
        tracker.log_text(run_id, json.dumps(prepared.categories, indent=1), "data/categories.json")
    importance = pd.DataFrame({"feature": booster.feature_name(), "gain": booster.feature_importance("gain")})
    tracker.log_text(
        run_id, importance.sort_values("gain", ascending=False).to_csv(index=False), "model_info/feature_importance.csv"
    )
    log_lineage(tracker, run_id, cfg, features, prepared)


def log_lineage(tracker: Tracker, run_id: str, cfg: DictConfig, features: FeatureSet, prepared: Prepared) -> None:
    """The training split as the run's MLflow dataset input (digest: dataset_digest)."""
    import pandas as pd

    from ..tracking.dataset import FrameSummary

    train, summary = prepared.parts["train"], FrameSummary()
    for start, rows in train.batches():  # the split's profile added up batch by batch
        frame = pd.DataFrame(rows, columns=train.features, copy=False)
        summary.add(frame.assign(**{cfg.data.label: train.y[start : start + len(rows)]}))
    tracker.log_dataset(run_id, summary, features, targets=cfg.data.label)
