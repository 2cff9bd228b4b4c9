"""runner/tracking/sagemaker.py: the tracking server's ARN in parts, and the line that opens its
UI when runner gets no sign-in link, or asks for none (stdout not a terminal, a job of a
multirun); the link itself: tests/test_sagemaker.py, on a stand-in."""

from __future__ import annotations

import os
import sys

import pytest

from runner import env
from runner.errors import ConfigError
from runner.secrets import redact_url, scrub
from runner.tracking.sagemaker import parse_arn, ui_line, ui_page

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("arn", "partition", "region"),
    [
        ("arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/my-server", "aws", "eu-west-1"),
        ("arn:aws-cn:sagemaker:cn-north-1:123456789012:mlflow-tracking-server/my-server", "aws-cn", "cn-north-1"),
        (
            "arn:aws-us-gov:sagemaker:us-gov-west-1:123456789012:mlflow-tracking-server/my-server",
            "aws-us-gov",
            "us-gov-west-1",
        ),
    ],
)
def test_tracking_server_arn(arn, partition, region):
    server = parse_arn(f"  {arn}\n")
    assert (server.arn, server.partition, server.region) == (arn, partition, region)
    assert (server.account, server.resource, server.name) == ("123456789012", "mlflow-tracking-server", "my-server")
    assert server.operation == "CreatePresignedMlflowTrackingServerUrl"
    assert server.cli() == (
        f"aws sagemaker create-presigned-mlflow-tracking-server-url --tracking-server-name my-server --region {region}"
    )


def test_mlflow_app_arn():
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/app-abc123"
    server = parse_arn(arn)
    assert (server.resource, server.name, server.operation) == (
        "mlflow-app",
        "app-abc123",
        "CreatePresignedMlflowAppUrl",
    )
    assert server.cli() == f"aws sagemaker create-presigned-mlflow-app-url --arn {arn} --region us-east-1"


@pytest.mark.parametrize(
    "uri",
    [
        "arn:aws:sagemaker:us-east-1:1234:mlflow-tracking-server/test",  # account is 12 digits
        "arn:aws:s3:us-east-1:123456789012:mlflow-tracking-server/test",  # not sagemaker
        "arn:gcp:sagemaker:us-east-1:123456789012:mlflow-tracking-server/test",  # not an AWS partition
        "arn:aws:sagemaker:us-east-1:123456789012:notebook-instance/test",  # not an MLflow server
        "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/",  # no name
        "https://us-east-1.experiments.sagemaker.aws",  # a URL, not the ARN
    ],
)
def test_malformed_arn(uri):
    with pytest.raises(ConfigError, match="tracker.uri must be a SageMaker MLflow tracking-server ARN"):
        parse_arn(uri)


def test_pages():
    assert ui_page("7", "abc") == "#/experiments/7/runs/abc"
    assert ui_page("7") == "#/experiments/7/runs?workflowType=machine_learning"
    assert ui_page(None, "abc") == ""


ARN = "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/my-server"
CLI = "aws sagemaker create-presigned-mlflow-tracking-server-url --tracking-server-name my-server --region eu-west-1"


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    """No AWS credentials anywhere, and no way to reach AWS."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", "http://127.0.0.1:9")
    monkeypatch.delenv(env.PARENT_RUN_ID, raising=False)


@pytest.fixture
def terminal(monkeypatch):
    """stdout is a terminal (under pytest it is a capture file)."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)


def test_no_credentials_gives_the_aws_command(no_aws, terminal):
    assert ui_line(ARN, "7", "abc") == (
        f"{CLI} prints a sign-in link (runner got none: no AWS credentials), then page #/experiments/7/runs/abc"
    )
    assert ui_line(ARN, None).endswith("then the Experiments page")


def test_stdout_not_a_terminal_asks_for_no_link(no_aws, monkeypatch):
    """A file or a pipe (CI logs, `> run.log`) is a log: no credential printed there. With
    credentials and the API at a dead port, asking would say 'cannot reach'."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUNIT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-secret")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert ui_line(ARN, "7", "abc") == (
        f"{CLI} prints a sign-in link (runner got none: stdout is not a terminal), then page #/experiments/7/runs/abc"
    )
    monkeypatch.setattr(sys, "stdout", None)  # pythonw, a closed console
    assert "(runner got none: stdout is not a terminal)" in ui_line(ARN, "7")


@pytest.mark.parametrize("on_terminal", [True, False])
def test_a_job_of_a_multirun_asks_for_no_link(no_aws, monkeypatch, on_terminal):
    """A launcher may write a job's output to files (submitit): no credential printed there."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUNIT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-secret")
    monkeypatch.setenv(env.PARENT_RUN_ID, "p" * 32)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: on_terminal)
    assert ui_line(ARN, "7") == (
        f"{CLI} prints a sign-in link (runner got none: a job of a multirun gets no link), "
        "then page #/experiments/7/runs?workflowType=machine_learning"
    )


def test_a_sign_in_link_goes_through_the_redactor_unchanged(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-secret-value")
    link = "https://t-abc123.eu-west-1.experiments.sagemaker.aws/auth?authToken=eyJhbGciOi.eyJzdWIi-_x%3D%3D"
    line = (
        f"  open the UI: {link} (sign-in link: one use, valid 5 minutes), then https://t-abc123/#/experiments/1/runs/x"
    )
    assert redact_url(link) == link and scrub(line) == line
