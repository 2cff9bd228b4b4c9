"""One batch scoring as one MLflow run: features in the warehouse -> the model -> a warehouse
table, the predictions also kept as the run's artifact.

The run's life is Tracker.run's: it ends FINISHED, FAILED (tag runner.error) or KILLED
(Ctrl-C / SIGTERM, also one that lands while the run is being created); never RUNNING. A bad
model URI or setting fails before the run exists.
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple, TypeVar

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..names import Tag
from ..testhooks import barrier
from ..tracking import Run, Tracker
from .features import ScoringFeatures, scoring_features
from .model import ScoringModel, load_model
from .record import (
    config_text,
    feature_tags,
    fetch_labels,
    log_predictions,
    log_scoring_report,
    model_kind,
    scoring_params,
    scoring_tags,
    summarize,
    training_threshold,
)
from .stream import Scored, score_batches
from .table import check_table_setting, output_table, write_predictions

if TYPE_CHECKING:
    from ..report import Report
    from .summary import PredictionSummary

T = TypeVar("T")


@dataclass
class ScoreResult:
    run_id: str
    model_uri: str
    table: str  # the output table, fully qualified
    rows: int  # entities scored = rows written
    replaced: int  # rows of an earlier scoring of the same model URI, replaced
    artifact: str  # the predictions artifact of the run
    seconds: float
    status: str = "FINISHED"
    embedded: bool = False  # the table lived in the embedded warehouse (gone with the process)


def score_config(cfg: DictConfig, model_uri: str, overrides: Sequence[str] = ()) -> ScoreResult:
    """Score the data config's entities with the model at model_uri; one MLflow run."""
    started = time.perf_counter()
    label = check_settings(cfg)
    tracker = Tracker(cfg.tracker)
    with tempfile.TemporaryDirectory(prefix="runner-score-model-") as folder:
        model = load_model(model_uri, tracker, folder)
        run_name = cfg.score.run_name or f"score-{model.label}"
        with tracker.run(run_name, scoring_tags(cfg, model, overrides), kind="score") as run:
            written_to: List[str] = []  # the table, once its transaction committed
            run.kept = lambda: (
                f"scoring run {run.id} ended KILLED ("
                + (f"its predictions were written to {written_to[0]})" if written_to else "no predictions written)")
            )
            barrier("score")  # test hook: the run exists, nothing computed yet
            result = _score(cfg, tracker, run, model, label, written_to)
    result.seconds = time.perf_counter() - started
    return result


def check_settings(cfg: DictConfig) -> Optional[str]:
    """Check the data and score settings before anything runs; return data.label (None when
    the data config has none: scoring does not need it)."""
    from ..data import validate

    data_cfg = cfg.data
    if OmegaConf.is_missing(data_cfg, "entity_key"):
        raise ConfigError(
            "data.entity_key is not set: runner.score writes one row per entity, keyed by that column "
            "of the feature definition (data.entity_key=COLUMN)"
        )
    label = None if OmegaConf.is_missing(data_cfg, "label") else str(data_cfg.label)
    checked = copy.deepcopy(data_cfg)
    if label is None:  # validate() checks the label's spelling; scoring never reads it
        checked.label = checked.entity_key
    validate(checked)
    check_table_setting(cfg.score.table)
    return label


