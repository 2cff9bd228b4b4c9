"""The model to score with: an MLflow model URI, loaded as a python_function model from the
tracking store the tracker config names.

runner's logged models take raw warehouse rows (runner/model/pyfunc_code.py): text for
categorical columns, any column order, extra columns (the entity key) ignored. Any other
pyfunc model that returns one number per row scores the same way, and so does one whose
output names its classes as runner's multiclass models do (runner/score/output.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from ..errors import ConfigError, DataError, first_line
from .output import ModelOutput, output_of, prediction_values

if TYPE_CHECKING:
    import pandas as pd

    from ..tracking import Tracker

URI_FORMS = "runs:/<run_id>/model, models:/<name>/<version>, models:/<name>@<alias> or models:/<model_id>"


@dataclass
class ScoringModel:
    uri: str  # as given: the key of the rows it writes
    pyfunc: Any  # mlflow.pyfunc.PyFuncModel
    run_id: Optional[str] = None  # the run that logged it
    model_id: Optional[str] = None  # its MLflow 3 logged model, if any
    name: Optional[str] = None  # registered model name (models:/<name>/...)
    version: Optional[str] = None  # registered version, resolved (an alias or latest: the version now)
    output: ModelOutput = field(default_factory=ModelOutput)  # the prediction columns it fills

    @property
    def label(self) -> str:
        """Short name for the scoring run: name-v<version>, the model id or the source run."""
        if self.name and self.version:
            return f"{self.name}-v{self.version}"
        return self.model_id or (self.run_id or "model")[:12]


def load_model(uri: str, tracker: Tracker, folder: str) -> ScoringModel:
    """Download the model at `uri` from the tracker's store into `folder` and load it.

    MLflow's global tracking and registry URIs are set to the tracker's (models:/ URIs are
    resolved through the registry there)."""
    import mlflow

    mlflow.set_tracking_uri(tracker.uri)
    mlflow.set_registry_uri(tracker.uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
        pyfunc = mlflow.pyfunc.load_model(local)
    except Exception as exc:
        raise ConfigError(
            f"MODEL_URI {uri!r}: cannot load the model from {tracker.display_uri}: {first_line(exc)} "
            f"(give {URI_FORMS} of that store; tracker.* selects the store)"
        ) from None
    meta = pyfunc.metadata
    name, version = _registered(tracker, uri)
    output = output_of(pyfunc, uri)
    return ScoringModel(uri, pyfunc, meta.run_id, getattr(meta, "model_id", None), name, version, output)


def _registered(tracker: Tracker, uri: str) -> Tuple[Optional[str], Optional[str]]:
    """(name, version) of a registered model URI, else (None, None)."""
    if not uri.startswith("models:/"):
        return None, None
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    try:
        found = get_model_name_and_version(tracker.client, uri)
    except Exception:  # a logged model id, or a registry without that API: not registered
        return None, None
    if len(found) != 2:
        return None, None
    return str(found[0]), str(found[1])


def predict(model: ScoringModel, rows: pd.DataFrame) -> Dict[str, Any]:
    """The model's predictions for `rows` (a pandas DataFrame of raw feature rows) as the output
    table's prediction columns (name -> numpy array, one value per row; runner/score/output.py)."""
    schema = model.pyfunc.metadata.get_input_schema()
    names = schema.input_names() if schema is not None and schema.has_input_names() else []
    missing = [n for n in names if n not in rows.columns]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DataError(
            f"the model {model.uri!r} needs feature column(s) the feature definition does not produce: {shown} "
            "(the data config must produce the columns the model was trained on: data.features, data.table "
            "or data.query)"
        )
    if names:
        rows = rows[names]  # the entity key is no input of the model
    try:
        out = model.pyfunc.predict(rows)
    except Exception as exc:
        raise DataError(
            f"the model {model.uri!r} cannot score the feature definition's rows: {first_line(exc)} "
            "(the data config must produce the columns the model was trained on: data.features, "
            "data.table or data.query)"
        ) from None
    return prediction_values(model.output, out, len(rows), model.uri)
