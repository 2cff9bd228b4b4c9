"""Which MLflow store a tracker config names: checked before any request."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..errors import ConfigError
from ..secrets import redact_url

if TYPE_CHECKING:
    from omegaconf import DictConfig

ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:mlflow-(tracking-server|app)/[A-Za-z0-9][A-Za-z0-9-]*$")
KINDS = ("local", "server", "sagemaker")


def tracking_uri(cfg: DictConfig) -> str:
    if cfg.kind not in KINDS:
        raise ConfigError(f"tracker.kind must be one of {', '.join(KINDS)}, got {cfg.kind!r}")
    if cfg.kind == "local":
        return "sqlite:///" + str(Path(cfg.dir, "mlflow.db").resolve())
    uri = (cfg.uri or "").strip()
    if uri in ("", "???"):
        hint = (
            "the tracking server's ARN, arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name> "
            "(or set RUNNER_SAGEMAKER_ARN)"
            if cfg.kind == "sagemaker"
            else "the MLflow server URL, http(s)://host:port (or set MLFLOW_TRACKING_URI)"
        )
        raise ConfigError(f"tracker={cfg.kind} needs tracker.uri: {hint}")
    if cfg.kind == "server" and not re.match(r"^https?://[^/\s]+", uri):
        raise ConfigError(
            f"tracker.uri must be an http(s) URL of an MLflow server for tracker=server, got {redact_url(uri)!r}"
        )
    if cfg.kind == "sagemaker" and not ARN.match(uri):
        raise ConfigError(
            "tracker.uri must be a SageMaker MLflow tracking-server ARN "
            "(arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>) "
            f"for tracker=sagemaker, got {uri!r}"
        )
    return uri


def ui_line(
    kind: str, uri: str, display_uri: str, folder: str, experiment_id: Optional[str], run_id: Optional[str]
) -> str:
    """How to see the experiment's runs: the runs table in Model training mode (MLflow 3.17's UI
    opens an experiment in GenAI mode on a first visit); sagemaker: a sign-in link and the run's
    page (runner/tracking/sagemaker.py)."""
    from .sagemaker import ui_line as sagemaker_line
    from .sagemaker import ui_page

    if kind == "sagemaker":
        return sagemaker_line(uri, experiment_id, run_id)
    page = ui_page(experiment_id)
    if kind == "local":
        return (
            f"mlflow ui --backend-store-uri {uri} "
            f"--default-artifact-root {Path(folder, 'artifacts').resolve().as_uri()}, "
            f"then http://127.0.0.1:5000/{page}"
        )
    return f"{display_uri.rstrip('/')}/{page}"
