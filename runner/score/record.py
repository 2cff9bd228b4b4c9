"""What a scoring run records in MLflow: tags linking the model, the rows scored as a dataset
input (digest = the feature cache key, source = the warehouse and the query), the model as a
model input (MLflow 3 logged models), the predictions as an artifact, and (tracker.report) the
predictions' distribution and, where the definition has the label, their evaluation under
`evaluation/` (runner/score/summary.py, runner/report/scoring.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from ..job.tags import base_tags
from ..names import MlflowTag, Tag
from ..tracking import Tracker

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from ..report import Report
    from .features import ScoringFeatures
    from .model import ScoringModel
    from .summary import PredictionSummary
    from .table import OutputTable

PREDICTIONS_ARTIFACT = "predictions/predictions.parquet"
READ_ROWS = 65_536  # rows per batch read back from the predictions file


def log_predictions(tracker: Tracker, run_id: str, path: Path) -> str:
    """The output rows (a Parquet file named predictions.parquet) as the run's artifact
    predictions/predictions.parquet."""
    folder, name = PREDICTIONS_ARTIFACT.rsplit("/", 1)
    assert path.name == name, path
    tracker.log_artifact(run_id, str(path), folder)
    return PREDICTIONS_ARTIFACT


def scoring_tags(cfg: DictConfig, model: ScoringModel, overrides: Sequence[str]) -> Dict[str, Any]:
    tags = base_tags(cfg, overrides)
    tags[MlflowTag.SOURCE_NAME] = "python -m runner.score"
    tags.update(
        {
            Tag.JOB: "score",
            Tag.SCORE_MODEL_URI: model.uri,
            Tag.SCORE_MODEL_RUN_ID: model.run_id or "",
            Tag.SCORE_MODEL_ID: model.model_id or "",
            Tag.SCORE_MODEL_NAME: model.name or "",
            Tag.SCORE_MODEL_VERSION: model.version or "",
        }
    )
    return {k: v for k, v in tags.items() if v != ""}


def feature_tags(features: ScoringFeatures, table: OutputTable) -> Dict[str, Any]:
    return {
        Tag.SCORE_TABLE: table.sql,
        Tag.CACHE_KEY: features.key,
        Tag.SCORE_LABEL_DROPPED: features.label_dropped or "none",
        Tag.FEATURE_QUERIES: features.feature_queries,
        Tag.QUERY_IDS: ",".join(features.query_ids) or "none",
    }


def scoring_params(cfg: DictConfig, model_uri: str) -> Dict[str, Any]:
    """The data, score and tracker settings (the model's own are in its training run)."""
    from omegaconf import OmegaConf

    from ..tracking import flatten

    spec = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(spec, dict)
    params = flatten({k: spec.get(k) for k in ("data", "score", "tracker")})
    params["model_uri"] = model_uri
    return params


def config_text(cfg: DictConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)


def model_kind(model: ScoringModel) -> Tuple[str, List[Any]]:
    """What the model predicts (runner/score/summary.py kinds) and its classes: multiclass the
    class names of its output, binary [negative, positive] of its encoding; a pyfunc model that
    is not runner's returns a "value" of unknown objective."""
    if model.output.multiclass:
        return "multiclass", list(model.output.classes)
    try:
        spec = getattr(model.pyfunc.unwrap_python_model(), "spec", None) or {}
    except Exception:  # not a PythonModel (another flavor): no objective known
        spec = {}
    objective = spec.get("objective") if isinstance(spec, dict) else None
    if objective == "binary":
        return "binary", list(spec.get("classes") or [0, 1])
    return ("regression", []) if objective == "regression" else ("value", [])


def summarize(path: Path, key_column: str, model: ScoringModel) -> PredictionSummary:
    """The predictions of a Parquet file of the key and prediction columns (the upload),
    read back a batch at a time into a bounded summary."""
    import numpy as np
    import pyarrow.parquet as pq

    from .output import PREDICTION
    from .summary import PredictionSummary

    kind, classes = model_kind(model)
    summary = PredictionSummary(kind, classes if kind == "multiclass" else [])
    columns = model.output.names[1:] if kind == "multiclass" else [PREDICTION]
    with pq.ParquetFile(path) as rows:
        for batch in rows.iter_batches(batch_size=READ_ROWS, columns=[key_column, *columns]):
            keys = batch.column(key_column).to_numpy(zero_copy_only=False)
            values = [np.asarray(batch.column(c).to_numpy(zero_copy_only=False), dtype=float) for c in columns]
            summary.add(keys, np.column_stack(values) if kind == "multiclass" else values[0])
    return summary


def fetch_labels(session: Any, features: ScoringFeatures, key_column: str, summary: PredictionSummary) -> List[str]:
    """The labels of the sampled rows: one more query of the definition, its key and label
    columns only (scoring left the label out of the rows it scored), streamed a result chunk
    at a time. Returns the query's ids."""
    label = features.label_dropped
    assert label, "the definition has no label column"
    quote = lambda name: '"' + name.replace('"', '""') + '"'  # noqa: E731
    definition = features.sql.strip().rstrip(";")
    sql = f"SELECT {quote(key_column)}, {quote(label)} FROM ({definition})"
    with session.query_history() as history:
        for batch in session.sql(sql).to_arrow_batches():
            summary.add_labels(batch.column(0).to_numpy(zero_copy_only=False), batch.column(1))
    return [q.query_id for q in history.queries if q.query_id]


def training_threshold(tracker: Tracker, model: ScoringModel) -> Optional[float]:
    """The binary threshold the model's training run found best (largest F1 on its validation
    split), if it recorded one."""
    from ..report.scoring import THRESHOLD_METRIC

    run = tracker.get_run(model.run_id) if model.run_id else None
    value = run.data.metrics.get(THRESHOLD_METRIC) if run is not None else None
    return None if value is None else float(value)


def log_scoring_report(
    tracker: Tracker,
    run_id: str,
    report: Report,
    summary: PredictionSummary,
    facts: Sequence[Tuple[str, Any]],
    about: str,
) -> None:
    """The report's charts, tables and page as the run's `evaluation/` artifacts."""
    from ..report import FOLDER, files
    from ..report.scoring import scoring_page

    html = scoring_page(f"scoring run {run_id}", report, summary, facts, about)
    tracker.log_files(run_id, files(report, html), FOLDER)
