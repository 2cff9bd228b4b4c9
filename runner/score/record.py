"""What a scoring run records in MLflow: tags linking the model, the rows scored as a dataset
input (digest = the feature cache key, source = the warehouse and the query), the model as a
model input (MLflow 3 logged models), and the predictions as an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

from ..job.tags import base_tags
from ..tracking import Tracker

PREDICTIONS_ARTIFACT = "predictions/predictions.parquet"


def log_predictions(tracker: Tracker, run_id: str, path: Path) -> str:
    """The output rows (a Parquet file named predictions.parquet) as the run's artifact
    predictions/predictions.parquet."""
    folder, name = PREDICTIONS_ARTIFACT.rsplit("/", 1)
    assert path.name == name, path
    tracker.log_artifact(run_id, str(path), folder)
    return PREDICTIONS_ARTIFACT


def scoring_tags(cfg, model, overrides: Sequence[str]) -> Dict[str, Any]:
    tags = base_tags(cfg, overrides)
    tags["mlflow.source.name"] = "python -m runner.score"
    tags.update(
        {
            "runner.job": "score",
            "runner.score.model_uri": model.uri,
            "runner.score.model_run_id": model.run_id or "",
            "runner.score.model_id": model.model_id or "",
            "runner.score.model_name": model.name or "",
            "runner.score.model_version": model.version or "",
        }
    )
    return {k: v for k, v in tags.items() if v != ""}


def feature_tags(features, table) -> Dict[str, Any]:
    return {
        "runner.score.table": table.sql,
        "runner.cache_key": features.key,
        "runner.score.label_dropped": features.label_dropped or "none",
        "runner.warehouse.feature_queries": features.feature_queries,
        "runner.warehouse.query_ids": ",".join(features.query_ids) or "none",
    }


def scoring_params(cfg, model_uri: str) -> Dict[str, Any]:
    """The data, score and tracker settings (the model's own are in its training run)."""
    from omegaconf import OmegaConf

    from ..tracking import flatten

    spec = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(spec, dict)
    params = flatten({k: spec.get(k) for k in ("data", "score", "tracker")})
    params["model_uri"] = model_uri
    return params


def config_text(cfg) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)
