"""What counts as an API an older tracking server lacks (told from a missing run or a refusal),
and how runner goes on without it: one warning line per process, the registration or run goes
ahead, any other failure still fails. On a local SQLite store in this process, with the
client's calls answered as such a server answers them (real old servers:
tests/test_server_versions.py)."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.unit

WARNING = "runner: the tracking server does not support"


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("AWS_", "SAGEMAKER_MLFLOW_")):
            monkeypatch.delenv(key)


@pytest.fixture
def fresh_hints(monkeypatch):
    from runner.tracking import hints

    monkeypatch.setattr(hints, "_skipped", set())
    monkeypatch.setattr(hints, "_versions", {})
    return hints


def test_missing_api_is_told_from_a_missing_run_or_a_refusal(fresh_hints):
    from mlflow.exceptions import MlflowException, RestException

    html_404 = "API request to endpoint /api/2.0/mlflow/runs/log-inputs failed with error code 404 != 200. Response"
    assert fresh_hints.missing_api(MlflowException(html_404, error_code="ENDPOINT_NOT_FOUND"))
    assert fresh_hints.missing_api(MlflowException(html_404))  # the code only in the text
    assert fresh_hints.missing_api(RestException({"error_code": "NOT_IMPLEMENTED", "message": "no logged models"}))
    assert fresh_hints.missing_api(NotImplementedError("search_logged_models"))
    missing_run = RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run with id=0 not found"})
    assert not fresh_hints.missing_api(missing_run)
    assert not fresh_hints.missing_api(RestException({"error_code": "PERMISSION_DENIED", "message": "404 denied"}))
    assert not fresh_hints.missing_api(MlflowException("API request failed with error code 503 != 200"))


@pytest.fixture
def local_tracker(tmp_path, monkeypatch):
    import logging

    from omegaconf import OmegaConf

    from runner.config import TrackerConfig
    from runner.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return Tracker(OmegaConf.merge(OmegaConf.structured(TrackerConfig), {"experiment": "unit"}))


def test_registry_without_run_search_warns_once_and_registers(fresh_hints, local_tracker, monkeypatch, capsys):
    from mlflow.exceptions import RestException

    from runner.errors import TrackingError

    tracker = local_tracker
    calls = []

    def refuse(filter_string, **kwargs):
        calls.append(filter_string)
        raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid attribute key 'run_id'"})

    monkeypatch.setattr(tracker.client, "search_model_versions", refuse)
    runs = [tracker._create_run(f"r{i}", {}) for i in range(2)]
    first = tracker.register("unit-old", runs[0], f"runs:/{runs[0]}/model")
    second = tracker.register("unit-old", runs[1], f"runs:/{runs[1]}/model")
    assert (str(first.version), str(second.version)) == ("1", "2") and len(calls) == 1  # asked once per process
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("runner:")]
    assert lines == [
        f"{WARNING} searching model versions by run: the version is registered without checking for one of this run"
    ]

    # Any other failure of the search is the registration's failure, as before the search existed.
    monkeypatch.setattr(fresh_hints, "_skipped", set())

    def denied(filter_string, **kwargs):
        raise RestException({"error_code": "PERMISSION_DENIED", "message": "not allowed"})

    monkeypatch.setattr(tracker.client, "search_model_versions", denied)
    with pytest.raises(TrackingError, match="register model 'unit-old'.*not allowed"):
        tracker.register("unit-old", runs[0], f"runs:/{runs[0]}/model")


def test_dataset_of_a_server_without_inputs_is_skipped_with_one_line(fresh_hints, local_tracker, monkeypatch, capsys):
    from mlflow.exceptions import MlflowException

    import runner.tracking.tracker as tracker_module

    tracker = local_tracker
    calls = []

    def missing(run_id, datasets=None, **kwargs):
        calls.append(run_id)
        raise MlflowException("... failed with error code 404 != 200", error_code="ENDPOINT_NOT_FOUND")

    monkeypatch.setattr(tracker.client, "log_inputs", missing)
    monkeypatch.setattr(tracker_module, "dataset_input", lambda *args: object())
    monkeypatch.setattr(fresh_hints, "server_version", lambda client, uri: "2.3.2")
    runs = [tracker._create_run(f"r{i}", {}) for i in range(2)]
    for run_id in runs:
        tracker.log_dataset(run_id, None, None, "Y")
    assert calls == runs[:1]
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("runner:")]
    assert lines == [f"{WARNING} dataset inputs (MLflow 2.3.2): the run's dataset is not recorded"]

    # A missing run is not a missing API: the call fails.
    monkeypatch.setattr(fresh_hints, "_skipped", set())

    def no_run(run_id, datasets=None, **kwargs):
        raise MlflowException("Run with id=0 not found", error_code="RESOURCE_DOES_NOT_EXIST")

    monkeypatch.setattr(tracker.client, "log_inputs", no_run)
    with pytest.raises(Exception, match="log the dataset"):
        tracker.log_dataset(runs[0], None, None, "Y")
