"""Predictions into a warehouse table, in plain Snowflake SQL over the session.

The output table (score.table; created if missing) has one row per entity and model URI:

    <entity key>    the feature definition's key column, its name and type
    PREDICTION      FLOAT: the model's output (binary: P(positive class); regression: the value);
                    multiclass: the predicted label (its type), then PROBA_<LABEL> FLOAT per
                    class (runner/score/output.py)
    MODEL_URI       VARCHAR: the model URI as given, the key of a scoring's rows
    MODEL_NAME      VARCHAR: registered model name (models:/<name>/...), else null
    MODEL_VERSION   VARCHAR: registered version (an alias or latest: the version it named), else null
    MODEL_RUN_ID    VARCHAR: the MLflow run that logged the model
    SCORING_RUN_ID  VARCHAR: the MLflow run of this scoring
    SCORED_AT       TIMESTAMP_NTZ: when it was scored (UTC)

An existing table must have exactly these columns (PREDICTION of the same kind): one of
another shape (another model's classes, another entity key) is refused, nothing written.

Path (the same on Snowflake and on the emulator; no write_pandas, no INFER_SCHEMA, no
temporary tables): key and prediction columns go to a Parquet file, PUT to a temporary stage, COPY
INTO a transient staging table; then one transaction deletes the rows of earlier scorings
of the same MODEL_URI and inserts the new ones from the staging table (the other columns
bound as parameters), checks the count and commits. The staging table is dropped after; the
temporary stage goes with the session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from ..data import check_identifier
from ..data.definition import sql_error
from ..errors import ConfigError, DataError, WarehouseError
from .output import PREDICTION

if TYPE_CHECKING:
    import pyarrow as pa

# After the key and the prediction columns (runner/score/output.py).
META_COLUMNS = (
    ("MODEL_URI", "VARCHAR"),
    ("MODEL_NAME", "VARCHAR"),
    ("MODEL_VERSION", "VARCHAR"),
    ("MODEL_RUN_ID", "VARCHAR"),
    ("SCORING_RUN_ID", "VARCHAR"),
    ("SCORED_AT", "TIMESTAMP_NTZ"),
)
COMMENT = "runner.score predictions: one row per entity and MODEL_URI (docs/scoring.md)"
_PART = re.compile(r'"(?:[^"]|"")*"|[^.]+')


@dataclass
class OutputTable:
    setting: str  # score.table as given
    database: str  # each part as SQL: an identifier as given, or the session's quoted
    schema: str
    name: str

    @property
    def sql(self) -> str:
        return f"{self.database}.{self.schema}.{self.name}"

    def sibling(self, name: str) -> str:
        """Another object in the same database and schema."""
        return f"{self.database}.{self.schema}.{name}"


@dataclass
class Written:
    inserted: int
    replaced: int  # rows of earlier scorings of the same MODEL_URI, deleted
    query_ids: List[str]


def check_table_setting(value: str) -> None:
    check_identifier(value, "score.table", qualified=True)


def output_table(value: str, identity: Dict[str, str]) -> OutputTable:
    """score.table with its missing database/schema taken from the session's."""
    check_table_setting(value)
    parts = _PART.findall(value)
    quote = lambda part: '"' + part.replace('"', '""') + '"'  # noqa: E731
    given = [None] * (3 - len(parts)) + parts
    database = given[0] or quote(identity["database"])
    schema = given[1] or quote(identity["schema"])
    return OutputTable(value, database, schema, parts[-1])


