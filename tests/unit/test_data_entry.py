"""runner/data/entry.py: an entry written batch by batch reads back whole and checked."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.data import FeatureCache, cache_key
from runner.data.entry import Damaged, read_entry, write_entry
from runner.errors import DataError

pytestmark = pytest.mark.unit


def batches(sizes, seed=0):
    rng = np.random.default_rng(seed)
    start = 0
    for n in sizes:
        yield pa.record_batch({"ID": np.arange(start, start + n), "F1": rng.standard_normal(n), "C": ["x"] * n})
        start += n


def test_batches_of_any_size_make_one_entry_with_the_metadata_of_the_end(tmp_path):
    asked = []

    def meta():
        asked.append(True)  # called once, after the last batch: e.g. the query id, known by then
        return {"query_ids": ["q"]}

    path = tmp_path / "e.parquet"
    with open(path, "wb") as fh:
        rows = write_entry(fh, batches([1, 500, 70_000, 3]), meta)
    assert rows == 70_504 and asked == [True]
    table, got = read_entry(path, path.stat().st_size)
    assert got == {"query_ids": ["q"]}
    assert table.column("ID").to_pylist() == list(range(70_504))
    assert table.schema.metadata is None
    info = pq.ParquetFile(path).metadata
    # Small batches are gathered into row groups, not written one group per chunk.
    assert info.num_row_groups == 1
    # Text columns are dictionary-encoded, floats plain (cheaper to write, smaller).
    encodings = {info.row_group(0).column(i).path_in_schema: info.row_group(0).column(i).encodings for i in range(3)}
    assert any("DICT" in e for e in encodings["C"]) and not any("DICT" in e for e in encodings["F1"])


def test_a_later_batch_typed_otherwise_is_cast_or_refused(tmp_path):
    first = pa.table({"ID": [1, 2], "S": ["a", None]})
    nulls = pa.table({"ID": [3], "S": pa.array([None], pa.null())})  # a chunk of nulls only
    with open(tmp_path / "ok.parquet", "wb") as fh:
        write_entry(fh, [first, nulls], {})
    table, _ = read_entry(tmp_path / "ok.parquet", (tmp_path / "ok.parquet").stat().st_size)
    assert table.column("S").to_pylist() == ["a", None, None] and table.schema.field("S").type == pa.string()
    with pytest.raises(DataError, match="disagree on a column's type"):
        write_entry(io.BytesIO(), [first, pa.table({"ID": [3], "S": pa.array([[1]])})], {})
    with pytest.raises(DataError, match="disagree on columns"):
        write_entry(io.BytesIO(), [first, pa.table({"ID": [3]})], {})
    with pytest.raises(DataError, match="no columns"):
        write_entry(io.BytesIO(), [], {})


def test_an_entry_whose_record_does_not_match_is_damaged(tmp_path):
    path = tmp_path / "e.parquet"
    table = pa.table({"ID": [1, 2, 3]})
    # Written by hand with a wrong record: the row count the writer claims is checked.
    pq.write_table(table.replace_schema_metadata({b"runner": b"{}", b"runner.check": b'{"rows": 4, "crc32": 0}'}), path)
    with pytest.raises(Damaged, match="3 rows read, the entry recorded 4"):
        read_entry(path, path.stat().st_size)


def test_a_failing_stream_leaves_no_entry_and_no_temp_file(tmp_path):
    cache = FeatureCache(str(tmp_path))
    key = cache_key({"sql": "stream"})

    def cut():
        yield from batches([1000, 1000])
        raise ConnectionError("chunk download failed")

    with pytest.raises(ConnectionError):
        cache.put(key, cut(), {})
    assert cache.get(key) is None
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".tmp", ".parquet")]
    cache.put(key, batches([1000, 1000]), {"n": 1})
    table, meta = cache.get(key)
    assert table.num_rows == 2000 and meta == {"n": 1}
