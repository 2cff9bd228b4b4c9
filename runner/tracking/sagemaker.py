"""SageMaker managed MLflow through the sagemaker-mlflow plugin: checks before the first
request, and the plugin's per-request log noise kept out of the terminal."""

from __future__ import annotations

import logging

from ..errors import ConfigError, TrackingError, first_line
from .hints import NO_AWS_CREDENTIALS


def prepare_sagemaker(uri: str) -> None:
    """Fail before any request when the plugin or the AWS credentials are missing."""
    try:
        import boto3
        import sagemaker_mlflow  # noqa: F401
    except ImportError:
        raise ConfigError("tracker=sagemaker needs the sagemaker-mlflow plugin: pip install sagemaker-mlflow") from None
    try:
        credentials = boto3.Session().get_credentials()
    except Exception as exc:  # a broken profile / config file
        raise TrackingError(
            f"tracker=sagemaker cannot load AWS credentials: {first_line(exc)}: "
            "fix AWS_PROFILE / the AWS config files or set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY"
        ) from None
    if credentials is None:
        raise TrackingError(f"{NO_AWS_CREDENTIALS}; tracker.uri={uri}")


class _DropPluginNoise(logging.Filter):
    """sagemaker-mlflow logs 'Using custom endpoint' on the root logger for every request, and its
    header provider warns on every request whose global tracking URI is not an ARN."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("Using custom endpoint"):
            return False
        if (
            record.name == "mlflow.tracking.request_header.registry"
            and record.args
            and "list index out of range" in str(record.args)
        ):
            return False
        return True


def quiet_plugin_noise(kind: str) -> None:
    if kind == "sagemaker":
        # The plugin builds a boto3 session per request: botocore announces the credentials each time.
        logging.getLogger("botocore.credentials").setLevel(logging.WARNING)
    flt = _DropPluginNoise()
    for logger in (logging.getLogger(), logging.getLogger("mlflow.tracking.request_header.registry")):
        if not any(isinstance(f, _DropPluginNoise) for f in logger.filters):
            logger.addFilter(flt)