def quote_column(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_type(arrow_type: pa.DataType, key_setting: str) -> str:
    """The Snowflake type of the key column, from its Arrow type as the warehouse returned it."""
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_integer(t):
        return "NUMBER(38,0)"
    if pa.types.is_decimal(t):
        return f"NUMBER({t.precision},{t.scale})"
    if pa.types.is_floating(t):
        return "FLOAT"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP_TZ" if t.tz else "TIMESTAMP_NTZ"
    raise DataError(
        f"data.entity_key={key_setting!r} is of type {t}, which cannot key the predictions table: "
        "cast it to a number or text in the feature definition"
    )


def write_predictions(
    session: Any,
    target: OutputTable,
    key_column: str,
    key_type: str,
    predictions: Sequence[Tuple[str, str]],
    upload: Path,
    expected: int,
    values: Sequence[Any],
    run_id: str,
) -> Written:
    """Replace the rows of MODEL_URI values[0] in `target` with those of `upload` (a Parquet
    file of the key column and the prediction columns, (name, type) in `predictions`,
    `expected` rows); values: MODEL_URI, MODEL_NAME, MODEL_VERSION, MODEL_RUN_ID,
    SCORING_RUN_ID, SCORED_AT (text, UTC)."""
    key = quote_column(key_column)
    ids: List[str] = []
    run = f"RUNNER_SCORE_{run_id.upper()}"
    stage, staging = target.sibling(run + "_STAGE"), target.sibling(run + "_ROWS")
    predicted = ", ".join(f'"{name}" {kind}' for name, kind in predictions)
    columns = ", ".join(f'"{name}" {kind}' for name, kind in META_COLUMNS)
    _table_step(
        session,
        target,
        ids,
        f"CREATE TABLE IF NOT EXISTS {target.sql} ({key} {key_type}, {predicted}, {columns}) COMMENT = '{COMMENT}'",
    )
    _check_columns(session, target, key_column, predictions)
    local = upload.as_uri().replace("'", "\\'")
    _table_step(session, target, ids, f"CREATE TEMPORARY STAGE {stage}")
    _table_step(session, target, ids, f"PUT '{local}' @{stage}/ AUTO_COMPRESS = FALSE OVERWRITE = TRUE")
    _table_step(session, target, ids, f"CREATE TRANSIENT TABLE {staging} ({key} {key_type}, {predicted})")
    open_transaction: List[bool] = []  # non-empty while a transaction may be open
    try:
        _table_step(
            session,
            target,
            ids,
            f"COPY INTO {staging} FROM @{stage}/ FILE_FORMAT = (TYPE = PARQUET) "
            "MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE",
        )
        selected = ", ".join([key, *(f'"{name}"' for name, _ in predictions)])
        return _replace(session, target, selected, staging, expected, values, ids, open_transaction)
    finally:
        # Not while a transaction may be open (its ROLLBACK failed): DDL would commit it.
        if not open_transaction:
            try:
                _run(session, f"DROP TABLE IF EXISTS {staging}", ids)
            except Exception:  # noqa: BLE001 - a transient table left behind is named for its run: safe to drop
                pass


def _replace(
    session: Any,
    target: OutputTable,
    selected: str,  # the key and prediction columns, as SQL
    staging: str,
    expected: int,
    values: Sequence[Any],
    ids: List[str],
    open_: List[bool],
) -> Written:
    names = ", ".join(f'"{name}"' for name, _ in META_COLUMNS)
    open_.append(True)
    _table_step(session, target, ids, "BEGIN TRANSACTION")
    try:
        deleted = _table_step(session, target, ids, f'DELETE FROM {target.sql} WHERE "MODEL_URI" = ?', [values[0]])
        inserted = _table_step(
            session,
            target,
            ids,
            f"INSERT INTO {target.sql} ({selected}, {names}) SELECT {selected}, ?, ?, ?, ?, ?, "
            f"TO_TIMESTAMP_NTZ(?) FROM {staging}",
            list(values),
        )
        if _count(inserted) != expected:
            raise WarehouseError(
                f"score.table={target.setting!r}: {_count(inserted)} rows reached {target.sql}, "
                f"expected {expected}: rolled back"
            )
        _table_step(session, target, ids, "COMMIT")
        open_.clear()
    except BaseException:
        try:
            _run(session, "ROLLBACK", ids)
            open_.clear()
        except Exception:  # noqa: BLE001 - the session may be what failed; Snowflake rolls back at its end
            pass
        raise
    return Written(_count(inserted), _count(deleted), ids)


def _check_columns(session: Any, target: OutputTable, key_column: str, predictions: Sequence[Tuple[str, str]]) -> None:
    """The table (created by this scoring, or found) has exactly the columns this scoring
    writes, and a PREDICTION of the same kind: else it holds another shape of predictions."""
    from snowflake.snowpark.exceptions import SnowparkClientException

    try:
        fields = session.table(target.sql).schema.fields
    except SnowparkClientException as exc:
        raise _not_writable(target, exc) from None
    have = {f.name.strip('"'): f.datatype for f in fields}
    wanted = [key_column, *(name for name, _ in predictions), *(name for name, _ in META_COLUMNS)]
    missing = [c for c in wanted if c not in have]
    extra = [c for c in have if c not in wanted]
    kind = dict(predictions).get(PREDICTION, "FLOAT")
    found = _kind(have[PREDICTION]) if PREDICTION in have else None
    if not missing and not extra and found in (None, _kind(kind)):
        return
    differ = [f"without column(s) {', '.join(missing)}"] if missing else []
    if extra:
        differ.append(f"with column(s) {', '.join(extra)} that this scoring does not write")
    if found not in (None, _kind(kind)):
        there = f"{found} ({type(have[PREDICTION]).__name__})"
        differ.append(f"with {PREDICTION} of type {there} where this model writes {kind} ({_kind(kind)})")
    raise ConfigError(
        f"score.table={target.setting!r}: {target.sql} exists {'; '.join(differ)}: it is not a predictions table "
        f"of this shape (this scoring writes {', '.join(wanted)}); nothing was written. Set score.table to another "
        "table (one table per entity key and model output: binary and regression models write PREDICTION, a "
        "multiclass model PREDICTION and a PROBA_<LABEL> column per class)"
    )


def _kind(type_: Any) -> str:
    """A column type's kind: text, number or boolean (a Snowpark DataType or a Snowflake type)."""
    name = type_ if isinstance(type_, str) else type(type_).__name__
    name = name.upper()
    if "BOOL" in name:
        return "boolean"
    if "STRING" in name or "CHAR" in name or "TEXT" in name:
        return "text"
    return "number"


def _table_step(
    session: Any, target: OutputTable, ids: List[str], sql: str, params: Optional[list] = None
) -> List[Any]:
    from snowflake.snowpark.exceptions import SnowparkClientException

    try:
        return _run(session, sql, ids, params)
    except SnowparkClientException as exc:
        raise _not_writable(target, exc) from None


def _run(session: Any, sql: str, ids: List[str], params: Optional[list] = None) -> List[Any]:
    with session.query_history() as history:
        rows = session.sql(sql, params=params).collect()
    ids.extend(q.query_id for q in history.queries if q.query_id)
    return rows


def _count(rows: List[Any]) -> int:
    return int(rows[0][0]) if rows else 0


def _not_writable(target: OutputTable, exc: BaseException) -> WarehouseError:
    return WarehouseError(
        f"score.table={target.setting!r}: cannot write {target.sql}: {sql_error(exc)} (the role needs "
        "CREATE TABLE and CREATE STAGE on its schema, or INSERT and DELETE on an existing table; "
        "or set score.table to a table it may write)"
    )
