"""What a model's predictions become in the output table: the prediction columns, from the
model's signature.

- One value per row (binary: P(positive class); regression: the value; any pyfunc model that
  returns one number per row): `PREDICTION` FLOAT.
- Multiclass (an output schema of columns `prediction` and `proba_<label>` per class, as
  runner's models return: runner/model/rows.py model_output): `PREDICTION`, the predicted
  label in its own type (VARCHAR for text, NUMBER(38,0), FLOAT or BOOLEAN), then one FLOAT
  column per class, `PROBA_<LABEL>` (probability_columns: the label upper-cased, each
  character other than A-Z, 0-9 and _ replaced by _; a name already taken gets _2, _3, ...
  in class order).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Sequence, Tuple

from ..errors import ConfigError, DataError

if TYPE_CHECKING:
    import pyarrow as pa

PREDICTION = "PREDICTION"
PROBA = "PROBA_"
# The multiclass output of runner's models (runner/model/rows.py: PREDICTION, PROBA_PREFIX; not
# imported from there, which is the model's own code).
MODEL_PREDICTION = "prediction"
MODEL_PROBA = "proba_"
_NOT_IDENTIFIER = re.compile(r"[^A-Z0-9_]")
MAX_IDENTIFIER = 255  # Snowflake's longest identifier


@dataclass
class ModelOutput:
    """The prediction columns a model's output fills: (model's column, table's column) pairs;
    multiclass only (one value per row: none, PREDICTION from the whole output)."""

    classes: List[str] = field(default_factory=list)  # the labels, as the model names them
    columns: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def multiclass(self) -> bool:
        return bool(self.columns)

    @property
    def names(self) -> List[str]:
        """The table's prediction columns, in order."""
        return [table for _, table in self.columns] if self.columns else [PREDICTION]


def probability_columns(labels: Sequence[Any]) -> List[str]:
    """PROBA_<LABEL> per class label: a valid unquoted Snowflake identifier, unique among the
    table's prediction columns (deterministic: in class order, a repeat gets _2, _3, ...)."""
    taken = {PREDICTION}
    out: List[str] = []
    for label in labels:
        base = (PROBA + _NOT_IDENTIFIER.sub("_", str(label).upper()))[: MAX_IDENTIFIER - 8]
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        out.append(name)
    return out


def output_of(pyfunc: Any, uri: str) -> ModelOutput:
    """The model's output as its signature describes it. A multiclass output without class
    names (a tensor of several values per row: a model logged by an earlier runner) is refused."""
    schema = pyfunc.metadata.get_output_schema()
    if schema is None:
        return ModelOutput()
    names = schema.input_names() if schema.has_input_names() else []
    if MODEL_PREDICTION in names and any(n.startswith(MODEL_PROBA) for n in names):
        classes = [n[len(MODEL_PROBA) :] for n in names if n.startswith(MODEL_PROBA)]
        model_columns = [MODEL_PREDICTION, *(MODEL_PROBA + c for c in classes)]
        return ModelOutput(classes, list(zip(model_columns, [PREDICTION, *probability_columns(classes)], strict=True)))
    shape = None
    try:
        shape = schema.to_dict()[0].get("tensor-spec", {}).get("shape")
    except (IndexError, AttributeError, TypeError):
        pass
    if shape is not None and len(shape) > 1 and shape[1] not in (1, -1):
        raise ConfigError(
            f"MODEL_URI {uri!r}: the model returns {shape[1]} unnamed values per row (a multiclass model without "
            "class names, e.g. one logged by an earlier runner): runner.score writes multiclass predictions of "
            f"models whose output names its classes (columns {MODEL_PREDICTION} and {MODEL_PROBA}<label>, as "
            "runner logs them now); train the model again"
        )
    return ModelOutput()


def prediction_values(output: ModelOutput, out: Any, rows: int, uri: str) -> Dict[str, Any]:
    """The model's output for `rows` rows as the table's prediction columns (name -> numpy array)."""
    import numpy as np

    if output.multiclass:
        missing = [m for m, _ in output.columns if m not in getattr(out, "columns", [])]
        if missing or len(out) != rows:
            raise DataError(
                f"the model {uri!r} returned {type(out).__name__} of {len(out)} rows for {rows} rows"
                + (f" without column(s) {', '.join(missing)}" if missing else "")
                + f": its signature promised columns {', '.join(m for m, _ in output.columns)}, one row per row"
            )
        columns = {table: out[model].to_numpy() for model, table in output.columns}
        for name in output.names[1:]:
            columns[name] = np.asarray(columns[name], dtype=float)
        return columns
    values = np.asarray(getattr(out, "values", out), dtype=float)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or len(values) != rows:
        raise DataError(
            f"the model {uri!r} returned predictions of shape {values.shape} for {rows} rows: "
            "runner.score writes one PREDICTION per entity for a model without named classes"
        )
    return {PREDICTION: values}


def arrow_columns(values: Dict[str, Any]) -> Dict[str, pa.Array]:
    """The prediction columns as Arrow arrays: probabilities (and a single PREDICTION) float64,
    a predicted label in its own type."""
    import pyarrow as pa

    out: Dict[str, pa.Array] = {}
    for name, column in values.items():
        floats = column.dtype.kind == "f" or name != PREDICTION
        out[name] = pa.array(column, pa.float64()) if floats else pa.array(column)
    return out


def column_type(name: str, arrow_type: pa.DataType) -> str:
    """The Snowflake type of a prediction column."""
    import pyarrow as pa

    if name != PREDICTION or pa.types.is_floating(arrow_type):
        return "FLOAT"
    if pa.types.is_integer(arrow_type):
        return "NUMBER(38,0)"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    return "VARCHAR"
