"""runner.run / runner.sweep in this process (the Python API of notebooks), with a Snowpark
session of the caller's own, as Snowflake Notebooks hand out (get_active_session())."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow import MlflowClient

import runner
from runner.embedded.demo import seed_sql
from runner.job import MEMO
from tests.support.servers import FakesnowProcess

pytestmark = pytest.mark.integration

NOPS = [r"^ALTER SESSION SET QUERY_TAG.*", r"^ALTER SESSION UNSET QUERY_TAG.*", r"^select system\$cancel_all_queries.*"]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """The caller's Snowpark session: a fakesnow server seeded with the demo tables."""
    server = FakesnowProcess(tmp_path_factory.mktemp("fakesnow")).start()
    try:
        # the caller closes its session, while the server is still up
        with server.session(database="DEMO", schema="PUBLIC", session_parameters={"nop_regexes": NOPS}) as own:
            for stmt in seed_sql("DEMO", "PUBLIC", SimpleNamespace(seed=7, customers=2000, events=20000)):
                own.sql(stmt).collect()
            yield own
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    MEMO.reset()
    yield
    MEMO.reset()


def _client(tmp_path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def _all_runs(tmp_path) -> list:
    if not (tmp_path / "mlruns" / "mlflow.db").exists():
        return []
    client = _client(tmp_path)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_run_uses_the_callers_session_and_leaves_it_open(session, tmp_path):
    session.query_tag = "my notebook"
    overrides = ["data=snowflake", f"data.cache_dir={tmp_path / 'cache'}", "model.num_boost_round=20"]
    result = runner.run(overrides, session=session)
    assert result.status == "FINISHED" and result.features.feature_queries == 1
    run = _client(tmp_path).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["runner.warehouse.feature_queries"] == "1"
    assert run.data.params["data.backend"] == "snowflake"
    experiment = _client(tmp_path).get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens the runs table
    # Not closed, and its query tag is the caller's again.
    assert session.sql("select count(*) from CUSTOMERS").collect()[0][0] == 2000
    assert session.query_tag == "my notebook"
    # A second call in the same process: Hydra's state was put back, the pull is reused.
    again = runner.run([*overrides, "model.params.num_leaves=7"], session=session)
    assert again.status == "FINISHED" and again.run_id != result.run_id and again.features.feature_queries == 0


def test_session_needs_a_snowflake_data_config(session, tmp_path):
    with pytest.raises(runner.ConfigError, match="data.backend is snowflake"):
        runner.run(["data=demo"], session=session)
    assert _all_runs(tmp_path) == []  # checked before any run was created


def test_errors_raise_with_the_command_lines_message(tmp_path):
    with pytest.raises(runner.ConfigError) as exc:
        runner.run(["data.split.valid=2"])
    assert "data.split.valid and data.split.test must each be in (0, 1)" in str(exc.value)
    with pytest.raises(runner.ConfigError, match="nosuch"):
        runner.run(["nosuch.key=1"])
    with pytest.raises(runner.ConfigError, match="hydra.sweeper.n_trials must be >= 1"):
        runner.sweep(["sweep=lightgbm", "hydra.sweeper.n_trials=0", "data=synthetic", "data.demo.rows=500"])
    with pytest.raises(runner.ConfigError, match="config_dir"):
        runner.run([], config_dir=str(tmp_path / "missing"))


def test_config_dir_and_config_name_as_on_the_command_line(tmp_path):
    conf = tmp_path / "conf"
    (conf / "tracker").mkdir(parents=True)
    (conf / "tracker" / "mine.yaml").write_text("defaults:\n  - local\n  - _self_\nexperiment: from-my-conf\n")
    (conf / "project.yaml").write_text("defaults:\n  - config\n  - override tracker: mine\n  - _self_\n")
    result = runner.run(
        ["data=synthetic", "data.demo.rows=1000", "data.demo.n_features=4", "model.num_boost_round=10"],
        config_dir=str(conf),
        config_name="project",
    )
    run = _client(tmp_path).get_run(result.run_id)
    exp = _client(tmp_path).get_experiment(run.info.experiment_id)
    assert exp.name == "from-my-conf"
