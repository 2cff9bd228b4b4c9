"""The feature definition: checked before anything runs, built as a Snowpark DataFrame.

A definition is exactly one of data.table, data.query or data.features (a callable
named by _target_, called as fn(session, cfg, **kwargs) and returning a Snowpark
DataFrame), plus data.entity_key and data.label.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Tuple, cast

from ..errors import ConfigError, DataError, WarehouseError, first_line
from .sample import sample_of
from .sql import snapshot_timestamp

if TYPE_CHECKING:
    from omegaconf import DictConfig

_IDENT = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_QUALIFIED = re.compile(rf"^{_IDENT}(?:\.{_IDENT}){{0,2}}$")
_COLUMN = re.compile(rf"^{_IDENT}$")
MATERIALIZE = ("none", "table")
MATERIALIZED_PREFIX = "RUNNER_FEATURES_"


def check_identifier(value: str, setting: str, qualified: bool = False) -> None:
    pattern = _QUALIFIED if qualified else _COLUMN
    if not isinstance(value, str) or not pattern.match(value):
        what = "a table name ([db.][schema.]name)" if qualified else "a column name"
        raise ConfigError(
            f"{setting}={value!r} is not {what}: use a plain Snowflake identifier "
            "(letters, digits, _ and $) or a double-quoted one"
        )


def validate(data_cfg: DictConfig) -> None:
    given = [name for name in ("table", "query", "features") if data_cfg.get(name)]
    if len(given) != 1:
        raise ConfigError(
            "set exactly one feature definition: data.table, data.query or "
            f"data.features (got {', '.join('data.' + g for g in given) or 'none'})"
        )
    if data_cfg.table:
        check_identifier(data_cfg.table, "data.table", qualified=True)
    if data_cfg.features and "_target_" not in data_cfg.features:
        raise ConfigError(
            "data.features needs a _target_: the dotted path of a callable (session, cfg) -> snowpark DataFrame"
        )
    _check_files(data_cfg)
    _settle_key(data_cfg)
    check_identifier(data_cfg.entity_key, "data.entity_key")
    check_identifier(data_cfg.label, "data.label")
    for i, col in enumerate(data_cfg.drop):
        check_identifier(col, f"data.drop[{i}]")
    if data_cfg.get("snapshot"):
        snapshot_timestamp(data_cfg.snapshot)
    sample_of(data_cfg)  # data.sample: checked before anything runs
    materialize = data_cfg.get("materialize") or "none"
    if materialize not in MATERIALIZE:
        raise ConfigError(f"data.materialize must be one of {', '.join(MATERIALIZE)}, got {materialize!r}")
    from .warehouse import GIVEN

    if GIVEN.session is not None and data_cfg.get("backend") != "snowflake":
        raise ConfigError(
            f"session= is a Snowpark session of your own: use it with a data config whose "
            f"data.backend is snowflake (e.g. data=snowflake), got data.backend={data_cfg.get('backend')!r}"
        )
    if data_cfg.get("backend") == "snowflake" and GIVEN.session is None:
        # Which connection (connections.toml entry or SNOWFLAKE_* env): no network, so a
        # wrong data.connection_name fails before any run is created.
        from .snowflake import snowflake_kwargs

        snowflake_kwargs(data_cfg)
    valid, test = data_cfg.split.valid, data_cfg.split.test
    if not (0 < valid < 1 and 0 < test < 1 and valid + test < 1):
        raise ConfigError(
            "data.split.valid and data.split.test must each be in (0, 1) and sum "
            f"below 1, got valid={valid}, test={test}"
        )


def _check_files(data_cfg: DictConfig) -> None:
    from .files import check_files, file_tables

    files = file_tables(data_cfg)
    if files and data_cfg.get("backend") != "embedded":
        backend = data_cfg.get("backend")
        raise ConfigError(
            f"data.files loads local files into the embedded warehouse only (data.backend={backend!r}): "
            "on Snowflake, load them through a stage (PUT + COPY INTO) and name the table in data.table"
        )
    for table, (_pattern, setting) in files.items():
        check_identifier(table, f"{setting} (the table name)")
    if data_cfg.get("column_types") and not files:
        raise ConfigError("data.column_types types columns of data.files: set data.files (or data=file data.path=...)")
    check_files(data_cfg)


def _settle_key(data_cfg: DictConfig) -> None:
    """data.entity_key: null -> the row-position key of the data.files table data.table names."""
    from omegaconf import OmegaConf

    if OmegaConf.is_missing(data_cfg, "entity_key") or data_cfg.entity_key is not None:
        return
    from .files import file_tables

    table = str(data_cfg.get("table") or "").split(".")[-1].strip('"').upper()
    if not table or table not in {t.strip('"').upper() for t in file_tables(data_cfg)}:
        raise ConfigError(
            "data.entity_key is null: set it to a column unique per row (the split hashes it); only a "
            "data.table loaded from data.files (e.g. data=file) can be keyed by row position"
        )
    from ..embedded.files import ROW_KEY

    data_cfg.entity_key = ROW_KEY
    print(
        f"runner: no data.entity_key: rows keyed by their position in the file ({ROW_KEY}); the split moves "
        "if rows are inserted or reordered (set data.entity_key to an id column to pin it)",
        flush=True,
    )


def build_frame(session: Any, data_cfg: DictConfig) -> Tuple[Any, str]:
    """The Snowpark DataFrame of the feature definition (nothing is pulled yet)."""
    from snowflake.snowpark.exceptions import SnowparkClientException

    setting = next(n for n in ("table", "query", "features") if data_cfg.get(n))
    try:
        if setting == "table":
            if data_cfg.get("backend") == "embedded":
                _check_quoted_table(session, data_cfg.table)
            return session.table(data_cfg.table), setting
        if setting == "query":
            return session.sql(data_cfg.query), setting
        from hydra.utils import call
        from omegaconf import OmegaConf

        # a mapping: validate() checked that data.features has a _target_
        spec = cast(Dict[str, Any], OmegaConf.to_container(data_cfg.features, resolve=True))
        try:
            frame = call(spec, session, data_cfg)
        except SnowparkClientException:
            raise
        except Exception as exc:
            named = f"data.features._target_={spec['_target_']!r}"
            cause = exc.__cause__
            if "Error in call to target" in str(exc) and cause is not None:
                if isinstance(cause, SnowparkClientException):
                    raise cause from None  # the warehouse refused what the function built: below
                # The function itself raised: its own type and message, the traceback kept as the
                # cause (HYDRA_FULL_ERROR=1 shows it).
                hint = _emulator_hint(cause) if data_cfg.get("backend") == "embedded" else ""
                raise ConfigError(f"{named} raised {type(cause).__name__}: {first_line(cause)}{hint}") from cause
            if "Error locating target" in str(exc):
                raise ConfigError(f"{named}: {first_line(exc)}") from None
            raise
        if not hasattr(frame, "queries"):
            raise ConfigError(
                f"data.features._target_={spec['_target_']!r} returned {type(frame).__name__}, not a Snowpark DataFrame"
            )
        return frame, setting
    except SnowparkClientException as exc:
        raise WarehouseError(
            f"data.{setting}: the warehouse rejected the feature definition: {sql_error(exc)}"
        ) from None


def _emulator_hint(exc: BaseException) -> str:
    """What to use instead, when a feature function failed in a Snowpark call that uploads
    local rows (create_dataframe of pandas, write_pandas: a stage upload fakesnow lacks)."""
    import traceback

    from ..embedded.server import LOCAL_DATA_ADVICE

    frames = traceback.extract_tb(exc.__traceback__)
    if any(f.name == "write_pandas" and "snowflake" in f.filename for f in frames):
        return f" (the embedded warehouse cannot take an upload of local rows; {LOCAL_DATA_ADVICE})"
    return ""


def _check_quoted_table(session: Any, table: str) -> None:
    """A quoted table name is case-sensitive in Snowflake ("customers" is not CUSTOMERS); the
    embedded warehouse's engine folds case, so it is checked here against the stored names."""
    name = re.findall(_IDENT, table)[-1]
    if not name.startswith('"'):
        return
    exact = name[1:-1].replace('""', '"')
    stored = [
        row[0]
        for row in session.sql(
            "select table_name from information_schema.tables where upper(table_name) = ?", params=[exact.upper()]
        ).collect()
    ]
    if stored and exact not in stored:
        raise ConfigError(
            f"data.table={table!r}: a quoted name keeps its case in Snowflake, and the table is named "
            f"{stored[0]!r}; write {stored[0]} unquoted (or quote its exact name)"
        )


