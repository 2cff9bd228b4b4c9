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
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

from ..data import build_frame, cache_key, frame_sql, snapshot_timestamp, time_travel_sql
from ..data.definition import sql_error
from ..data.pull import data_version, in_key_order
from ..errors import DataError, WarehouseError

if TYPE_CHECKING:
    import pyarrow as pa
    from omegaconf import DictConfig

    from ..data.warehouse import Warehouse


@dataclass
class ScoringFeatures:
    key: str  # the feature cache key of the definition (label included, as training has it)
    sql: str  # the definition's SQL as training runs it
    source: Dict[str, Any]  # account/database/schema/definition/query/version (never credentials)
    setting: str = "features"  # which of data.features / data.table / data.query defines the rows
    label_dropped: Optional[str] = None  # the label column the definition had, left out
    # The definition's rows (label left out) as Arrow tables, one per result chunk the
    # connector downloads: read once. The fields below are complete once it is exhausted.
    batches: Iterator[Any] = iter(())
    query_ids: List[str] = field(default_factory=list)
    feature_queries: int = 0
    seconds: float = 0.0  # in the warehouse and the download, not in scoring


def scoring_features(wh: Warehouse, data_cfg: DictConfig, label: Optional[str]) -> ScoringFeatures:
    """The definition, label dropped in the warehouse when it has it; its rows stream in as
    `batches` is read (the query runs at the first batch)."""
    session = wh.session
    started = time.perf_counter()
    snapshot = snapshot_timestamp(data_cfg.snapshot) if data_cfg.get("snapshot") else None
    with session.query_history() as history:
        frame, setting = build_frame(session, data_cfg)
        sql = frame_sql(frame)
        if snapshot:
            sql = time_travel_sql(sql, snapshot)
            frame = session.sql(sql)
        # Training's SQL (in key order: runner/data/pull.py) is what the key covers; the rows
        # are scored in the order they come. A data.sample is training's, not scoring's.
        sql = frame_sql(in_key_order(frame, data_cfg))
        version = data_version(wh, data_cfg, sql)
        key = cache_key({"sql": sql, "identity": wh.identity, "version": version})
        source = {**wh.identity, "definition": f"data.{setting}", "query": sql, "version": version}
        if snapshot:
            source["snapshot"] = snapshot
        frame, dropped = _without_label(frame, setting, label)
    features = ScoringFeatures(key=key, sql=sql, source=source, setting=setting, label_dropped=dropped)
    features.query_ids = [q.query_id for q in history.queries if q.query_id]
    features.seconds = time.perf_counter() - started
    features.batches = _pull(session, frame, setting, label, features)
    return features


def _pull(session: Any, frame: Any, setting: str, label: Optional[str], features: ScoringFeatures) -> Iterator[Any]:
    """The frame's result chunk by chunk (Snowpark's to_arrow_batches); the time spent in
    it and the feature query's id added to `features`."""
    from snowflake.connector.errors import Error as ConnectorError
    from snowflake.snowpark.exceptions import SnowparkClientException

    last = frame.queries["queries"][-1].strip()
    with session.query_history() as history:
        try:
            started = time.perf_counter()
            for batch in frame.to_arrow_batches():
                features.seconds += time.perf_counter() - started
                yield batch
                started = time.perf_counter()
            features.seconds += time.perf_counter() - started
        except (SnowparkClientException, ConnectorError) as exc:
            raise _definition_failed(exc, setting, label) from None
        finally:
            features.query_ids += [q.query_id for q in history.queries if q.query_id]
            features.feature_queries = sum(q.sql_text.strip() == last for q in history.queries)


def _without_label(frame: Any, setting: str, label: Optional[str]) -> Tuple[Any, Optional[str]]:
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


def _definition_failed(exc: BaseException, setting: str, label: Optional[str]) -> WarehouseError:
    text = sql_error(exc)
    hint = ""
    if label and label.strip('"').upper() in text.upper():
        hint = (
            f" (the definition needs the label column data.label={label!r}, which the warehouse does not have "
            "for these rows: scoring needs a feature definition that produces its rows without the label, "
            "e.g. a data.table or data.query of the features alone)"
        )
    return WarehouseError(f"data.{setting}: the feature query failed in the warehouse: {text}{hint}")


def check_keys(keys: pa.ChunkedArray, setting_value: str) -> None:
    """Every row of a batch has its entity key (keys: its Arrow key column)."""
    if keys.null_count:
        raise DataError(
            f"data.entity_key={setting_value!r} is null in {keys.null_count} rows of the feature result: "
            "every scored row needs its entity key"
        )


def check_entities(keys: pa.ChunkedArray, setting_value: str, setting: str) -> None:
    """One row per entity (keys: the whole result's key column, Arrow), and some rows: what a
    predictions table keyed by entity needs."""
    import pyarrow.compute as pc

    if len(keys) == 0:
        raise DataError(
            f"the feature definition (data.{setting}) returned no rows to score: check its filters "
            "(a definition that keeps only rows with a label yields none for entities without one)"
        )
    distinct = len(pc.unique(keys))
    if distinct != len(keys):
        raise DataError(
            f"data.entity_key={setting_value!r} is not unique in the feature result ({len(keys)} rows, "
            f"{distinct} entities): the definition must give one row per entity"
        )
