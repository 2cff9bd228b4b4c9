"""One line saying what to fix, for the tracking failures users can fix: auth, reachability,
S3 artifacts; and the TrackingError that carries it. Also the one warning line for an older
tracking server that lacks an API runner can do without (missing_api, unsupported)."""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Dict, Optional, Set, Tuple

from ..console import say
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


# --- an older tracking server --------------------------------------------------------------
# SageMaker managed MLflow runs the server version the tracking server was created with (2.13,
# 2.16, 3.0, ...), older than runner's client. An endpoint that version does not have answers
# 404 with the web server's HTML page (MLflow's client: error_code ENDPOINT_NOT_FOUND); a store
# without the feature answers NOT_IMPLEMENTED (501). A 404 with RESOURCE_DOES_NOT_EXIST is a
# missing run or model, never a missing API.
_MISSING_CODES = ("ENDPOINT_NOT_FOUND", "NOT_IMPLEMENTED", "FEATURE_DISABLED")
_MISSING_TEXT = re.compile(r"ENDPOINT_NOT_FOUND|NOT_IMPLEMENTED|error code (404|405|501) != 200")

_lock = threading.Lock()
_skipped: Set[Tuple[str, str]] = set()  # (tracking URI, feature) already warned about
_versions: Dict[str, Optional[str]] = {}


def missing_api(exc: BaseException) -> bool:
    """Does this error say the tracking server has no such API (an older server version)?"""
    code = str(getattr(exc, "error_code", "") or "")
    if code in _MISSING_CODES:
        return True
    text = str(exc)
    if "RESOURCE_DOES_NOT_EXIST" in text:
        return False
    return isinstance(exc, NotImplementedError) or bool(_MISSING_TEXT.search(text))


def error_code(exc: BaseException) -> str:
    """MLflow's error code of a failed request ('' when there is none)."""
    return str(getattr(exc, "error_code", "") or "")


def server_version(client: Any, uri: str) -> Optional[str]:
    """The tracking server's MLflow version (its GET /version, signed like every request), or
    None: a local store, or a front door that does not pass /version. Asked once per process."""
    with _lock:
        if uri in _versions:
            return _versions[uri]
    version: Optional[str] = None
    try:
        from mlflow.utils.rest_utils import http_request

        creds = client._tracking_client.store.get_host_creds()
        response = http_request(creds, "/version", "GET", max_retries=0, timeout=5, raise_on_status=False)
        text = response.text.strip() if response.status_code == 200 else ""
        version = text if re.fullmatch(r"\d+\.\d+[\w.+-]*", text) else None
    except Exception:
        version = None
    with _lock:
        _versions[uri] = version
    return version


def skipped(uri: str, feature: str) -> bool:
    """Has this process already found that the server at uri lacks `feature`?"""
    with _lock:
        return (uri, feature) in _skipped


def unsupported(client: Any, uri: str, feature: str, consequence: str) -> None:
    """One warning line per process and server for a feature the server lacks, e.g.
    `runner: the tracking server does not support dataset inputs (MLflow 2.3.2): the run's
    dataset is not recorded`; the run goes on."""
    with _lock:
        if (uri, feature) in _skipped:
            return
        _skipped.add((uri, feature))
    version = server_version(client, uri)
    where = f" (MLflow {version})" if version else ""
    say(f"runner: the tracking server does not support {feature}{where}: {consequence}")
