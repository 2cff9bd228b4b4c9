"""The rows scored as they stream in: each batch of the feature result is predicted and
appended to two Parquet files, the warehouse's upload (key and prediction columns:
PREDICTION, and PROBA_<LABEL> per class for a multiclass model) and the run's artifact (the
output table's rows). Of the rows only the key column stays in memory, to check one row per
entity before anything reaches the warehouse."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from ..data import find_column
from ..data.entry import conform
from ..tracking.dataset import FrameSummary
from .features import ScoringFeatures, check_entities, check_keys
from .model import ScoringModel, predict
from .output import arrow_columns, column_type
from .table import sql_type

if TYPE_CHECKING:
    import pyarrow as pa
    from omegaconf import DictConfig

UPLOAD = "upload.parquet"
ARTIFACT = "predictions.parquet"  # the name of the run's artifact (runner/score/record.py)


@dataclass
class Scored:
    rows: int
    batches: int
    key_column: str  # data.entity_key as the warehouse names it
    key_type: str  # its Snowflake type
    upload: Path  # key and prediction columns: what goes to the warehouse
    artifact: Path  # the rows as the output table holds them
    summary: FrameSummary  # of the rows scored: the run's dataset input
    predictions: List[Tuple[str, str]]  # the prediction columns: (name, Snowflake type)


def score_batches(
    features: ScoringFeatures,
    model: ScoringModel,
    data_cfg: DictConfig,
    meta: Sequence[Any],
    scored_at: datetime,
    folder: Path,
) -> Scored:
    """Score `features.batches` into folder/UPLOAD and folder/ARTIFACT. meta: MODEL_URI,
    MODEL_NAME, MODEL_VERSION, MODEL_RUN_ID, SCORING_RUN_ID (the output table's columns)."""
    import pyarrow as pa

    writers: Dict[str, Any] = {}
    keys: List[Any] = []
    summary = FrameSummary()
    key_column: Optional[str] = None
    key_type = ""
    predictions: List[Tuple[str, str]] = []
    rows = batches = 0
    try:
        for table in features.batches:
            if key_column is None:
                key_column = find_column(table.column_names, data_cfg.entity_key, "data.entity_key")
                key_type = sql_type(table.schema.field(key_column).type, data_cfg.entity_key)
            if table.num_rows == 0:
                continue
            key = table.column(key_column)
            check_keys(key, data_cfg.entity_key)
            frame = table.to_pandas()
            values = arrow_columns(predict(model, frame))
            summary.add(frame)
            del frame, table
            upload = _append(writers, folder / UPLOAD, pa.table({key_column: key, **values}))
            if not predictions:  # in the first batch's types (later batches are cast to them)
                predictions = [(name, column_type(name, upload.schema.field(name).type)) for name in values]
            _append(writers, folder / ARTIFACT, output_rows(key_column, key, values, meta, scored_at))
            # A copy: the column may be a view into the batch's whole buffer (the chunk as
            # downloaded), which would keep every batch's rows alive (800k rows: +300 MB).
            keys.append(pa.concat_arrays(upload.column(key_column).chunks))  # in the first batch's type
            rows += len(key)
            batches += 1
    finally:
        for writer in writers.values():
            writer.close()
        close = getattr(features.batches, "close", None)
        if close is not None:  # a pull stopped early (a bad batch): its query ids recorded now
            close()
    check_entities(
        pa.chunked_array(keys, type=keys[0].type if keys else pa.null()), data_cfg.entity_key, features.setting
    )
    assert key_column is not None  # check_entities refused a result without rows
    return Scored(rows, batches, key_column, key_type, folder / UPLOAD, folder / ARTIFACT, summary, predictions)


def output_rows(
    key_column: str, key: pa.ChunkedArray, values: Dict[str, pa.Array], meta: Sequence[Any], scored_at: datetime
) -> pa.Table:
    """Rows as the output table holds them: key, the prediction columns (`values`) and the
    columns of meta."""
    import pyarrow as pa

    n = len(key)
    text = lambda v: pa.array([v] * n, pa.string())  # noqa: E731
    return pa.table(
        {
            key_column: key,
            **values,
            "MODEL_URI": text(meta[0]),
            "MODEL_NAME": text(meta[1]),
            "MODEL_VERSION": text(meta[2]),
            "MODEL_RUN_ID": text(meta[3]),
            "SCORING_RUN_ID": text(meta[4]),
            "SCORED_AT": pa.array([scored_at] * n, pa.timestamp("us")),
        }
    )


def _append(writers: Dict[str, Any], path: Path, table: pa.Table) -> pa.Table:
    """table appended to the Parquet file at path (opened with the first table's schema), as
    written (cast to that schema)."""
    import pyarrow.parquet as pq

    writer = writers.get(str(path))
    if writer is None:
        writer = writers[str(path)] = pq.ParquetWriter(path, table.schema)
    table = conform(table, writer.schema)
    writer.write_table(table)
    return table
