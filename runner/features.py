"""The feature definition: build it in the warehouse, pull it once, cache it.

A definition is exactly one of data.table, data.query or data.features (a
callable named by _target_, called as fn(session, cfg, **kwargs) and returning
a Snowpark DataFrame). The cache key covers the SQL Snowpark generates, the
connection identity (never credentials) and the data's version.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .cache import FeatureCache, cache_key
from .errors import ConfigError, DataError, WarehouseError

log = logging.getLogger(__name__)

_IDENT = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_QUALIFIED = re.compile(rf"^{_IDENT}(?:\.{_IDENT}){{0,2}}$")
_COLUMN = re.compile(rf"^{_IDENT}$")
MATERIALIZE = ("none", "table")
MATERIALIZED_PREFIX = "RUNNER_FEATURES_"


@dataclass
class FeatureSet:
    table: Any  # pyarrow.Table
    key: str
    cache_hit: bool
    sql: str
    source: Dict[str, Any]
    path: str
    query_ids: List[str] = field(default_factory=list)
    feature_queries: int = 0
    seconds: float = 0.0
    # Served from the cache index because the warehouse was unreachable (version not checked).
    offline: bool = False
    # False when an embedded-warehouse config was served from the cache without starting it.
    warehouse_started: bool = True

    def take_table(self):
        """The pulled table, handed over: the FeatureSet keeps no reference, so the split
        can be built from it without another copy of the rows staying in memory."""
        table, self.table = self.table, None
        return table


# Data settings that do not change which rows a feature definition yields.
_NOT_CONTENT = ("refresh", "cache_dir", "network_timeout", "query_tag", "split")


def config_digest(data_cfg) -> str:
    """Digest of the data config (what defines the features; no credentials are in it)."""
    import hashlib
    import json

    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(data_cfg, resolve=True) if OmegaConf.is_config(data_cfg) else dict(data_cfg)
    spec = {k: v for k, v in spec.items() if k not in _NOT_CONTENT}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


def offline_features(data_cfg, cache: FeatureCache, reason: str) -> Optional[FeatureSet]:
    """The last cached features of this data config, for a run whose warehouse is unreachable."""
    if data_cfg.get("refresh"):
        return None
    found = cache.last(config_digest(data_cfg))
    if found is None:
        return None
    key, when = found
    hit = cache.get(key)
    if hit is None:
        return None
    table, meta = hit
    _check_frame(table, data_cfg)
    source = dict(meta.get("source") or {})
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "?"
    print(f"runner: warehouse unreachable ({reason[:200]}): proceeding from the feature cache, key "
          f"{key[:16]} pulled {stamp} (offline: data version not checked; data.refresh=true forces a pull)",
          flush=True)
    return FeatureSet(table=table, key=key, cache_hit=True, sql=source.get("query", ""), source=source,
                      path=str(cache.path(key)), offline=True)


def embedded_digest(data_cfg) -> Optional[str]:
    """For the embedded warehouse: a digest of everything that decides the features.

    Its data is made by runner's seed script from the config, so the config, runner's
    version and the source of the code that seeds and builds the features decide the
    result: a warm run can skip starting the warehouse. None for other backends.
    """
    import hashlib
    import importlib.util

    from . import __version__

    if data_cfg.get("backend") != "embedded":
        return None
    modules = ["runner.demo", "runner.features"]
    target = (data_cfg.get("features") or {}).get("_target_")
    if target:
        modules.append(str(target).rsplit(".", 1)[0])
    h = hashlib.sha256(f"{config_digest(data_cfg)}|{__version__}".encode())
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
            h.update(Path(spec.origin).read_bytes() if spec and spec.origin else name.encode())
        except (ImportError, ValueError, OSError):
            return None
    return "embedded-" + h.hexdigest()[:32]


def embedded_features(data_cfg, cache: FeatureCache) -> Optional[FeatureSet]:
    """The cached features of an embedded-warehouse config, without starting the warehouse."""
    if data_cfg.get("refresh"):
        return None
    digest = embedded_digest(data_cfg)
    found = cache.last(digest) if digest else None
    hit = cache.get(found[0]) if found else None
    if hit is None:
        return None
    table, meta = hit
    _check_frame(table, data_cfg)
    source = dict(meta.get("source") or {})
    return FeatureSet(table=table, key=found[0], cache_hit=True, sql=source.get("query", ""), source=source,
                      path=str(cache.path(found[0])), warehouse_started=False)


def check_identifier(value: str, setting: str, qualified: bool = False) -> None:
    pattern = _QUALIFIED if qualified else _COLUMN
    if not isinstance(value, str) or not pattern.match(value):
        what = "a table name ([db.][schema.]name)" if qualified else "a column name"
        raise ConfigError(f"{setting}={value!r} is not {what}: use a plain Snowflake identifier "
                          "(letters, digits, _ and $) or a double-quoted one")


def validate(data_cfg) -> None:
    given = [name for name in ("table", "query", "features") if data_cfg.get(name)]
    if len(given) != 1:
        raise ConfigError("set exactly one feature definition: data.table, data.query or "
                          f"data.features (got {', '.join('data.' + g for g in given) or 'none'})")
    if data_cfg.table:
        check_identifier(data_cfg.table, "data.table", qualified=True)
    if data_cfg.features and "_target_" not in data_cfg.features:
        raise ConfigError("data.features needs a _target_: the dotted path of a callable "
                          "(session, cfg) -> snowpark DataFrame")
    check_identifier(data_cfg.entity_key, "data.entity_key")
    check_identifier(data_cfg.label, "data.label")
    for i, col in enumerate(data_cfg.drop):
        check_identifier(col, f"data.drop[{i}]")
    if data_cfg.get("snapshot"):
        snapshot_timestamp(data_cfg.snapshot)
    materialize = data_cfg.get("materialize") or "none"
    if materialize not in MATERIALIZE:
        raise ConfigError(f"data.materialize must be one of {', '.join(MATERIALIZE)}, got {materialize!r}")
    if data_cfg.get("backend") == "snowflake":
        # Which connection (connections.toml entry or SNOWFLAKE_* env): no network, so a
        # wrong data.connection_name fails before any run is created.
        from .warehouse import snowflake_kwargs

        snowflake_kwargs(data_cfg)
    valid, test = data_cfg.split.valid, data_cfg.split.test
    if not (0 < valid < 1 and 0 < test < 1 and valid + test < 1):
        raise ConfigError("data.split.valid and data.split.test must each be in (0, 1) and sum "
                          f"below 1, got valid={valid}, test={test}")


def build_frame(session, data_cfg):
    """The Snowpark DataFrame of the feature definition (nothing is pulled yet)."""
    from snowflake.snowpark.exceptions import SnowparkClientException

    setting = next(n for n in ("table", "query", "features") if data_cfg.get(n))
    try:
        if setting == "table":
            return session.table(data_cfg.table), setting
        if setting == "query":
            return session.sql(data_cfg.query), setting
        from hydra.utils import call
        from omegaconf import OmegaConf

        spec = OmegaConf.to_container(data_cfg.features, resolve=True)
        try:
            frame = call(spec, session, data_cfg)
        except SnowparkClientException:
            raise
        except Exception as exc:
            if "Error locating target" in str(exc) or "Error in call to target" in str(exc):
                raise ConfigError(f"data.features._target_={spec['_target_']!r}: "
                                  f"{str(exc).splitlines()[0]}") from None
            raise
        if not hasattr(frame, "queries"):
            raise ConfigError(f"data.features._target_={spec['_target_']!r} returned "
                              f"{type(frame).__name__}, not a Snowpark DataFrame")
        return frame, setting
    except SnowparkClientException as exc:
        raise WarehouseError(f"data.{setting}: the warehouse rejected the feature definition: "
                             f"{_sql_error(exc)}") from None


def _sql_error(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def frame_sql(frame) -> str:
    queries = frame.queries
    return ";\n".join(queries["queries"] + queries.get("post_actions", []))


def source_tables(sql: str) -> List[str]:
    """Tables a query reads, found with sqlglot's Snowflake parser."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse(sql, read="snowflake")
    except sqlglot.errors.ParseError:
        return []
    names = set()
    for stmt in tree:
        ctes = {c.alias_or_name.upper() for c in stmt.find_all(exp.CTE)}
        for t in stmt.find_all(exp.Table):
            if t.name and t.name.upper() not in ctes:
                names.add(".".join(p for p in (t.catalog, t.db, t.name) if p).upper())
    return sorted(names)


