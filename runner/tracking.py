"""MLflow tracking through MlflowClient with explicit run ids.

No fluent active-run stack: every call names its run, so runs nest correctly
across threads and processes. A run's params, metrics and tags go in one
log_batch call, so a run costs create + batch + terminate requests.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from .errors import ConfigError, TrackingError
from .secrets import redact_url
from .secrets import scrub as _scrub
from .secrets import secret_values as _secret_values

log = logging.getLogger(__name__)

ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:mlflow-(tracking-server|app)/[A-Za-z0-9][A-Za-z0-9-]*$")
KINDS = ("local", "server", "sagemaker")


def tracking_uri(cfg) -> str:
    if cfg.kind not in KINDS:
        raise ConfigError(f"tracker.kind must be one of {', '.join(KINDS)}, got {cfg.kind!r}")
    if cfg.kind == "local":
        return "sqlite:///" + str(Path(cfg.dir, "mlflow.db").resolve())
    uri = (cfg.uri or "").strip()
    if uri in ("", "???"):
        hint = ("the tracking server's ARN, arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name> "
                "(or set RUNNER_SAGEMAKER_ARN)" if cfg.kind == "sagemaker"
                else "the MLflow server URL, http(s)://host:port (or set MLFLOW_TRACKING_URI)")
        raise ConfigError(f"tracker={cfg.kind} needs tracker.uri: {hint}")
    if cfg.kind == "server" and not re.match(r"^https?://[^/\s]+", uri):
        raise ConfigError(f"tracker.uri must be an http(s) URL of an MLflow server for tracker=server, "
                          f"got {redact_url(uri)!r}")
    if cfg.kind == "sagemaker" and not ARN.match(uri):
        raise ConfigError("tracker.uri must be a SageMaker MLflow tracking-server ARN "
                          "(arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>) "
                          f"for tracker=sagemaker, got {uri!r}")
    return uri


def flatten(node: Any, prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if isinstance(node, dict):
        if not node and prefix:
            out[prefix] = "{}"
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(node, list):
        out[prefix] = repr(node)
    else:
        out[prefix] = node
    return out


_SECRET_VALUES = bool(_secret_values())


def _fit(kind: str, key: str, value: Any, limit: int) -> Optional[str]:
    from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH

    if len(key) > MAX_ENTITY_KEY_LENGTH:
        log.warning("%s %r skipped: key longer than MLflow's %d characters", kind, key[:60],
                    MAX_ENTITY_KEY_LENGTH)
        return None
    text = "None" if value is None else str(value)
    if "@" in text or _SECRET_VALUES:
        text = _scrub(text)  # user:password@ in URLs (tracker.uri, storage) and known secret values
    if len(text) > limit:
        log.warning("%s %r truncated to MLflow's %d characters", kind, key, limit)
        text = text[: limit - 15] + "...[truncated]"
    return text


class Tracker:
    def __init__(self, cfg):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(cfg.max_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(cfg.request_timeout))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.cfg = cfg
        self.uri = tracking_uri(cfg)
        self.display_uri = redact_url(self.uri)
        if cfg.kind == "local":
            Path(cfg.dir).mkdir(parents=True, exist_ok=True)
        _quiet_plugin_noise(cfg.kind)
        if cfg.kind == "sagemaker":
            _prepare_sagemaker(self.uri)
        import mlflow
        from mlflow import MlflowClient

        if cfg.kind != "local":
            # Remote stores: the global URI is what MLflow's plugins (sagemaker-mlflow's
            # SigV4 auth and ARN header) and any fluent call read; MLFLOW_TRACKING_URI
            # also carries it to worker processes.
            mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self._experiment_id: Optional[str] = None
        self._artifact_uris: Dict[str, str] = {}
        self._down_since: Optional[float] = None  # first failure of the current outage
        self._outage_lock = threading.Lock()

    def _call(self, what: str, fn, *args, **kwargs):
        """fn(*args, **kwargs), retried while the tracking server is unreachable.

        MLflow's client retries each request itself (tracker.max_retries); on top of that a
        server that stays unreachable is retried with backoff (0.5 s doubling to 5 s) until
        tracker.outage_deadline seconds after the outage's first failure, shared by every
        thread of this Tracker; then one TrackingError naming the setting. Once past the
        deadline, later calls fail at their first unreachable answer (no second wait).
        A server never reached from this process (or, through RUNNER_TRACKER_REACHED,
        from the sweep that started it) is not waited for: a wrong tracker.uri fails at
        once. S3 errors (boto3, artifacts on s3://) are not server outages: botocore
        retries those itself (AWS_MAX_ATTEMPTS).
        """
        delay = 0.5
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                text = str(exc)
                if self.cfg.kind == "local" or not self._reached() or _from_boto(exc) or not (
                        _UNREACHABLE.search(text) or _GATEWAY.search(text)
                        or "ConnectionError" in type(exc).__name__):
                    raise
                deadline = self.cfg.get("outage_deadline")
                deadline = 300.0 if deadline is None else float(deadline)
                with self._outage_lock:
                    now = time.monotonic()
                    if self._down_since is None:
                        self._down_since = now
                        _say(f"runner: MLflow at tracker.uri={self.display_uri} is unreachable "
                             f"({(text.strip().splitlines() or [type(exc).__name__])[0][:160]}): retrying for "
                             f"up to tracker.outage_deadline={deadline:g}s")
                    down_for = now - self._down_since
                if down_for >= deadline:
                    raise TrackingError(
                        f"MLflow at tracker.uri={self.display_uri} unreachable for {down_for:.0f}s, past "
                        f"tracker.outage_deadline={deadline:g}s (failed to {what}): start the server or "
                        "raise tracker.outage_deadline, then run the same command again") from None
                time.sleep(max(0.05, min(delay, deadline - down_for)))
                delay = min(delay * 2, 5.0)
                continue
            if self.uri not in _REACHED:
                _REACHED.add(self.uri)
                os.environ[_REACHED_ENV] = self.uri  # launcher jobs started from here inherit it
            if self._down_since is not None:
                with self._outage_lock:
                    if self._down_since is not None:
                        _say(f"runner: MLflow at tracker.uri={self.display_uri} reachable again after "
                             f"{time.monotonic() - self._down_since:.0f}s")
                        self._down_since = None
            return result

    def _reached(self) -> bool:
        """Has this server answered before (outages are ridden out only after that)?"""
        return self.uri in _REACHED or os.environ.get(_REACHED_ENV) == self.uri

    def _fail(self, what: str, exc: BaseException, artifacts: bool = False) -> TrackingError:
        if isinstance(exc, TrackingError):
            return exc
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        setting = "tracker.dir" if self.cfg.kind == "local" else "tracker.uri"
        hint = (_artifact_hint(exc, text) if artifacts else None) or _hint(self.cfg.kind, exc, text)
        return TrackingError(f"MLflow at {setting}={self.display_uri} failed to {what}: "
                             f"{hint or text[:300]}")

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            name = self.cfg.experiment
            try:
                exp = self._call("look up the experiment", self.client.get_experiment_by_name, name)
                if exp is None:
                    location = None
                    if self.cfg.kind == "local":
                        location = Path(self.cfg.dir, "artifacts").resolve().as_uri()
                    try:
                        self._experiment_id = self._call("create the experiment", self.client.create_experiment,
                                                         name, artifact_location=location)
                    except Exception:  # created concurrently by another worker
                        exp = self.client.get_experiment_by_name(name)
                        if exp is None:
                            raise
                        self._experiment_id = exp.experiment_id
                else:
                    if exp.lifecycle_stage == "deleted":
                        raise TrackingError(f"tracker.experiment={name!r} is deleted in MLflow: restore "
                                            "it or choose another name")
                    self._experiment_id = exp.experiment_id
            except TrackingError:
                raise
            except Exception as exc:
                raise self._fail(f"open experiment {name!r}", exc) from None
        return self._experiment_id

    def start_run(self, run_name: Optional[str], tags: Dict[str, Any],
                  parent_run_id: Optional[str] = None) -> str:
        tags = dict(tags)
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        clean = {k: t for k, v in tags.items() if (t := _fit("tag", k, v, _tag_limit())) is not None}
        # A retried create must not make a second run when the first reached the server.
        token = clean["runner.create_token"] = uuid.uuid4().hex
        tried: list = []

        def create():
            if tried:
                found = self.client.search_runs([self.experiment_id()], f"tags.`runner.create_token` = '{token}'",
                                                max_results=1)
                if found:
                    return found[0]
            tried.append(1)
            return self.client.create_run(self.experiment_id(), tags=clean, run_name=run_name)

        try:
            run = self._call("create a run", create)
        except Exception as exc:
            raise self._fail("create a run", exc) from None
        # Known from the create response: uploads need no runs/get to find it.
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        return run.info.run_id

    def _artifact_repo(self, run_id: str):
        """The run's artifact repository, without a request when this Tracker created the run."""
        uri = self._artifact_uris.get(run_id)
        if uri is None:
            return None
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(uri, tracking_uri=self.uri)

    def log(self, run_id: str, params: Optional[Dict[str, Any]] = None,
            metrics: Optional[Dict[str, float]] = None, tags: Optional[Dict[str, Any]] = None,
            step: int = 0) -> None:
        import time

        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        now = int(time.time() * 1000)
        p = [Param(k, t) for k, v in (params or {}).items()
             if (t := _fit("param", k, v, MAX_PARAM_VAL_LENGTH)) is not None]
        m = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
        t = [RunTag(k, s) for k, v in (tags or {}).items() if (s := _fit("tag", k, v, _tag_limit())) is not None]
        if not (p or m or t):
            return
        try:
            self._call("log params/metrics", self.client.log_batch, run_id, metrics=m, params=p, tags=t)
        except Exception as exc:
            raise self._fail("log params/metrics", exc) from None

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        try:
            self._call(f"end run {run_id}", self.client.set_terminated, run_id, status=status)
        except Exception as exc:
            raise self._fail(f"end run {run_id} as {status}", exc) from None

    def log_text(self, run_id: str, text: str, path: str) -> None:
        text = _scrub(text)  # the resolved config may hold a URL typed with user:password@
        try:
            repo = self._artifact_repo(run_id)
            if repo is None:
                self._call(f"upload {path}", self.client.log_text, run_id, text, path)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    local = Path(tmp, Path(path).name)
                    local.write_text(text, encoding="utf-8")
                    parent = str(Path(path).parent)
                    self._call(f"upload {path}", repo.log_artifact, str(local), None if parent == "." else parent)
        except Exception as exc:
            raise self._fail(f"upload {path}", exc, artifacts=True) from None

    def log_model(self, run_id: str, booster, example) -> str:
        """Log with MLflow's LightGBM flavor (signature + input example); return the model URI."""
        import lightgbm
        import mlflow.lightgbm
        from mlflow.models import infer_signature

        signature = infer_signature(example, booster.predict(example))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "model")
            mlflow.lightgbm.save_model(booster, str(path), signature=signature, input_example=example,
                                       pip_requirements=[f"lightgbm=={lightgbm.__version__}",
                                                         f"mlflow=={mlflow.__version__}"])
            try:
                repo = self._artifact_repo(run_id)
                if repo is None:
                    self._call("upload the model", self.client.log_artifacts, run_id, str(path), "model")
                else:
                    self._call("upload the model", repo.log_artifacts, str(path), "model")
            except Exception as exc:
                raise self._fail("upload the model", exc, artifacts=True) from None
        return f"runs:/{run_id}/model"

    def log_dataset(self, run_id: str, frame, features, targets: str, context: str = "training") -> None:
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        dataset = mlflow.data.from_pandas(frame, source=_source_class()(_fit_source(features.source)), targets=targets,
                                          name=f"features-{features.key[:12]}", digest=features.key[:36])
        try:
            self._call("log the dataset", self.client.log_inputs, run_id,
                       [DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", context)])])
        except Exception as exc:
            raise self._fail("log the dataset", exc) from None

    def register(self, name: str, run_id: str, model_uri: str):
        def versions():
            try:
                return self.client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
            except Exception as exc:
                if _UNREACHABLE.search(str(exc)) or _GATEWAY.search(str(exc)):
                    raise
                return []  # a registry without run_id search: register as before

        try:
            # Idempotent: a sweep killed after registering (before recording it) registers once.
            existing = self._call(f"look up model {name!r}", versions)
            if existing:
                return max(existing, key=lambda v: int(v.version))
            try:
                self._call(f"look up model {name!r}", self.client.get_registered_model, name)
            except TrackingError:
                raise
            except Exception:
                self._call(f"create model {name!r}", self.client.create_registered_model, name)
            return self._call(f"register model {name!r}", self.client.create_model_version, name, model_uri,
                              run_id=run_id)
        except Exception as exc:
            raise self._fail(f"register model {name!r}", exc) from None

    def ui_command(self) -> str:
        if self.cfg.kind == "local":
            return (f"mlflow ui --backend-store-uri {self.uri} "
                    f"--default-artifact-root {Path(self.cfg.dir, 'artifacts').resolve().as_uri()}")
        return f"open {self.display_uri} (MLflow UI of the tracking server)"


def _say(text: str) -> None:
    """A line for the user on stderr (outage start/end), whatever logging is configured."""
    import sys

    from .secrets import scrub

    print(scrub(text), file=sys.stderr, flush=True)


_GATEWAY = re.compile(r"Bad Gateway|Service Unavailable|Gateway Time-?out", re.IGNORECASE)
_AUTH_DENIED = re.compile(r"\b(401|403)\b|PERMISSION_DENIED|UNAUTHENTICATED|signature|InvalidClientTokenId|"
                          r"UnrecognizedClient|ExpiredToken|AccessDenied", re.IGNORECASE)
_UNREACHABLE = re.compile(r"Max retries exceeded|Failed to establish a new connection|Connection refused|"
                          r"ConnectionError|Name or service not known|timed out|RemoteDisconnected",
                          re.IGNORECASE)


def _hint(kind: str, exc: BaseException, text: str) -> Optional[str]:
    """One line saying what to fix for the failures users can fix: auth and reachability."""
    if kind == "local":
        return None
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return _NO_AWS_CREDENTIALS
    if _AUTH_DENIED.search(text):
        if kind == "sagemaker":
            return ("the tracking server rejected the request signature (AWS SigV4): check the AWS "
                    "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN or "
                    "AWS_PROFILE) and that tracker.uri is the ARN of a tracking server they may use "
                    f"(region, account, name) [{text[:160]}]")
        return ("the server refused the credentials: set MLFLOW_TRACKING_USERNAME/"
                "MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN for it, or check tracker.uri "
                f"[{text[:160]}]")
    if _UNREACHABLE.search(text) or "ConnectionError" in name or "Timeout" in name:
        if kind == "sagemaker":
            endpoint = os.environ.get("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT")
            where = f"SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT={endpoint}" if endpoint else "the ARN's regional endpoint"
            return (f"cannot reach the tracking server ({where}): check tracker.uri (region), the "
                    "network path to SageMaker and any HTTPS proxy settings")
        return ("cannot reach the MLflow server: check tracker.uri (host and port) and that the "
                "server is running")
    return None


_REACHED: set = set()  # tracking URIs that answered in this process
_REACHED_ENV = "RUNNER_TRACKER_REACHED"


def _from_boto(exc: BaseException) -> bool:
    return (type(exc).__module__ or "").startswith(("botocore", "boto3"))


def _artifact_hint(exc: BaseException, text: str) -> Optional[str]:
    """Artifacts on s3:// are written by the client itself (boto3), not by the tracking server."""
    module = type(exc).__module__ or ""
    if not (module.startswith(("botocore", "boto3")) or "S3" in type(exc).__name__):
        return None
    if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        return _NO_AWS_CREDENTIALS
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    where = f"MLFLOW_S3_ENDPOINT_URL={endpoint}" if endpoint else "the bucket's region/endpoint"
    return (f"cannot write the run's artifacts to S3: check {where} and that the AWS credentials may "
            f"write to the experiment's artifact bucket [{text[:160]}]")


_NO_AWS_CREDENTIALS = ("no AWS credentials found to sign requests for tracker=sagemaker: set "
                       "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with an "
                       "IAM role)")


def _prepare_sagemaker(uri: str) -> None:
    """Fail before any request when the plugin or the AWS credentials are missing."""
    try:
        import boto3
        import sagemaker_mlflow  # noqa: F401
    except ImportError:
        raise ConfigError("tracker=sagemaker needs the sagemaker-mlflow plugin: "
                          "pip install sagemaker-mlflow") from None
    try:
        credentials = boto3.Session().get_credentials()
    except Exception as exc:  # a broken profile / config file
        raise TrackingError(f"tracker=sagemaker cannot load AWS credentials: {str(exc).splitlines()[0]}: "
                            "fix AWS_PROFILE / the AWS config files or set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY") from None
    if credentials is None:
        raise TrackingError(f"{_NO_AWS_CREDENTIALS}; tracker.uri={uri}")


class _DropPluginNoise(logging.Filter):
    """sagemaker-mlflow logs 'Using custom endpoint' on the root logger for every request, and its
    header provider warns on every request whose global tracking URI is not an ARN."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("Using custom endpoint"):
            return False
        if record.name == "mlflow.tracking.request_header.registry" and record.args and \
                "list index out of range" in str(record.args):
            return False
        return True


def _quiet_plugin_noise(kind: str) -> None:
    if kind == "sagemaker":
        # The plugin builds a boto3 session per request: botocore announces the credentials each time.
        logging.getLogger("botocore.credentials").setLevel(logging.WARNING)
    flt = _DropPluginNoise()
    for logger in (logging.getLogger(), logging.getLogger("mlflow.tracking.request_header.registry")):
        if not any(isinstance(f, _DropPluginNoise) for f in logger.filters):
            logger.addFilter(flt)


def _tag_limit() -> int:
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    return MAX_TAG_VAL_LENGTH


def git_state(cwd: Optional[str] = None) -> Dict[str, str]:
    """Commit and dirty flag of the code that ran, when it runs from a git checkout."""
    root = cwd or str(Path(__file__).resolve().parent.parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5)
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        return {"mlflow.source.git.commit": commit.stdout.strip(),
                "runner.git.dirty": str(bool(dirty.stdout.strip())).lower()}
    except (OSError, subprocess.SubprocessError):
        return {}


@functools.lru_cache(maxsize=None)
def _source_class():
    from mlflow.data.dataset_source import DatasetSource

    class WarehouseSource(DatasetSource):
        """Where features came from: account/database/schema and the query (never credentials)."""

        def __init__(self, info: Dict[str, Any]):
            self.info = dict(info)

        @staticmethod
        def _get_source_type() -> str:
            return "snowflake"

        def load(self, **kwargs):
            raise NotImplementedError("re-run the query in data.* to load these features")

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any):
            raise NotImplementedError

        def to_dict(self) -> Dict[str, Any]:
            return self.info

        @classmethod
        def from_dict(cls, source_dict: Dict[str, Any]):
            return cls(source_dict)

    return WarehouseSource



def _fit_source(info: Dict[str, Any]) -> Dict[str, Any]:
    import json

    from mlflow.utils.validation import MAX_DATASET_SOURCE_SIZE

    info = dict(info)
    excess = len(json.dumps(info)) - MAX_DATASET_SOURCE_SIZE
    if excess > 0:
        info["query"] = info["query"][: max(0, len(info["query"]) - excess - 40)] + "...[truncated]"
    return info
