"""Large results stream: the embedded warehouse answers them in chunks
as Snowflake does (runner/embedded/server.py), the real connector downloads the chunks,
Snowpark hands them out batch by batch, and the pull writes them into the feature cache as
they come. Memory itself is measured by benchmarks/memory.py, not here."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from runner.config import DataConfig
from runner.data import FeatureCache, Warehouse, load_features
from runner.errors import DataError
from tests.support.servers import FakesnowProcess

pytestmark = pytest.mark.integration

ROWS = 60_000
FEATURES = 8
WIDE = "DEMO.PUBLIC.WIDE"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The emulator with DEMO.PUBLIC.WIDE: ROWS rows x FEATURES doubles (~4 MB), ID and 0/1 Y."""
    import snowflake.connector

    server = FakesnowProcess(tmp_path_factory.mktemp("fakesnow")).start()
    columns = ", ".join(f"uniform(0::float, 1::float, random({i})) as F{i}" for i in range(1, FEATURES + 1))
    try:
        conn = snowflake.connector.connect(**server.connect_kwargs())
        try:
            conn.cursor().execute("create database if not exists DEMO")
            conn.cursor().execute("create schema if not exists DEMO.PUBLIC")
            conn.cursor().execute(
                f"create or replace table {WIDE} as select seq8() + 1 as ID, {columns}, "
                f"uniform(0, 1, random(99)) as Y from table(generator(rowcount => {ROWS}))"
            )
        finally:
            conn.close()
        yield server
    finally:
        server.stop()


@pytest.fixture
def connection(server):
    import snowflake.connector

    conn = snowflake.connector.connect(**server.connect_kwargs(), database="DEMO", schema="PUBLIC")
    yield conn
    conn.close()


def test_a_large_result_comes_as_chunks_the_connector_downloads(connection):
    cur = connection.cursor()
    cur.execute(f"select * from {WIDE} order by ID")
    batches = cur.get_result_batches()
    remote = [b for b in batches if b._remote_chunk_info is not None]
    # First rows inline, the rest as chunk URLs on the emulator, growing as Snowflake's do.
    assert batches[0]._remote_chunk_info is None and remote == batches[1:], batches
    assert len(remote) >= 3, [b.rowcount for b in batches]
    assert all(b._remote_chunk_info.url.startswith("http://127.0.0.1:") for b in remote)
    assert remote[1].rowcount > remote[0].rowcount
    assert sum(b.rowcount for b in batches) == ROWS
    table = cur.fetch_arrow_all()
    assert table.num_rows == ROWS
    assert table.column("ID").to_pylist() == list(range(1, ROWS + 1))


def test_a_small_result_stays_inline(connection):
    cur = connection.cursor()
    cur.execute(f"select ID, F1 from {WIDE} where ID <= 100")
    batches = cur.get_result_batches()
    assert len(batches) == 1 and batches[0]._remote_chunk_info is None
    assert cur.fetch_arrow_all().num_rows == 100


def _session(server):
    return server.session(
        database="DEMO", schema="PUBLIC", session_parameters={"nop_regexes": [r"^select system\$cancel_all_queries.*"]}
    )


def test_snowpark_hands_the_result_out_batch_by_batch(server):
    with _session(server) as session:
        tables = list(session.table(WIDE).to_arrow_batches())
    assert len(tables) >= 4, [t.num_rows for t in tables]
    assert sum(t.num_rows for t in tables) == ROWS
    assert max(t.num_rows for t in tables) < ROWS / 2


def _data_cfg(tmp_path, **overrides):
    cfg = OmegaConf.merge(
        OmegaConf.structured(DataConfig),
        {"backend": "snowflake", "table": WIDE, "entity_key": "ID", "label": "Y", "cache_dir": str(tmp_path)},
        overrides,
    )
    return cfg


def test_the_pull_streams_the_chunks_into_one_cache_entry(server, tmp_path):
    import pyarrow.parquet as pq

    with _session(server) as session:
        wh = Warehouse(session, "fakesnow", "DEMO", "PUBLIC", known_version="fixed")
        cache = FeatureCache(str(tmp_path))
        features = load_features(wh, _data_cfg(tmp_path), cache)
        again = load_features(wh, _data_cfg(tmp_path), cache)
    assert not features.cache_hit and again.cache_hit
    assert features.table.num_rows == ROWS and features.table.equals(again.table)
    assert sorted(features.table.column("ID").to_pylist()) == list(range(1, ROWS + 1))
    # One entry, its row groups written as the batches came (not one per chunk).
    entry = pq.ParquetFile(features.path)
    assert entry.metadata.num_rows == ROWS and entry.metadata.num_row_groups == 1
    _, meta = cache.get(features.key)
    # The feature query's id is known only once it ran: recorded when the entry closed.
    assert meta["query_ids"] and set(meta["query_ids"]) <= set(features.query_ids)
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_result_without_the_label_is_refused_before_anything_is_stored(server, tmp_path):
    with _session(server) as session:
        wh = Warehouse(session, "fakesnow", "DEMO", "PUBLIC", known_version="fixed")
        with pytest.raises(DataError, match="data.label='NOPE' is not a column"):
            load_features(wh, _data_cfg(tmp_path, label="NOPE"), FeatureCache(str(tmp_path)))
        with pytest.raises(DataError, match="the feature result is empty"):
            load_features(
                wh,
                _data_cfg(tmp_path, table=None, query=f"select * from {WIDE} where ID < 0"),
                FeatureCache(str(tmp_path)),
            )
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob("*.tmp"))
