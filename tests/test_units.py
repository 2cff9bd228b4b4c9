"""Small pure parts: split, cache, identifiers, redaction."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from runner.cache import FeatureCache, cache_key
from runner.errors import CacheError, ConfigError
from runner.features import check_identifier, source_tables
from runner.secrets import redact_url, scrub
from runner.split import split_labels


def test_split_is_stable_and_order_free():
    keys = np.arange(1, 20001)
    a = split_labels(keys, 0.15, 0.15, "s")
    b = split_labels(keys[::-1], 0.15, 0.15, "s")[::-1]
    assert (a == b).all()
    # Fixed values: the same on every machine and run.
    assert list(split_labels([1, 2, 3, 4, 5], 0.15, 0.15, "runner-split-v1")) == list(
        split_labels(np.array([1, 2, 3, 4, 5]), 0.15, 0.15, "runner-split-v1"))
    share = {s: (a == s).mean() for s in ("train", "valid", "test")}
    assert abs(share["valid"] - 0.15) < 0.01 and abs(share["test"] - 0.15) < 0.01
    assert (split_labels(keys, 0.15, 0.15, "other") != a).any()


def test_split_golden_values():
    # Pinned: changing the hash silently reshuffles every user's splits.
    got = split_labels([1, 2, 3, 42, "abc", 7, 8, 9, 10], 0.3, 0.3, "runner-split-v1")
    assert list(got) == ["test", "test", "valid", "train", "train", "valid", "test", "train", "train"]


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


@pytest.mark.parametrize("name", ["EVENTS", "db.schema.t", '"My Table"', "a$b"])
def test_identifiers_accepted(name):
    check_identifier(name, "data.table", qualified=True)


@pytest.mark.parametrize("name", ["X; DROP TABLE Y", "a b", "t--", "1abc", "a.b.c.d", ""])
def test_identifiers_rejected(name):
    with pytest.raises(ConfigError, match="data.table"):
        check_identifier(name, "data.table", qualified=True)


def test_source_tables():
    sql = "with x as (select * from A.B.EVENTS) select * from x join customers c on 1=1"
    assert source_tables(sql) == ["A.B.EVENTS", "CUSTOMERS"]


def test_redaction(monkeypatch):
    assert redact_url("postgresql://u:secret@127.0.0.1:5432/db") == "postgresql://u:***@127.0.0.1:5432/db"
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", "hunter2-canary")
    assert "hunter2" not in scrub("login failed for pw hunter2-canary")
