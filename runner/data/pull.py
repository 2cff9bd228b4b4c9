"""Pull a feature definition from the warehouse once and keep it in the cache.

The cache key covers the SQL Snowpark generates, the connection identity (never
credentials) and the data's version (a snapshot, or the source tables' state).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

from ..errors import CacheError, ConfigError, WarehouseError
from .cache import FeatureCache, cache_key
from .definition import MATERIALIZED_PREFIX, build_frame, check_frame, checked_batches, frame_sql, sql_error
from .featureset import FeatureSet
from .files import file_tables, files_version, local_files
from .offline import config_digest, embedded_digest
from .sample import sample_of, sampled
from .sql import snapshot_timestamp, source_tables, time_travel_sql

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from .entry import Entry
    from .warehouse import Warehouse


def materialized_name(wh: Warehouse, key: str) -> str:
    """Fully qualified name of the warehouse table holding the features of cache key `key`."""
    ident = wh.identity
    quote = lambda part: '"' + part.replace('"', '""') + '"'  # noqa: E731
    return ".".join([quote(ident["database"]), quote(ident["schema"]), MATERIALIZED_PREFIX + key[:16].upper()])


def data_version(wh: Warehouse, data_cfg: DictConfig, sql: str) -> str:
    if wh.known_version:  # the embedded warehouse: its seed and data.files / data.inputs
        return wh.known_version
    inputs = files_version(local_files(data_cfg))  # files a feature function reads itself
    if data_cfg.snapshot:
        # Normalised: '2024-06-01' and '2024-06-01T00:00:00Z' are the same data.
        tables = f"snapshot:{snapshot_timestamp(data_cfg.snapshot)}"
    else:
        names = source_tables(sql)
        tables = _tables_version(wh, names) if names else ""
    return ";".join(filter(None, [tables, inputs])) or "unversioned"


def _tables_version(wh: Warehouse, tables: List[str]) -> str:
    from snowflake.snowpark.exceptions import SnowparkClientException

    ident = wh.identity
    rows = []
    for name in tables:
        parts = name.split(".")
        database = parts[-3] if len(parts) == 3 else ident["database"]
        schema = parts[-2] if len(parts) >= 2 else ident["schema"]
        try:
            rows += wh.session.sql(
                f"select table_catalog, table_schema, table_name, last_altered, row_count "
                f"from {database}.information_schema.tables where table_schema = ? and table_name = ?",
                params=[schema, parts[-1]],
            ).collect()
        except SnowparkClientException as exc:
            raise WarehouseError(
                f"cannot read the version of source table {name} from "
                f"{database}.INFORMATION_SCHEMA.TABLES: {sql_error(exc)} (set "
                "data.snapshot to pin the data instead)"
            ) from None
    # LAST_ALTERED moves on any DML/DDL in Snowflake; ROW_COUNT (null for views) is a second
    # signal, the only one some emulators keep (fakesnow reports LAST_ALTERED as 1970).
    return "altered:" + ";".join(sorted(f"{r[0]}.{r[1]}.{r[2]}={r[3]}/{r[4]}" for r in rows))


def load_features(
    wh: Warehouse, data_cfg: DictConfig, cache: FeatureCache, query_tag: Optional[str] = None
) -> FeatureSet:
    session = wh.session
    if query_tag and data_cfg.query_tag:
        # Before any other statement: the tag links the warehouse's query history to the run.
        wh.set_query_tag(query_tag)
    started = time.perf_counter()
    snapshot = snapshot_timestamp(data_cfg.snapshot) if data_cfg.get("snapshot") else None
    materialize = data_cfg.get("materialize") or "none"
    with session.query_history() as history:
        frame, setting = build_frame(session, data_cfg)
        sql = frame_sql(frame)
        if snapshot:
            frame = session.sql(time_travel_sql(sql, snapshot))
        frame = sampled(frame, data_cfg)  # data.sample, in the query: before the order
        frame = in_key_order(frame, data_cfg)
        sql = frame_sql(frame)
        version = data_version(wh, data_cfg, sql)
        key = cache_key({"sql": sql, "identity": wh.identity, "version": version})
        source: Dict[str, Any] = {**wh.identity, "definition": f"data.{setting}", "query": sql, "version": version}
        if file_tables(data_cfg) or data_cfg.get("inputs"):
            source["files"] = [f.describe() for f in local_files(data_cfg)]
        if snapshot:
            source["snapshot"] = snapshot
        if (sample := sample_of(data_cfg)) is not None:
            source["sample"] = sample.describe()
        if materialize == "table":
            source["materialized"] = materialized_name(wh, key)
        hit = None if data_cfg.refresh else cache.get(key)
        if hit is None:
            with cache.lock(key):
                # Another process may have filled the entry while we waited.
                hit = None if data_cfg.refresh else cache.get(key)
                if hit is None:
                    table, feature_ids = _fill(wh, cache, key, frame, setting, source, data_cfg, history)
    cache.remember(config_digest(data_cfg), key)
    if (digest := embedded_digest(data_cfg)) is not None:
        cache.remember(digest, key)
    query_ids = [q.query_id for q in history.queries]
    if hit is not None:
        table, _meta = hit
        check_frame(table, data_cfg)
        feature_queries = 0
    else:
        feature_queries = len(feature_ids)
    return FeatureSet(
        table=table,
        key=key,
        cache_hit=hit is not None,
        sql=sql,
        source=source,
        path=str(cache.path(key)),
        query_ids=query_ids,
        feature_queries=feature_queries,
        seconds=time.perf_counter() - started,
    )


def in_key_order(frame: Any, data_cfg: DictConfig) -> Any:
    """The frame ordered by data.entity_key (Snowflake's identifier rules: unquoted, any case;
    quoted, exact). Rows come in the order training takes them, so training streams the cache
    entry in batches instead of sorting the whole table in memory (runner/model/prepare.py).
    A one-statement frame is wrapped as SQL text: Snowpark's sort would first describe the
    query in the warehouse to resolve the column (one more round trip)."""
    key = str(data_cfg.entity_key)
    if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+"', key):
        raise ConfigError(
            f"data.entity_key={key!r} is not a column name: an identifier (letters, digits, _ and $) or a "
            "double-quoted name such as '\"Customer Id\"'"
        )
    queries = frame.queries
    if len(queries["queries"]) == 1 and not queries.get("post_actions"):
        return frame.session.sql(f"select * from ({queries['queries'][0]}) order by {key} asc nulls last")
    from snowflake.snowpark.functions import col

    return frame.sort(col(key).asc_nulls_last())


def _fill(
    wh: Warehouse,
    cache: FeatureCache,
    key: str,
    frame: Any,
    setting: str,
    source: Dict[str, Any],
    data_cfg: DictConfig,
    history: Any,
) -> Tuple[Entry, List[str]]:
    """Pull the result into cache entry `key` batch by batch, then read it back from there:
    the whole result is never in memory twice. Returns (table, feature query ids)."""
    feature_ids: List[str] = []
    if source.get("materialized"):
        batches, feature_ids = _pull_materialized(wh, frame, setting, source["materialized"], data_cfg, history)
    else:
        batches = _pull(frame, f"data.{setting}: the feature query failed in the warehouse")
    last = frame.queries["queries"][-1].strip()

    def meta() -> Dict[str, Any]:
        if not source.get("materialized"):  # the query has run once its batches are in
            feature_ids[:] = [q.query_id for q in history.queries if q.sql_text.strip() == last]
        return {"query_ids": feature_ids, "source": source}

    cache.put(key, checked_batches(batches, data_cfg), meta)
    entry = cache.get(key, decode=False)  # just written: its footer and record checked, pages when read
    if entry is None:
        raise CacheError(f"data.cache_dir={cache.setting!r}: the entry just written cannot be read back")
    return entry[0], feature_ids


def _pull(frame: Any, what: str) -> Iterator[Any]:
    """The frame's result as Arrow tables, one per result chunk the connector downloads
    (Snowpark's to_arrow_batches), never the whole result at once; a warehouse error,
    at the query or mid-download, as a WarehouseError starting with `what`."""
    from snowflake.connector.errors import Error as ConnectorError
    from snowflake.snowpark.exceptions import SnowparkClientException

    try:
        yield from frame.to_arrow_batches()
    except (SnowparkClientException, ConnectorError) as exc:
        raise WarehouseError(f"{what}: {sql_error(exc)}{_time_travel_hint(exc)}") from None


def _time_travel_hint(exc: BaseException) -> str:
    text = str(exc).lower()
    if "time travel" in text:
        return (
            " (data.snapshot: time travel needs the timestamp within each source table's "
            "DATA_RETENTION_TIME_IN_DAYS and after its creation)"
        )
    return ""


def _pull_materialized(
    wh: Warehouse, frame: Any, setting: str, name: str, data_cfg: DictConfig, history: Any
) -> Tuple[Iterator[Any], List[str]]:
    """Write the feature query once to table `name` (CTAS), then read that table.

    Returns (the table's Arrow batches, query ids of the feature computation: empty when the table
    already existed, i.e. another worker or an earlier run computed the joins).
    """
    from snowflake.snowpark.exceptions import SnowparkClientException

    session = wh.session
    refresh = bool(data_cfg.refresh)
    exists = not refresh and _table_exists(wh, name)
    feature_ids: List[str] = []
    if not exists:
        seen = len(history.queries)
        queries = frame.queries["queries"]
        try:
            if len(queries) == 1:
                # Plain CTAS (no column list): IF NOT EXISTS lets racing workers create it once.
                create = "CREATE OR REPLACE TRANSIENT TABLE" if refresh else "CREATE TRANSIENT TABLE IF NOT EXISTS"
                session.sql(f"{create} {name} COMMENT = '{_MATERIALIZED_COMMENT}' AS {queries[0]}").collect()
            else:  # temp objects first: let Snowpark run them
                frame.write.save_as_table(
                    name,
                    mode="overwrite" if refresh else "ignore",
                    table_type="transient",
                    comment=_MATERIALIZED_COMMENT,
                )
        except SnowparkClientException as exc:
            raise WarehouseError(
                f"data.materialize=table: cannot create {name} in the warehouse: "
                f"{sql_error(exc)}{_time_travel_hint(exc)} (the role needs CREATE TABLE "
                "on the schema; or set data.materialize=none)"
            ) from None
        feature_ids = [q.query_id for q in history.queries[seen:] if "CREATE" in q.sql_text.upper()]
    ordered = in_key_order(session.table(name), data_cfg)  # a table keeps no order of its own
    return _pull(ordered, f"data.materialize=table: cannot read {name}"), feature_ids


_MATERIALIZED_COMMENT = "runner feature table (data.materialize=table), named by its cache key; safe to drop"


def _table_exists(wh: Warehouse, name: str) -> bool:
    database, schema, table = (part.strip('"').replace('""', '"') for part in _split_name(name))
    rows = wh.session.sql(
        f'select count(*) from "{database}".information_schema.tables where table_schema = ? and table_name = ?',
        params=[schema, table],
    ).collect()
    return bool(rows and rows[0][0])


def _split_name(name: str) -> List[str]:
    return re.findall(r'"(?:[^"]|"")*"|[^.]+', name)
