"""Canary secrets planted in the environment, in connections.toml, in URLs and in typed settings
never show up in anything runner writes or prints, for every backend a run, a sweep or a
failure touches."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import run_runner
from tests.support.servers import FakesnowProcess, PostgresCluster

pytestmark = pytest.mark.integration

CANARIES = {
    "SNOWFLAKE_PASSWORD": "canary-sf-pw-7f3a91",
    "AWS_SECRET_ACCESS_KEY": "canary-aws-secret-c4d2e8",
    "MLFLOW_TRACKING_TOKEN": "canary-mlflow-token-55be01",
    "PGPASSWORD": "canary-pg-pw-9e1d77",
}
SMALL = ["data.demo.events=20000", "data.demo.customers=2000", "model.num_boost_round=10"]


def scan(root: Path, texts) -> list:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            found += [f"{path}: {name}" for name, value in CANARIES.items() if value.encode() in blob]
    for i, text in enumerate(texts):
        found += [f"output {i}: {name}" for name, value in CANARIES.items() if value in text]
    return found


def test_no_canary_in_runs_logs_or_outputs(tmp_path):
    ok = run_runner(SMALL, tmp_path, env=CANARIES)
    assert ok.returncode == 0, ok.stderr[-2000:]
    failed = run_runner(SMALL + ["data.label=NOPE"], tmp_path, env=CANARIES)
    assert failed.returncode == 2
    written = list(tmp_path.rglob("*"))
    assert any(p.name == "mlflow.db" for p in written) and any(p.suffix == ".parquet" for p in written)
    assert any(p.name == "config.yaml" for p in written)  # Hydra's output folder was scanned too
    assert scan(tmp_path, [ok.stdout, ok.stderr, failed.stdout, failed.stderr]) == []


def test_scan_finds_a_planted_canary(tmp_path):
    # The scanner itself must be able to fail.
    (tmp_path / "leak.txt").write_text("token=" + CANARIES["MLFLOW_TRACKING_TOKEN"])
    assert scan(tmp_path, []) == [f"{tmp_path / 'leak.txt'}: MLFLOW_TRACKING_TOKEN"]


# ------------------------------------------- every backend's secret: warehouse, AWS, MLflow, database

WIDE = {
    "snowflake": "canary-sf-toml-pw-" + uuid.uuid4().hex[:8],  # connections.toml password
    "aws": "canary-aws-secret-" + uuid.uuid4().hex[:8],  # AWS_SECRET_ACCESS_KEY
    "mlflow": "canary-mlflow-token-" + uuid.uuid4().hex[:8],  # MLFLOW_TRACKING_TOKEN
    "database": "canary-db-pw-" + uuid.uuid4().hex[:8],  # password in the storage URL
    "typed": "canary-typed-pw-" + uuid.uuid4().hex[:8],  # user:password@ typed in tracker.uri
}
NOPS = [r"^ALTER SESSION SET QUERY_TAG.*", r"^ALTER SESSION UNSET QUERY_TAG.*", r"^select system\$cancel_all_queries.*"]
TINY = ["data.demo.events=20000", "data.demo.customers=2000", "model.num_boost_round=10"]


def wide_scan(roots, texts) -> list:
    found = []
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file():
                blob = path.read_bytes()
                found += [f"{path}: {k}" for k, v in WIDE.items() if v.encode() in blob]
    for i, text in enumerate(texts):
        found += [f"output {i}: {k}" for k, v in WIDE.items() if v in text]
    return found


@pytest.fixture(scope="module")
def postgres():
    import shutil
    import tempfile

    import psycopg2

    # Run as the `postgres` user: a world-traversable folder (pytest's tmp_path is under a 0700 one).
    base = Path(tempfile.mkdtemp(prefix="runner-pg-secrets-"))
    os.chmod(base, 0o755)
    cluster = PostgresCluster(base / "cluster").start()
    conn = psycopg2.connect(
        host="127.0.0.1", port=cluster.port, user="runner", password="runner-test-pw", dbname="postgres"
    )
    conn.autocommit = True
    conn.cursor().execute(f"alter user runner with password '{WIDE['database']}'")
    conn.close()
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


def dump_postgres(cluster) -> str:
    import psycopg2

    conn = psycopg2.connect(
        host="127.0.0.1", port=cluster.port, user="runner", password=WIDE["database"], dbname="postgres"
    )
    try:
        cur = conn.cursor()
        cur.execute("select tablename from pg_tables where schemaname = 'public'")
        tables = [r[0] for r in cur.fetchall()]
        out = []
        for table in tables:
            cur.execute(f'select t::text from "{table}" t')
            out += [r[0] for r in cur.fetchall()]
        assert "trials" in tables  # the Optuna storage really is there
        return "\n".join(out)
    finally:
        conn.close()


def test_no_canary_from_any_backend_after_run_sweep_and_failure(tmp_path, mlflow_server, postgres):
    import snowflake.connector

    from runner.embedded.demo import seed_sql

    fs = FakesnowProcess(tmp_path / "fs").start()
    try:
        conn = snowflake.connector.connect(**fs.connect_kwargs())
        try:
            for stmt in seed_sql("DEMO", "PUBLIC", SimpleNamespace(seed=7, customers=2000, events=20000)):
                conn.cursor().execute(stmt)
        finally:
            conn.close()
        home = tmp_path / "sfhome"
        home.mkdir()
        nops = ", ".join(f"'{r}'" for r in NOPS)
        toml = home / "connections.toml"
        toml.write_text(
            f'[test]\naccount = "fakesnow"\nuser = "fake"\npassword = "{WIDE["snowflake"]}"\n'
            f'host = "127.0.0.1"\nport = {fs.port}\nprotocol = "http"\ndatabase = "DEMO"\n'
            f'schema = "PUBLIC"\nnetwork_timeout = 10\n\n[test.session_parameters]\n'
            f"nop_regexes = [{nops}]\n"
        )
        toml.chmod(0o600)
        work = tmp_path / "work"
        work.mkdir()
        env = {
            "SNOWFLAKE_HOME": str(home),
            "AWS_ACCESS_KEY_ID": "AKIDCANARY",
            "AWS_SECRET_ACCESS_KEY": WIDE["aws"],
            "MLFLOW_TRACKING_TOKEN": WIDE["mlflow"],
            "RUNNER_STORAGE_PASSWORD": WIDE["database"],
        }
        experiment = "secrets-" + uuid.uuid4().hex[:8]
        host = mlflow_server.url.split("://", 1)[1]
        tracker = [
            "tracker=server",
            f"tracker.uri=http://runner:{WIDE['typed']}@{host}",
            f"tracker.experiment={experiment}",
        ]
        single = run_runner(["data=snowflake", "data.connection_name=test", *TINY, *tracker], work, env=env)
        assert single.returncode == 0, single.stderr[-3000:]
        storage_typed = f"postgresql+psycopg2://runner:{WIDE['database']}@127.0.0.1:{postgres.port}/postgres"
        storage_env = (
            f"postgresql+psycopg2://runner:${{oc.env:RUNNER_STORAGE_PASSWORD}}@127.0.0.1:{postgres.port}/postgres"
        )
        sweeps = []
        for i, storage in enumerate([storage_typed, storage_env]):
            sweeps.append(
                run_runner(
                    [
                        "sweep=lightgbm",
                        "hydra.sweeper.n_trials=2",
                        f"hydra.sweeper.storage={storage}",
                        f"hydra.sweeper.study_name=secrets-{i}",
                        "data=snowflake",
                        "data.connection_name=test",
                        *TINY,
                        *tracker,
                    ],
                    work,
                    env=env,
                    multirun=True,
                )
            )
            assert sweeps[-1].returncode == 0, sweeps[-1].stderr[-3000:]
        failed = run_runner(
            ["data=snowflake", "data.connection_name=test", "data.label=NOPE", *TINY, *tracker], work, env=env
        )
        assert failed.returncode == 2, failed.stderr[-3000:]
    finally:
        fs.stop()
    written = {p.name for p in work.rglob("*")}
    assert {"overrides.yaml", "multirun.yaml", "config.yaml"} <= written  # Hydra's outputs were scanned
    outputs = [single.stdout, single.stderr, failed.stdout, failed.stderr, dump_postgres(postgres)]
    for proc in sweeps:
        outputs += [proc.stdout, proc.stderr]
    assert wide_scan([work, mlflow_server.root], outputs) == []


def test_wide_scan_finds_a_planted_canary(tmp_path):
    (tmp_path / "overrides.yaml").write_text(f"- hydra.sweeper.storage=postgresql://u:{WIDE['database']}@h/db\n")
    assert wide_scan([tmp_path], []) == [f"{tmp_path / 'overrides.yaml'}: database"]
