"""SageMaker managed MLflow through the sagemaker-mlflow plugin: checks before the first
request, the plugin's per-request log noise kept out of the terminal, and the line that opens
the server's MLflow UI (a one-use sign-in link from SageMaker, else the aws command for one)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import Iterator, Optional
from urllib.parse import urlsplit

from .. import env
from ..errors import ConfigError, TrackingError, first_line
from ..secrets import scrub
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
        # The plugin builds a boto3 session per request: botocore announces the credentials each time;
        # and the sign-in link's client announces an endpoint from AWS_ENDPOINT_URL_SAGEMAKER.
        for name in ("botocore.credentials", "botocore.configprovider"):
            logging.getLogger(name).setLevel(logging.WARNING)
    flt = _DropPluginNoise()
    for logger in (logging.getLogger(), logging.getLogger("mlflow.tracking.request_header.registry")):
        if not any(isinstance(f, _DropPluginNoise) for f in logger.filters):
            logger.addFilter(flt)


# ---------------------------------------------------------------------------- the MLflow UI

_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):sagemaker:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"(?P<resource>mlflow-tracking-server|mlflow-app)/(?P<name>[A-Za-z0-9][A-Za-z0-9-]*)$"
)
URL_SECONDS = 300  # how long the sign-in link works (SageMaker's maximum); it works once
SESSION_SECONDS = 12 * 3600  # how long the UI session it opens lasts (SageMaker's maximum)
CONNECT_TIMEOUT = 2.0  # seconds: the end of a run never waits long for a link
READ_TIMEOUT = 4.0


@dataclass(frozen=True)
class TrackingServerArn:
    """arn:<partition>:sagemaker:<region>:<account>:mlflow-tracking-server/<name> (or mlflow-app/<id>)."""

    arn: str
    partition: str
    region: str
    account: str
    resource: str
    name: str

    @property
    def operation(self) -> str:
        """The SageMaker API action that signs in to the server's UI (also the IAM permission)."""
        return (
            "CreatePresignedMlflowAppUrl" if self.resource == "mlflow-app" else "CreatePresignedMlflowTrackingServerUrl"
        )

    def cli(self) -> str:
        """The aws CLI command that prints a sign-in link (its AuthorizedUrl)."""
        if self.resource == "mlflow-app":
            return f"aws sagemaker create-presigned-mlflow-app-url --arn {self.arn} --region {self.region}"
        return (
            "aws sagemaker create-presigned-mlflow-tracking-server-url "
            f"--tracking-server-name {self.name} --region {self.region}"
        )


def parse_arn(uri: str) -> TrackingServerArn:
    """The parts of a SageMaker MLflow tracking-server (or MLflow App) ARN; ConfigError otherwise."""
    m = _ARN.match(uri.strip())
    if m is None:
        raise ConfigError(
            "tracker.uri must be a SageMaker MLflow tracking-server ARN "
            f"(arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>), got {uri!r}"
        )
    return TrackingServerArn(arn=m.group(0), **m.groupdict())


class NoLink(Exception):
    """Why runner has no sign-in link: one short clause."""


def ui_page(experiment_id: Optional[str], run_id: Optional[str] = None) -> str:
    """The UI page (URL fragment) of a run, else of the experiment's runs table in Model training mode."""
    if not experiment_id:
        return ""
    if run_id:
        return f"#/experiments/{experiment_id}/runs/{run_id}"
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def ui_line(uri: str, experiment_id: Optional[str], run_id: Optional[str] = None) -> str:
    """What opens the server's MLflow UI on the run (or experiment): a sign-in link SageMaker
    made for this terminal (a credential: printed to a terminal only, never logged or stored),
    else the aws command that makes one, with the reason in one clause; then the page to go to
    once signed in."""
    server = parse_arn(uri)
    page = ui_page(experiment_id, run_id)
    try:
        url = presigned_url(server)
    except NoLink as exc:
        then = f"page {page}" if page else "the Experiments page"
        return f"{server.cli()} prints a sign-in link (runner got none: {scrub(str(exc))}), then {then}"
    parts = urlsplit(url)
    after = f", then {parts.scheme}://{parts.netloc}/{page}" if page and parts.scheme and parts.netloc else ""
    return f"{url} (sign-in link: one use, valid {URL_SECONDS // 60} minutes){after}"


@contextlib.contextmanager
def _unlogged() -> Iterator[None]:
    """botocore logs response bodies at DEBUG (hydra.verbose): keep the link out of log files."""
    parsers = logging.getLogger("botocore.parsers")
    before, parsers.disabled = parsers.disabled, True
    try:
        yield
    finally:
        parsers.disabled = before


def _stdout_is_a_terminal() -> bool:
    try:
        return sys.stdout is not None and sys.stdout.isatty()
    except (AttributeError, ValueError, OSError):  # no stdout, a closed one, a stand-in without isatty
        return False


def presigned_url(server: TrackingServerArn) -> str:
    """A one-use sign-in link to the server's UI from SageMaker's API (one attempt, short
    timeouts; the endpoint as boto3 finds it, e.g. AWS_ENDPOINT_URL_SAGEMAKER), asked for only
    when it goes to a terminal; NoLink if none."""
    if os.environ.get(env.PARENT_RUN_ID):
        # A launcher may write each job's output to files (submitit): no credential there.
        raise NoLink("a job of a multirun gets no link")
    if not _stdout_is_a_terminal():
        # A file or a pipe (CI logs, `> run.log`, a launcher's job output) is a log: no credential there.
        raise NoLink("stdout is not a terminal")
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ClientError, ReadTimeoutError
        from botocore.exceptions import ConnectionError as Unreachable
    except ImportError:
        raise NoLink("boto3 is not installed") from None
    try:
        session = boto3.Session()
        if session.get_credentials() is None:
            raise NoLink("no AWS credentials")
        config = Config(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        client = session.client("sagemaker", region_name=server.region, config=config)
        how = {"ExpiresInSeconds": URL_SECONDS, "SessionExpirationDurationInSeconds": SESSION_SECONDS}
        with _unlogged():
            if server.resource == "mlflow-app":
                answer = client.create_presigned_mlflow_app_url(Arn=server.arn, **how)
            else:
                answer = client.create_presigned_mlflow_tracking_server_url(TrackingServerName=server.name, **how)
    except NoLink:
        raise
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code") or "an error"
        if "AccessDenied" in code:
            raise NoLink(f"SageMaker answered {code}: the AWS identity needs sagemaker:{server.operation}") from None
        raise NoLink(f"SageMaker answered {code}") from None
    except ReadTimeoutError:
        raise NoLink(f"SageMaker's API did not answer within {READ_TIMEOUT:g} s") from None
    except Unreachable as exc:
        where = getattr(exc, "kwargs", {}).get("endpoint_url") or "its endpoint"
        raise NoLink(f"cannot reach SageMaker's API at {where}") from None
    except Exception as exc:  # the end line of a finished run never fails it
        raise NoLink(f"{type(exc).__name__}: {first_line(exc, 120)}") from None
    url = answer.get("AuthorizedUrl") if isinstance(answer, dict) else None
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise NoLink("SageMaker's answer had no AuthorizedUrl")
    return url
