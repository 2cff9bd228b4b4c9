"""What a scoring run records in MLflow: tags linking the model, the rows scored as a dataset
input (digest = the feature cache key, source = the warehouse and the query), the model as a
model input (MLflow 3 logged models), and the predictions as an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Sequence

from ..job.tags import base_tags
from ..names import MlflowTag, Tag
from ..tracking import Tracker

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from .features import ScoringFeatures
    from .model import ScoringModel
    from .table import OutputTable

PREDICTIONS_ARTIFACT = "predictions/predictions.parquet"


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
