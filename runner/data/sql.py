"""Feature SQL, read and rewritten with sqlglot's Snowflake dialect."""

from __future__ import annotations

from typing import Any, List, Optional

from ..errors import ConfigError


def source_tables(sql: str) -> List[str]:
    """Tables a query reads, found with sqlglot's Snowflake parser."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse(sql, read="snowflake")
    except sqlglot.errors.ParseError:
        return []
    names = set()
    for stmt in (s for s in tree if s is not None):
        ctes = {c.alias_or_name.upper() for c in stmt.find_all(exp.CTE)}
        for t in stmt.find_all(exp.Table):
            if t.name and t.name.upper() not in ctes:
                names.add(".".join(p for p in (t.catalog, t.db, t.name) if p).upper())
    return sorted(names)


def snapshot_timestamp(value: Any) -> str:
    """data.snapshot as a UTC timestamp literal ('YYYY-MM-DD HH:MM:SS[.ffffff] +00:00').

    Accepts ISO 8601 dates and times; a value without an offset is taken as UTC.
    """
    import datetime as dt

    text = str(value).strip()
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"data.snapshot={text!r} is not a timestamp: use ISO 8601, e.g. "
            "data.snapshot='2024-06-01 12:00:00' (UTC) or '2024-06-01T12:00:00+02:00'"
        ) from None
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
        raise ConfigError(
            f"data.snapshot: the feature SQL cannot be parsed to add time travel: {str(exc).splitlines()[0]}"
        ) from None
    if len(statements) != 1:
        raise ConfigError(
            "data.snapshot needs a feature definition that compiles to one SQL query "
            f"(this one has {len(statements)} statements)"
        )
    tree = statements[0]
    ctes = {c.alias_or_name.upper() for c in tree.find_all(exp.CTE)}
    if snapshot is not None:
        for table in tree.find_all(exp.Table):
            if not isinstance(table.this, exp.Identifier) or table.name.upper() in ctes:
                continue
            if table.args.get("when") is not None:
                raise ConfigError(
                    f"data.snapshot: the feature SQL already uses time travel on {table.name}; "
                    "remove AT/BEFORE from it or unset data.snapshot"
                )
            table.set(
                "when",
                exp.HistoricalData(
                    this="AT",
                    kind="TIMESTAMP",
                    expression=exp.cast(
                        exp.Literal.string(snapshot), exp.DataType.build("TIMESTAMP_TZ", dialect="snowflake")
                    ),
                ),
            )
    return tree.sql(dialect="snowflake")