def _score(
    cfg: DictConfig, tracker: Tracker, run: Run, model: ScoringModel, label: Optional[str], written_to: List[str]
) -> ScoreResult:
    from ..data import open_warehouse

    run_id = run.id
    data_cfg = cfg.data
    with open_warehouse(data_cfg) as wh, tempfile.TemporaryDirectory(prefix="runner-score-") as folder:
        if data_cfg.query_tag:
            wh.set_query_tag(f"runner score run_id={run_id}")
        target = output_table(cfg.score.table, wh.identity)
        run.pending_tags[Tag.SCORE_TABLE] = target.sql
        features = scoring_features(wh, data_cfg, label)
        scored_at = datetime.now(timezone.utc).replace(tzinfo=None)
        meta = [model.uri, model.name, model.version, model.run_id, run_id, scored_at.isoformat(sep=" ")]
        try:
            scored = score_batches(features, model, data_cfg, meta, scored_at, Path(folder))
        finally:
            run.pending_tags.update(feature_tags(features, target))
        artifact = log_predictions(tracker, run_id, scored.artifact)
        written = write_predictions(
            wh.session,
            target,
            scored.key_column,
            scored.key_type,
            scored.predictions,
            scored.upload,
            scored.rows,
            meta,
            run_id,
        )
        written_to.append(target.sql)
        summary = _summary(run, wh.session, features, scored, model) if cfg.tracker.get("report", True) else None
    look = _look(tracker, model, summary) if summary is not None else None
    run.log(
        params=scoring_params(cfg, model.uri),
        metrics={
            "rows_scored": float(written.inserted),
            "rows_replaced": float(written.replaced),
            "features_seconds": features.seconds,
            "feature_batches": float(scored.batches),
            **(look[0].metrics if look else {}),
        },
        tags={**run.pending_tags, Tag.SCORE_WRITE_QUERY_IDS: ",".join(written.query_ids)},
    )
    tracker.log_text(run_id, config_text(cfg), "config/resolved.yaml")
    tracker.log_text(run_id, features.sql, "data/feature_query.sql")
    tracker.log_dataset(run_id, scored.summary, features, None, "scoring", model_id=model.model_id)
    if look is not None and summary is not None:
        facts = [
            ("model", model.uri),
            ("model's training run", model.run_id or ""),
            ("table", target.sql),
            ("rows scored", written.inserted),
            ("label", features.label_dropped or "none in the definition: no evaluation"),
            ("feature cache key", features.key),
        ]
        report, about, shown = look[0], look[1], summary
        _safely("no evaluation report", lambda: log_scoring_report(tracker, run_id, report, shown, facts, about))
    return ScoreResult(
        run_id,
        model.uri,
        target.sql,
        written.inserted,
        written.replaced,
        artifact,
        0.0,
        embedded=data_cfg.backend == "embedded",
    )


def _safely(what: str, fn: Callable[[], T]) -> Optional[T]:
    """fn(), or None with one warning line (runner/report: a report is never worth a failed run)."""
    from ..report import safely

    return safely(what, fn)


def _summary(
    run: Run, session: Any, features: ScoringFeatures, scored: Scored, model: ScoringModel
) -> Optional[PredictionSummary]:
    """The predictions' summary (tracker.report), read back from the upload file, and where the
    definition has the label, the sampled rows' labels (one more query; its ids join the
    feature statements' tag)."""
    off = "tracker.report=false skips it"
    summary = _safely(f"no prediction summary ({off})", lambda: summarize(scored.upload, scored.key_column, model))
    label = features.label_dropped
    if summary is None or not label or summary.kind == "value":
        return summary
    found: PredictionSummary = summary
    ids = _safely(
        f"no evaluation of the scored rows (label {label}; {off})",
        lambda: fetch_labels(session, features, scored.key_column, found),
    )
    if ids is None and found.sample.labels is not None:  # a part of the labels is no evaluation
        found.sample.labels[:] = None
    elif ids:
        before = [q for q in str(run.pending_tags.get(Tag.QUERY_IDS, "none")).split(",") if q != "none"]
        run.pending_tags[Tag.QUERY_IDS] = ",".join([*before, *ids])
    return found


def _look(tracker: Tracker, model: ScoringModel, summary: PredictionSummary) -> Optional[Tuple[Report, str]]:
    """The scoring's report (metrics, charts, tables) from its summary; None if it failed."""
    from ..report.scoring import build_scoring

    kind, classes = model_kind(model)
    threshold = None
    if kind == "binary" and summary.labelled_rows:
        try:
            threshold = training_threshold(tracker, model)
        except Exception:  # noqa: BLE001 - without it, the scored rows' evaluation uses 0.5
            threshold = None
    return _safely("no evaluation charts", lambda: build_scoring(summary, classes, threshold))
