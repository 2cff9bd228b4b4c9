"""data=snowflake against a fakesnow server in its own process, over the real connector.

The server is seeded with the demo tables by runner.demo.seed_sql through the
Snowflake connector. A recording HTTP front door (Sigv4Proxy, verify=False)
sits between runner and the server so the test sees every statement the
warehouse received (query tag included). Runs use Snowflake's standard
connections.toml in a temporary SNOWFLAKE_HOME, or SNOWFLAKE_* variables.

What fakesnow cannot check (see README, "Snowflake"): time travel (AT(...)
fails there, so data.snapshot is checked on the generated SQL and on the
error path), LAST_ALTERED (always 1970: the cache key follows ROW_COUNT
there), QUERY_TAG (accepted as a no-op: checked on the wire), TRANSIENT.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from runner.config import DataConfig
from runner.data import (
    MATERIALIZED_PREFIX,
    FeatureCache,
    build_frame,
    frame_sql,
    load_features,
    open_warehouse,
    snapshot_timestamp,
    time_travel_sql,
)
from runner.embedded.demo import seed_sql
from runner.errors import ConfigError, WarehouseError
from tests.conftest import run_runner
from tests.support.servers import FakesnowProcess, free_port
from tests.support.sigv4_proxy import Sigv4Proxy

pytestmark = pytest.mark.integration

CANARY = "canary-pw-5be1c0d9"
NOPS = [r"^ALTER SESSION SET QUERY_TAG.*", r"^ALTER SESSION UNSET QUERY_TAG.*", r"^select system\$cancel_all_queries.*"]
DEMO = SimpleNamespace(seed=7, customers=3000, events=50000)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    """fakesnow seeded with DEMO.PUBLIC.{CUSTOMERS,EVENTS}, behind a recording front door."""
    import snowflake.connector

    server = FakesnowProcess(tmp_path_factory.mktemp("fakesnow")).start()
    try:
        conn = snowflake.connector.connect(**server.connect_kwargs())
        try:
            for stmt in seed_sql("DEMO", "PUBLIC", DEMO):
                conn.cursor().execute(stmt)
            conn.cursor().execute("create schema if not exists DEMO.MUTABLE")
            for table in ("CUSTOMERS", "EVENTS"):
                conn.cursor().execute(f"create table DEMO.MUTABLE.{table} as select * from DEMO.PUBLIC.{table}")
        finally:
            conn.close()
        with Sigv4Proxy(f"http://127.0.0.1:{server.port}", verify=False, record_bodies=True) as door:
            yield SimpleNamespace(server=server, door=door, port=door.port)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def snowflake_home(warehouse, tmp_path_factory):
    """Snowflake's standard connections.toml; the emulator's no-op list travels in it too."""
    home = tmp_path_factory.mktemp("snowflake_home")
    nops = ", ".join(f"'{r}'" for r in NOPS)  # TOML literal strings: no escaping
    path = home / "connections.toml"
    path.write_text(f"""[test]
account = "fakesnow"
user = "fake"
password = "{CANARY}"
host = "127.0.0.1"
port = {warehouse.port}
protocol = "http"
database = "DEMO"
schema = "PUBLIC"
network_timeout = 10

