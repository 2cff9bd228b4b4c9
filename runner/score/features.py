"""The rows to score: the data config's feature definition computed in the warehouse, with
the code training uses (runner/data/definition.py build_frame), without the label.

Nothing is read from or written to the feature cache: scoring reads the warehouse as it is
now. The key is the cache key training computes for the same definition and data (the SQL
with the label, the connection identity, the data version), so a scoring run's dataset digest
equals the training run's when nothing changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..data import build_frame, cache_key, find_column, frame_sql, snapshot_timestamp, time_travel_sql
from ..data.definition import sql_error
from ..data.pull import data_version
from ..errors import DataError, WarehouseError


@dataclass
class ScoringFeatures:
    table: Any  # pyarrow.Table: the definition's rows, the label left out
    key_column: str  # data.entity_key as the warehouse names it
    key: str  # the feature cache key of the definition (label included, as training has it)
    sql: str  # the definition's SQL as training runs it
    source: Dict[str, Any]  # account/database/schema/definition/query/version (never credentials)
    label_dropped: Optional[str] = None  # the label column the definition had, left out
    query_ids: List[str] = field(default_factory=list)
    feature_queries: int = 0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)


def scoring_features(wh, data_cfg, label: Optional[str]) -> ScoringFeatures:
    """The definition's rows as the warehouse returns them (one per entity), label dropped in
    the warehouse when the definition has it."""
    session = wh.session
    started = time.perf_counter()
    snapshot = snapshot_timestamp(data_cfg.snapshot) if data_cfg.get("snapshot") else None
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
        frame, dropped = _without_label(frame, setting, label)
        last = frame.queries["queries"][-1].strip()
        table = _pull(frame, setting, label)
    query_ids = [q.query_id for q in history.queries if q.query_id]
    feature_ids = [q.query_id for q in history.queries if q.sql_text.strip() == last]
    key_column = find_column(table.column_names, data_cfg.entity_key, "data.entity_key")
    check_entities(table, key_column, data_cfg.entity_key, setting)
    return ScoringFeatures(
        table=table,
        key_column=key_column,
        key=key,
        sql=sql,
        source=source,
        label_dropped=dropped,
        query_ids=query_ids,
        feature_queries=len(feature_ids),
        seconds=time.perf_counter() - started,
    )


def _without_label(frame, setting: str, label: Optional[str]):
    """The frame without the label column (if it has one), and that column's name."""
    from snowflake.snowpark.exceptions import SnowparkClientException

    if not label:
        return frame, None
    try:
        columns = frame.columns  # the warehouse describes the definition: no rows yet
    except SnowparkClientException as exc:
        raise _definition_failed(exc, setting, label) from None
    wanted = label.strip('"')
    exact = [c for c in columns if c.strip('"') == wanted]
    folded = [c for c in columns if c.strip('"').upper() == wanted.upper()]
    found = exact or (folded if len(folded) == 1 else [])
    if not found:
        return frame, None
    return frame.drop(found[0]), found[0].strip('"')


def _pull(frame, setting: str, label: Optional[str]):
    from snowflake.snowpark.exceptions import SnowparkClientException

    try:
        return frame.to_arrow()
    except SnowparkClientException as exc:
        raise _definition_failed(exc, setting, label) from None


def _definition_failed(exc, setting: str, label: Optional[str]) -> WarehouseError:
    text = sql_error(exc)
    hint = ""
    if label and label.strip('"').upper() in text.upper():
        hint = (
            f" (the definition needs the label column data.label={label!r}, which the warehouse does not have "
            "for these rows: scoring needs a feature definition that produces its rows without the label, "
            "e.g. a data.table or data.query of the features alone)"
        )
    return WarehouseError(f"data.{setting}: the feature query failed in the warehouse: {text}{hint}")


def check_entities(table, key_column: str, setting_value: str, setting: str) -> None:
    """One row per entity, every row with a key: what a predictions table keyed by entity needs."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        raise DataError(
            f"the feature definition (data.{setting}) returned no rows to score: check its filters "
            "(a definition that keeps only rows with a label yields none for entities without one)"
        )
    keys = table.column(key_column)
    if keys.null_count:
        raise DataError(
            f"data.entity_key={setting_value!r} is null in {keys.null_count} rows of the feature result: "
            "every scored row needs its entity key"
        )
    distinct = len(pc.unique(keys))
    if distinct != table.num_rows:
        raise DataError(
            f"data.entity_key={setting_value!r} is not unique in the feature result ({table.num_rows} rows, "
            f"{distinct} entities): the definition must give one row per entity"
        )
