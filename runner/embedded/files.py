"""data.files as tables of the embedded warehouse: each table created by one statement that
the warehouse's engine (DuckDB, under fakesnow) runs on the files themselves, so no row passes
through Python.

    data.files: {ORDERS: data/orders-*.parquet, CUSTOMERS: data/customers.csv}

- CSV: the engine's sniffer infers the delimiter, header and types (integers, decimals,
  dates, timestamps, booleans; a number with a leading zero stays text); data.column_types
  forces a column's type. Parquet: the file's own types (column_types casts).
- Several files of one table (a glob) are read in name order, their columns matched by name.
- Column names become Snowflake's unquoted identifiers: upper case, any character other
  than a letter, digit, _ or $ replaced by _ (`sepal length (cm)` -> SEPAL_LENGTH__CM_), so
  SQL reads `select SEPAL_LENGTH__CM_ from IRIS` as it would on Snowflake.
- data.entity_key: null with data.table naming one of these tables: a column RUNNER_ROW (the
  row's position in the files, from 0) is added to that table as its key.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..data.files import file_format, file_tables, matches
from ..errors import ConfigError, WarehouseError, first_line

if TYPE_CHECKING:
    from omegaconf import DictConfig

ROW_KEY = "RUNNER_ROW"
# data.column_types values -> the engine's type names.
TYPES = {
    "text": "VARCHAR",
    "string": "VARCHAR",
    "varchar": "VARCHAR",
    "number": "BIGINT",
    "int": "BIGINT",
    "integer": "BIGINT",
    "float": "DOUBLE",
    "double": "DOUBLE",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "boolean": "BOOLEAN",
}


def identifier(name: str) -> str:
    """A column name as a Snowflake unquoted identifier (upper case, [A-Z0-9_$], not digit-first)."""
    out = re.sub(r"[^A-Za-z0-9_$]", "_", name.strip()).upper() or "_"
    return "_" + out if out[0].isdigit() or out[0] == "$" else out


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _reader(fmt: str, paths: List[str], types: Dict[str, str]) -> str:
    """The table function reading `paths` (the engine's read_csv / read_parquet)."""
    files = "[" + ", ".join(_literal(p) for p in paths) + "]"
    if fmt == "parquet":
        return f"read_parquet({files}, union_by_name=true)"
    forced = ""
    if types:
        forced = ", types=struct_pack(" + ", ".join(f"{_quote(c)} := {_literal(t)}" for c, t in types.items()) + ")"
    return f"read_csv({files}, union_by_name=true{forced})"


def column_types(data_cfg: DictConfig) -> Dict[str, str]:
    """data.column_types as {identifier: engine type}; a ConfigError for an unknown type."""
    out = {}
    for column, kind in (data_cfg.get("column_types") or {}).items():
        engine = TYPES.get(str(kind).lower())
        if engine is None:
            raise ConfigError(
                f"data.column_types.{column}={kind!r} is not a type runner loads: use one of {', '.join(TYPES)}"
            )
        out[identifier(str(column))] = engine
    return out


def load_files(session: Any, data_cfg: DictConfig) -> List[str]:
    """Create a table of the session's schema for each entry of data.files (and data.path); return the
    statements run. The caller's session has the target schema as its current one."""
    forced = column_types(data_cfg)
    used: set = set()
    statements = []
    row_key_table = _row_key_table(data_cfg)
    for table, (pattern, setting) in file_tables(data_cfg).items():
        paths = matches(pattern, setting)
        formats = {file_format(p) for p in paths}
        if len(formats) != 1 or None in formats:
            raise ConfigError(f"{setting}={pattern!r} matches files of more than one format: {', '.join(paths[:5])}")
        fmt = formats.pop() or "csv"
        names = _columns(session, _reader(fmt, paths, {}), setting)
        source_types = {src: forced[identifier(src)] for src in names if identifier(src) in forced}
        used.update(identifier(src) for src in source_types)
        select = _select_list(names, source_types if fmt == "parquet" else {}, setting)
        if str(table).strip('"').upper() == row_key_table:
            if ROW_KEY in [identifier(n) for n in names]:
                raise ConfigError(f"{setting}: the file has a column {ROW_KEY}, the name runner gives the row key")
            select = f"row_number() over () - 1 as {ROW_KEY}, " + select
        reader = _reader(fmt, paths, source_types if fmt == "csv" else {})
        sql = f"create or replace table {table} as select {select} from {reader}"
        _run(session, sql, setting)
        statements.append(sql)
    unknown = sorted(set(forced) - used)
    if unknown:
        raise ConfigError(f"data.column_types names columns that no file of data.files has: {', '.join(unknown)}")
    return statements


def _row_key_table(data_cfg: DictConfig) -> Optional[str]:
    if data_cfg.get("entity_key") in (None, ROW_KEY) and data_cfg.get("table"):
        return str(data_cfg.table).split(".")[-1].strip('"').upper()
    return None


def _columns(session: Any, reader: str, setting: str) -> List[str]:
    """The column names the engine reads from the files (a zero-row query)."""
    cursor = session.connection.cursor()
    try:
        cursor.execute(f"select * from {reader} limit 0")
        return [d[0] for d in cursor.description]
    except Exception as exc:  # the connector's ProgrammingError: the engine could not read them
        raise WarehouseError(f"{setting}: the embedded warehouse cannot read the files: {first_line(exc)}") from None
    finally:
        cursor.close()


def _select_list(names: List[str], casts: Dict[str, str], setting: str) -> str:
    seen: Dict[str, str] = {}
    parts = []
    for src in names:
        ident = identifier(src)
        if ident in seen:
            raise ConfigError(
                f"{setting}: columns {seen[ident]!r} and {src!r} both become {ident} "
                "(names are upper-cased, other characters than letters, digits, _ and $ become _): rename one"
            )
        seen[ident] = src
        value = f"cast({_quote(src)} as {casts[src]})" if src in casts else _quote(src)
        parts.append(f"{value} as {ident}")
    return ", ".join(parts)


def _run(session: Any, sql: str, setting: str) -> Tuple[Any, ...]:
    cursor = session.connection.cursor()
    try:
        return tuple(cursor.execute(sql).fetchall())
    except Exception as exc:
        raise WarehouseError(f"{setting}: loading the files failed: {first_line(exc)}") from None
    finally:
        cursor.close()