[test.session_parameters]
nop_regexes = [{nops}]
""")
    path.chmod(0o600)  # the connector refuses group/world-readable credential files
    return home


@pytest.fixture
def env_connection(warehouse, monkeypatch):
    """The SNOWFLAKE_* variables path (in this process: no connections.toml involved)."""
    values = dict(
        ACCOUNT="fakesnow",
        USER="fake",
        PASSWORD=CANARY,
        HOST="127.0.0.1",
        PORT=str(warehouse.port),
        PROTOCOL="http",
        DATABASE="DEMO",
        SCHEMA="PUBLIC",
    )
    for key, value in values.items():
        monkeypatch.setenv(f"SNOWFLAKE_{key}", value)
    return values


def data_cfg(**overrides):
    base = OmegaConf.structured(DataConfig)
    spec = {
        "backend": "snowflake",
        "features": {"_target_": "runner.demo.churn_features"},
        "entity_key": "CUSTOMER_ID",
        "label": "CHURNED",
        "network_timeout": 10,
        **overrides,
    }
    return OmegaConf.merge(base, spec)


def pull(cfg, cache_dir):
    with open_warehouse(cfg) as wh:
        return load_features(wh, cfg, FeatureCache(str(cache_dir)))


def sent_sql(door, describe: bool = False) -> list:
    """SQL the warehouse was asked to run (describe=True: also Snowpark's compile-only
    schema lookups, which the connector sends with describeOnly=true)."""
    out = []
    for _method, path, body in door.bodies:
        if path.endswith("/query-request") and body:
            request = json.loads(body)
            if describe or not request.get("describeOnly"):
                out.append(request["sqlText"])
    return out


def _error_lines(stderr: str):
    return [line for line in stderr.splitlines() if line.startswith("runner: error:")]


# --------------------------------------------------------------------------- #
# End to end: python -m runner data=snowflake data.connection_name=test
# --------------------------------------------------------------------------- #


def test_run_from_connections_toml(warehouse, snowflake_home, tmp_path):
    from mlflow import MlflowClient

    warehouse.door.reset_counts()
    work = tmp_path / "work"
    work.mkdir()
    proc = run_runner(
        ["data=snowflake", "data.connection_name=test", "model.num_boost_round=30"],
        cwd=work,
        env={"SNOWFLAKE_HOME": str(snowflake_home)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("runner").experiment_id])
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["runner.cache"] == "miss" and tags["runner.warehouse.feature_queries"] == "1"
    assert 0.5 < run.data.metrics["valid_auc"] <= 1
    (dataset_input,) = run.inputs.dataset_inputs
    source = json.loads(dataset_input.dataset.source)
    assert (source["account"], source["database"], source["schema"]) == ("fakesnow", "DEMO", "PUBLIC")
    assert source["definition"] == "data.features" and "EVENTS" in source["query"]
    # The data version: LAST_ALTERED/ROW_COUNT per source table (fakesnow: always 1970).
    assert re.fullmatch(
        r"altered:DEMO\.PUBLIC\.CUSTOMERS=[^;]+/3000;DEMO\.PUBLIC\.EVENTS=[^;]+/50000", source["version"]
    ), source["version"]

    # The warehouse got the query tag before any other statement of the run.
    statements = sent_sql(warehouse.door)
    assert statements[0] == f"alter session set query_tag = 'runner run_id={run.info.run_id}'", statements[:3]
    assert sum("query_tag" in s.lower() for s in statements) == 1
    assert any(s.lstrip().upper().startswith("SELECT") and "EVENTS" in s for s in statements)

    # The password never reaches anything runner wrote or printed.
    assert CANARY not in proc.stdout + proc.stderr
    written = [p for p in work.rglob("*") if p.is_file()]
    assert any(".hydra" in p.parts for p in written) and any(p.suffix == ".parquet" for p in written)
    for path in written:
        data = path.read_bytes()
        assert CANARY.encode() not in data, path
        if path.suffix in (".db", ".parquet"):
            continue
        try:
            assert CANARY.encode() not in gzip.decompress(data), path
        except (OSError, EOFError):
            pass
    assert all(CANARY not in v for v in [*run.data.params.values(), *tags.values()])


def test_connection_errors_name_the_setting(snowflake_home, tmp_path):
    proc = run_runner(
        ["data=snowflake", "data.connection_name=nope"], cwd=tmp_path, env={"SNOWFLAKE_HOME": str(snowflake_home)}
    )
    assert proc.returncode != 0
    (line,) = _error_lines(proc.stderr)
    assert "data.connection_name='nope'" in line and "entries: test" in line and "SNOWFLAKE_HOME" in line, line
    assert CANARY not in proc.stdout + proc.stderr

    empty = tmp_path / "empty_home"
    empty.mkdir()
    env = {"SNOWFLAKE_HOME": str(empty)}
    proc = run_runner(["data=snowflake"], cwd=tmp_path, env=env)
    assert proc.returncode != 0
    (line,) = _error_lines(proc.stderr)
    assert "data.connection_name" in line and "SNOWFLAKE_ACCOUNT" in line, line

    # Nothing listens at the entry's host:port: a bounded, clear failure.
    dead = tmp_path / "dead_home"
    dead.mkdir()
    (dead / "connections.toml").write_text(
        (snowflake_home / "connections.toml")
        .read_text()
        .replace("[test", "[dead")
        .replace(
            re.search(r"port = \d+", (snowflake_home / "connections.toml").read_text()).group(0),
            f"port = {free_port()}",
        )
    )
    (dead / "connections.toml").chmod(0o600)
    proc = run_runner(
        ["data=snowflake", "data.connection_name=dead"], cwd=tmp_path, env={"SNOWFLAKE_HOME": str(dead)}, timeout=120
    )
    assert proc.returncode != 0
    (line,) = _error_lines(proc.stderr)
    assert "cannot connect to Snowflake (data.connection_name=dead in " in line, line
    assert CANARY not in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- #
# SNOWFLAKE_* variables, cache key, materialization (in process, same wire)
# --------------------------------------------------------------------------- #


def test_cache_key_follows_source_changes(env_connection, tmp_path):
    import snowflake.connector

    cfg = data_cfg(schema="MUTABLE")
    first = pull(cfg, tmp_path)
    assert not first.cache_hit and first.feature_queries == 1
    assert first.source["schema"] == "MUTABLE"
    again = pull(cfg, tmp_path)
    assert again.cache_hit and again.key == first.key and again.feature_queries == 0

    conn = snowflake.connector.connect(
        user="fake",
        password="x",
        account="fakesnow",
        host="127.0.0.1",
        port=int(env_connection["PORT"]),
        protocol="http",
        network_timeout=10,
    )
    try:
        conn.cursor().execute("insert into DEMO.MUTABLE.EVENTS select * from DEMO.MUTABLE.EVENTS limit 10")
    finally:
        conn.close()
    changed = pull(cfg, tmp_path)
    assert not changed.cache_hit and changed.key != first.key and changed.feature_queries == 1
    # Only ROW_COUNT moved: the emulator reports every LAST_ALTERED as 1970, so an UPDATE
    # (same row count) would not change the key here; on Snowflake LAST_ALTERED does.
    assert "1970-01-01" in changed.source["version"]


def test_materialize_table_is_computed_once_and_read_by_later_pulls(warehouse, env_connection, tmp_path):
    cfg = data_cfg(materialize="table")
    with open_warehouse(cfg) as wh:
        with wh.session.query_history() as history:
            first = load_features(wh, cfg, FeatureCache(str(tmp_path / "worker1")))
        created = [q.sql_text for q in history.queries if "CREATE" in q.sql_text.upper()]
        name = first.source["materialized"]
        assert name == f'"DEMO"."PUBLIC".{MATERIALIZED_PREFIX}{first.key[:16].upper()}'
        assert len(created) == 1 and MATERIALIZED_PREFIX in created[0] and "TRANSIENT" in created[0]
        assert first.feature_queries == 1 and len(first.query_ids) >= 1
        assert wh.session.table(name).count() == first.table.num_rows == DEMO.customers

    # Another worker (empty local cache, own session): reads the table, no joins.
    warehouse.door.reset_counts()
    with open_warehouse(cfg) as wh:
        with wh.session.query_history() as history:
            second = load_features(wh, cfg, FeatureCache(str(tmp_path / "worker2")))
        assert not any("CREATE" in q.sql_text.upper() for q in history.queries)
    assert not second.cache_hit and second.feature_queries == 0 and second.key == first.key
    assert second.table.equals(first.table)
    pulled = [s for s in sent_sql(warehouse.door) if name.split(".")[-1] in s]
    assert pulled and not any("EVENTS" in s and "JOIN" in s.upper() for s in sent_sql(warehouse.door))

    # Same features as pulling the query itself.
    plain = pull(data_cfg(), tmp_path / "plain")
    # (float sums may differ in the last bits: the engine aggregates in parallel)
    import pandas.testing

    pandas.testing.assert_frame_equal(
        plain.table.read().sort_by("CUSTOMER_ID").to_pandas(),
        second.table.read().sort_by("CUSTOMER_ID").to_pandas(),
        check_exact=False,
    )

    # refresh recomputes and replaces the table.
    refreshed = pull(data_cfg(materialize="table", refresh=True), tmp_path / "worker3")
    assert refreshed.feature_queries == 1 and refreshed.key == first.key


# --------------------------------------------------------------------------- #
# data.snapshot: generated SQL (the emulator cannot run time travel)
# --------------------------------------------------------------------------- #


def test_snapshot_timestamp_normalisation():
    assert snapshot_timestamp("2024-06-01") == "2024-06-01 00:00:00 +00:00"
    assert snapshot_timestamp("2024-06-01T12:30:00Z") == "2024-06-01 12:30:00 +00:00"
    assert snapshot_timestamp("2024-06-01 12:30:00.250+02:00") == "2024-06-01 10:30:00.250000 +00:00"
    assert snapshot_timestamp("2024-06-01T12:30:00-05:30") == "2024-06-01 18:00:00 +00:00"
    with pytest.raises(ConfigError, match="data.snapshot='yesterday' is not a timestamp"):
        snapshot_timestamp("yesterday")
    with pytest.raises(ConfigError, match="in the future"):
        snapshot_timestamp("2999-01-01")


def test_snapshot_sql_reads_every_source_table_at_the_timestamp(env_connection):
    stamp = "2024-06-01 12:00:00 +00:00"
    at = f"AT (TIMESTAMP => CAST('{stamp}' AS TIMESTAMPTZ))"
    cfg = data_cfg()
    with open_warehouse(cfg) as wh:
        frame, _ = build_frame(wh.session, cfg)
        sql = frame_sql(frame)
        travelled = time_travel_sql(sql, stamp)
        # Every reference to a source table, and nothing else, carries the AT clause.
        refs = re.findall(r"\bFROM\s+(\w+)", sql, flags=re.IGNORECASE)
        assert sorted({r.upper() for r in refs} & {"EVENTS", "CUSTOMERS"}) == ["CUSTOMERS", "EVENTS"]
        assert travelled.count(at) == len([r for r in refs if r.upper() in ("EVENTS", "CUSTOMERS")])
        assert re.search(rf"\bEVENTS {re.escape(at)}", travelled)
        assert re.search(rf"\bCUSTOMERS {re.escape(at)}", travelled)

        # The sqlglot round trip keeps the query's meaning: same rows on the warehouse.
        import pandas.testing

        same = wh.session.sql(time_travel_sql(sql, None)).to_arrow().sort_by("CUSTOMER_ID")
        pandas.testing.assert_frame_equal(
            same.to_pandas(), frame.to_arrow().sort_by("CUSTOMER_ID").to_pandas(), check_exact=False
        )

    assert time_travel_sql("with e as (select * from EVENTS) select * from e join DB.S.T t on true", stamp) == (
        f"WITH e AS (SELECT * FROM EVENTS {at}) SELECT * FROM e JOIN DB.S.T {at} AS t ON TRUE"
    )
    assert time_travel_sql("select seq8() from table(generator(rowcount => 3))", stamp).count("AT (") == 0
    with pytest.raises(ConfigError, match="already uses time travel"):
        time_travel_sql(f"select * from EVENTS {at}", stamp)


def test_snapshot_reaches_the_warehouse_and_is_recorded(env_connection, tmp_path):
    # fakesnow has no time travel: the statement reaches it and fails with a clear error.
    with pytest.raises(WarehouseError, match=r"data\.features: .*time travel.*data\.snapshot"):
        pull(data_cfg(snapshot="2024-06-01 12:00:00"), tmp_path)

    # A definition without source tables runs (nothing to rewrite): the snapshot is in the
    # dataset source and the data version, and so in the cache key.
    query = (
        "select seq8() as CUSTOMER_ID, iff(seq8() % 2 = 0, 1, 0) as CHURNED, seq8() * 2 as X "
        "from table(generator(rowcount => 40))"
    )
    at_noon = pull(data_cfg(features=None, query=query, snapshot="2024-06-01T12:00:00Z"), tmp_path)
    assert at_noon.source["snapshot"] == "2024-06-01 12:00:00 +00:00"
    assert at_noon.source["version"] == "snapshot:2024-06-01 12:00:00 +00:00"
    later = pull(data_cfg(features=None, query=query, snapshot="2024-06-02"), tmp_path)
    assert later.key != at_noon.key
    same = pull(data_cfg(features=None, query=query, snapshot="2024-06-01 14:00:00+02:00"), tmp_path)
    assert same.key == at_noon.key and same.cache_hit


def test_snowflake_kwargs_from_env_keep_secrets_out_of_our_config(env_connection):
    from runner.data.snowflake import snowflake_kwargs

    kwargs = snowflake_kwargs(data_cfg(warehouse="WH", role="ANALYST"))
    assert kwargs["password"] == CANARY and kwargs["port"] == int(env_connection["PORT"])
    assert (kwargs["warehouse"], kwargs["role"], kwargs["network_timeout"]) == ("WH", "ANALYST", 10)
    cfg_text = OmegaConf.to_yaml(data_cfg(warehouse="WH"))
    assert CANARY not in cfg_text and "password" not in cfg_text
    assert not os.environ.get("RUNNER_SNOWFLAKE_EMULATOR")

    from runner.data import validate

    validate(data_cfg(materialize="table", snapshot="2024-06-01"))
    with pytest.raises(ConfigError, match="data.materialize must be one of none, table"):
        validate(data_cfg(materialize="view"))
