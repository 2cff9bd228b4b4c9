"""runner/data/cache.py: entries whole or absent, a clear error for an unusable folder."""

from __future__ import annotations

import pyarrow as pa
import pytest

from runner.data import FeatureCache, cache_key
from runner.errors import CacheError


def test_cache_roundtrip_and_atomicity(tmp_path):
    cache = FeatureCache(str(tmp_path))
    table = pa.table({"a": [1, 2, 3]})
    key = cache_key({"sql": "select 1"})
    assert cache.get(key) is None
    cache.put(key, table, {"query_ids": ["q1"]})
    got, meta = cache.get(key)
    assert got.equals(table) and meta == {"query_ids": ["q1"]}

    class Boom:
        schema = table.schema

        def replace_schema_metadata(self, meta):
            raise KeyboardInterrupt  # interrupted mid-write

    key2 = cache_key({"sql": "select 2"})
    with pytest.raises(KeyboardInterrupt):
        cache.put(key2, Boom(), {})
    assert cache.get(key2) is None
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_cache_dir_not_writable(tmp_path):
    blocked = tmp_path / "f"
    blocked.write_text("x")
    with pytest.raises(CacheError, match="data.cache_dir"):
        FeatureCache(str(blocked / "sub"))