def sql_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def frame_sql(frame: Any) -> str:
    queries = frame.queries
    return ";\n".join(queries["queries"] + queries.get("post_actions", []))


def find_column(names: List[str], wanted: str, setting: str) -> str:
    """The result column a setting names: a quoted name exactly (Snowflake keeps its case), an
    unquoted one in any case."""
    if wanted in names:
        return wanted
    if wanted.startswith('"'):
        exact = wanted[1:-1].replace('""', '"')
        if exact in names:
            return exact
        raise DataError(
            f"{setting}={wanted!r} is quoted, so its case counts (as in Snowflake), and no column of the feature "
            f"result is spelled {exact!r} (columns: {', '.join(names)}); drop the quotes to match any case"
        )
    folded = [n for n in names if n.upper() == wanted.upper()]
    if len(folded) == 1:
        return folded[0]
    raise DataError(f"{setting}={wanted!r} is not a column of the feature result (columns: {', '.join(names)})")


EMPTY_RESULT = "the feature result is empty: check data.table / data.query / data.features and the filters they apply"


def check_frame(table: Any, data_cfg: DictConfig) -> None:
    if table.num_rows == 0:
        raise DataError(EMPTY_RESULT)
    check_columns(table.column_names, data_cfg)


def check_columns(names: List[str], data_cfg: DictConfig) -> None:
    find_column(names, data_cfg.entity_key, "data.entity_key")
    find_column(names, data_cfg.label, "data.label")


def checked_batches(batches: Iterable[Any], data_cfg: DictConfig) -> Iterator[Any]:
    """`batches` of a result as they stream in, refused before the first one is stored if
    the result lacks data.entity_key or data.label, and at the end if it has no rows."""
    rows = 0
    for i, batch in enumerate(batches):
        if i == 0:
            check_columns(batch.schema.names, data_cfg)
        rows += batch.num_rows
        yield batch
    if rows == 0:
        raise DataError(EMPTY_RESULT)