def snapshot_timestamp(value) -> str:
    """data.snapshot as a UTC timestamp literal ('YYYY-MM-DD HH:MM:SS[.ffffff] +00:00').

    Accepts ISO 8601 dates and times; a value without an offset is taken as UTC.
    """
    import datetime as dt

    text = str(value).strip()
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"data.snapshot={text!r} is not a timestamp: use ISO 8601, e.g. "
                          "data.snapshot='2024-06-01 12:00:00' (UTC) or '2024-06-01T12:00:00+02:00'") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    if when > dt.datetime.now(dt.timezone.utc):
        raise ConfigError(f"data.snapshot={text!r} is in the future: time travel reads past states only")
    # In UTC, so one instant written two ways is one snapshot (one cache key).
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ") + " +00:00"


def time_travel_sql(sql: str, snapshot: Optional[str]) -> str:
    """The query with every source table read AT(TIMESTAMP => snapshot) (Snowflake time travel).

    CTE references and table functions are left alone. With snapshot=None the query
    only makes the round trip through sqlglot (used to check that round trip).
    """
    import sqlglot
    from sqlglot import exp

    try:
        statements = [t for t in sqlglot.parse(sql, read="snowflake") if t is not None]
    except sqlglot.errors.ParseError as exc:
        raise ConfigError(f"data.snapshot: the feature SQL cannot be parsed to add time travel: "
                          f"{str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise ConfigError("data.snapshot needs a feature definition that compiles to one SQL query "
                          f"(this one has {len(statements)} statements)")
    tree = statements[0]
    ctes = {c.alias_or_name.upper() for c in tree.find_all(exp.CTE)}
    if snapshot is not None:
        for table in tree.find_all(exp.Table):
            if not isinstance(table.this, exp.Identifier) or table.name.upper() in ctes:
                continue
            if table.args.get("when") is not None:
                raise ConfigError(f"data.snapshot: the feature SQL already uses time travel on {table.name}; "
                                  "remove AT/BEFORE from it or unset data.snapshot")
            table.set("when", exp.HistoricalData(
                this="AT", kind="TIMESTAMP",
                expression=exp.cast(exp.Literal.string(snapshot), exp.DataType.build("TIMESTAMP_TZ", dialect="snowflake"))))
    return tree.sql(dialect="snowflake")


