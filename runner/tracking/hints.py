"""One line saying what to fix, for the tracking failures users can fix: auth, reachability,
S3 artifacts; and the TrackingError that carries it."""

from __future__ import annotations

import os
import re
from typing import Optional

from ..errors import TrackingError, first_line
from .outage import UNREACHABLE

_AUTH_DENIED = re.compile(
    r"\b(401|403)\b|PERMISSION_DENIED|UNAUTHENTICATED|signature|InvalidClientTokenId|"
    r"UnrecognizedClient|ExpiredToken|AccessDenied",
    re.IGNORECASE,
)


def hint(kind: str, exc: BaseException, text: str) -> Optional[str]:
    """One line saying what to fix for the failures users can fix: auth and reachability."""
    if kind == "local":
        return None
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return NO_AWS_CREDENTIALS
    if _AUTH_DENIED.search(text):
        if kind == "sagemaker":
            return (
                "the tracking server rejected the request signature (AWS SigV4): check the AWS "
                "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN or "
                "AWS_PROFILE) and that tracker.uri is the ARN of a tracking server they may use "
                f"(region, account, name) [{text[:160]}]"
            )
        return (
            "the server refused the credentials: set MLFLOW_TRACKING_USERNAME/"
            "MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN for it, or check tracker.uri "
            f"[{text[:160]}]"
        )
    if UNREACHABLE.search(text) or "ConnectionError" in name or "Timeout" in name:
        if kind == "sagemaker":
            endpoint = os.environ.get("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT")
            where = f"SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT={endpoint}" if endpoint else "the ARN's regional endpoint"
            return (
                f"cannot reach the tracking server ({where}): check tracker.uri (region), the "
                "network path to SageMaker and any HTTPS proxy settings"
            )
        return "cannot reach the MLflow server: check tracker.uri (host and port) and that the server is running"
    return None


def artifact_hint(exc: BaseException, text: str) -> Optional[str]:
    """Artifacts on s3:// are written by the client itself (boto3), not by the tracking server."""
    module = type(exc).__module__ or ""
    if not (module.startswith(("botocore", "boto3")) or "S3" in type(exc).__name__):
        return None
    if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        return NO_AWS_CREDENTIALS
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    where = f"MLFLOW_S3_ENDPOINT_URL={endpoint}" if endpoint else "the bucket's region/endpoint"
    return (
        f"cannot write the run's artifacts to S3: check {where} and that the AWS credentials may "
        f"write to the experiment's artifact bucket [{text[:160]}]"
    )


NO_AWS_CREDENTIALS = (
    "no AWS credentials found to sign requests for tracker=sagemaker: set "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with an "
    "IAM role)"
)


def failure(kind: str, shown_uri: str, what: str, exc: BaseException, artifacts: bool = False) -> TrackingError:
    """The TrackingError for a failed call: the setting to check, the store, what failed, the hint."""
    if isinstance(exc, TrackingError):
        return exc
    text = first_line(exc, 10_000)
    setting = "tracker.dir" if kind == "local" else "tracker.uri"
    found = (artifact_hint(exc, text) if artifacts else None) or hint(kind, exc, text)
    return TrackingError(f"MLflow at {setting}={shown_uri} failed to {what}: {found or text[:300]}")