def materialized_name(wh, key: str) -> str:
    """Fully qualified name of the warehouse table holding the features of cache key `key`."""
    ident = wh.identity
    quote = lambda part: '"' + part.replace('"', '""') + '"'  # noqa: E731
    return ".".join([quote(ident["database"]), quote(ident["schema"]),
                     MATERIALIZED_PREFIX + key[:16].upper()])


def data_version(wh, data_cfg, sql: str) -> str:
    if data_cfg.snapshot:
        # Normalised: '2024-06-01' and '2024-06-01T00:00:00Z' are the same data.
        return f"snapshot:{snapshot_timestamp(data_cfg.snapshot)}"
    if wh.known_version:
        return wh.known_version
    tables = source_tables(sql)
    if not tables:
        return "unversioned"
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
                params=[schema, parts[-1]]).collect()
        except SnowparkClientException as exc:
            raise WarehouseError(f"cannot read the version of source table {name} from "
                                 f"{database}.INFORMATION_SCHEMA.TABLES: {_sql_error(exc)} (set "
                                 "data.snapshot to pin the data instead)") from None
    # LAST_ALTERED moves on any DML/DDL in Snowflake; ROW_COUNT (null for views) is a second
    # signal, the only one some emulators keep (fakesnow reports LAST_ALTERED as 1970).
    return "altered:" + ";".join(sorted(f"{r[0]}.{r[1]}.{r[2]}={r[3]}/{r[4]}" for r in rows))


def load_features(wh, data_cfg, cache: FeatureCache, query_tag: Optional[str] = None) -> FeatureSet:
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
            sql = time_travel_sql(sql, snapshot)
            frame = session.sql(sql)
        version = data_version(wh, data_cfg, sql)
        key = cache_key({"sql": sql, "identity": wh.identity, "version": version})
        source = {**wh.identity, "definition": f"data.{setting}", "query": sql, "version": version}
        if snapshot:
            source["snapshot"] = snapshot
        if materialize == "table":
            source["materialized"] = materialized_name(wh, key)
        hit = None if data_cfg.refresh else cache.get(key)
        if hit is None:
            with cache.lock(key):
                # Another process may have filled the entry while we waited.
                hit = None if data_cfg.refresh else cache.get(key)
                if hit is None:
                    if materialize == "table":
                        table, feature_ids = _pull_materialized(wh, frame, setting, source["materialized"],
                                                                data_cfg.refresh, history)
                    else:
                        table = _pull(frame, setting)
                        feature_ids = [q.query_id for q in history.queries
                                       if q.sql_text.strip() == frame.queries["queries"][-1].strip()]
                    _check_frame(table, data_cfg)
                    cache.put(key, table, {"query_ids": feature_ids, "source": source})
    cache.remember(config_digest(data_cfg), key)
    if (digest := embedded_digest(data_cfg)) is not None:
        cache.remember(digest, key)
    query_ids = [q.query_id for q in history.queries]
    if hit is not None:
        table, _meta = hit
        _check_frame(table, data_cfg)
        feature_queries = 0
    else:
        feature_queries = len(feature_ids)
    return FeatureSet(table=table, key=key, cache_hit=hit is not None, sql=sql, source=source,
                      path=str(cache.path(key)), query_ids=query_ids, feature_queries=feature_queries,
                      seconds=time.perf_counter() - started)


def _pull(frame, setting: str):
    from snowflake.snowpark.exceptions import SnowparkClientException

    try:
        return frame.to_arrow()
    except SnowparkClientException as exc:
        raise WarehouseError(f"data.{setting}: the feature query failed in the warehouse: "
                             f"{_sql_error(exc)}{_time_travel_hint(exc)}") from None


def _time_travel_hint(exc) -> str:
    text = str(exc).lower()
    if "time travel" in text:
        return (" (data.snapshot: time travel needs the timestamp within each source table's "
                "DATA_RETENTION_TIME_IN_DAYS and after its creation)")
    return ""


def _pull_materialized(wh, frame, setting: str, name: str, refresh: bool, history):
    """Write the feature query once to table `name` (CTAS), then read that table.

    Returns (arrow table, query ids of the feature computation: empty when the table
    already existed, i.e. another worker or an earlier run computed the joins).
    """
    from snowflake.snowpark.exceptions import SnowparkClientException

    session = wh.session
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
                frame.write.save_as_table(name, mode="overwrite" if refresh else "ignore", table_type="transient",
                                          comment=_MATERIALIZED_COMMENT)
        except SnowparkClientException as exc:
            raise WarehouseError(f"data.materialize=table: cannot create {name} in the warehouse: "
                                 f"{_sql_error(exc)}{_time_travel_hint(exc)} (the role needs CREATE TABLE "
                                 "on the schema; or set data.materialize=none)") from None
        feature_ids = [q.query_id for q in history.queries[seen:] if "CREATE" in q.sql_text.upper()]
    try:
        return session.table(name).to_arrow(), feature_ids
    except SnowparkClientException as exc:
        raise WarehouseError(f"data.materialize=table: cannot read {name}: {_sql_error(exc)}") from None


_MATERIALIZED_COMMENT = "runner feature table (data.materialize=table), named by its cache key; safe to drop"


def _table_exists(wh, name: str) -> bool:
    database, schema, table = (part.strip('"').replace('""', '"') for part in _split_name(name))
    rows = wh.session.sql(
        f'select count(*) from "{database}".information_schema.tables where table_schema = ? and table_name = ?',
        params=[schema, table]).collect()
    return bool(rows and rows[0][0])


def _split_name(name: str) -> List[str]:
    return re.findall(r'"(?:[^"]|"")*"|[^.]+', name)


def find_column(names: List[str], wanted: str, setting: str) -> str:
    if wanted in names:
        return wanted
    folded = [n for n in names if n.upper() == wanted.strip('"').upper()]
    if len(folded) == 1:
        return folded[0]
    raise DataError(f"{setting}={wanted!r} is not a column of the feature result "
                    f"(columns: {', '.join(names)})")


def _check_frame(table, data_cfg) -> None:
    if table.num_rows == 0:
        raise DataError("the feature result is empty: check data.table / data.query / data.features "
                        "and the filters they apply")
    find_column(table.column_names, data_cfg.entity_key, "data.entity_key")
    find_column(table.column_names, data_cfg.label, "data.label")
