"""The model as runner logs it: an MLflow pyfunc model that takes raw feature rows.

One folder per model, the same for a single run (the run's artifacts `model/`,
runs:/<run_id>/model) and a sweep's best trial (an MLflow 3 logged model of the trial's run,
models:/<model_id>; the run's artifacts where the store has no logged models):

- flavor python_function: runner/model/pyfunc_code.py (MLflow "models from code") with the
  booster, the encoding (features, kinds, categories) and the encoding rule
  (runner/model/rows.py) as artifacts: rows as the warehouse returns them go in, text for
  categorical columns, in any column order, extra columns ignored; nulls and categories
  unseen in training score as missing;
- flavor lightgbm: the same booster file, for `mlflow.lightgbm.load_model` (which takes the
  encoded float columns, as in training);
- signature: text columns `string`, float columns `double`, booleans `boolean`, integer
  columns `any` (a warehouse integer column arrives as int64, or as float64 when it holds
  nulls: MLflow's `long` refuses the second and `double` the first; the model turns both
  into numbers); outputs: binary and regression as the booster predicts (one float per row:
  P(positive class), the value), multiclass the columns `prediction` (the label's own type)
  and `proba_<label>` per class (runner/model/rows.py model_output);
- input example: five validation rows decoded back to raw values.

Also the default Model Registry name of a sweep's best model (registered_name).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

if TYPE_CHECKING:
    import lightgbm as lgb
    import pandas as pd
    from mlflow.types.schema import Schema
    from omegaconf import DictConfig

    from ..model.prepare import Prepared

_MODEL_DIR = Path(__file__).resolve().parent.parent / "model"
MODEL_CODE = _MODEL_DIR / "pyfunc_code.py"
ROWS_CODE = _MODEL_DIR / "rows.py"
BOOSTER_FILE = "booster.lgb"
ENCODING_FILE = "encoding.json"
SIGNATURE_TYPES = {"category": "string", "boolean": "boolean", "float": "double"}  # integer: any


@dataclass
class LoggedModelRef:
    """A logged model: its URI (runs:/<run_id>/model, or models:/<model_id> for an MLflow 3
    logged model) and for the latter its id and artifact location (a registered version's
    source: the local store cannot resolve models:/ sources itself)."""

    uri: str
    model_id: Optional[str] = None
    location: Optional[str] = None

    @property
    def source(self) -> str:
        return self.location or self.uri


def encoding(prepared: Prepared) -> Dict[str, Any]:
    """What the logged model needs to encode raw rows (runner/model/rows.py spec)."""
    return {
        "features": list(prepared.features),
        "kinds": {
            f: prepared.kinds.get(f) or ("category" if f in prepared.categories else "float") for f in prepared.features
        },
        "categories": dict(prepared.categories),
        "objective": prepared.objective,
        "classes": prepared.classes,  # binary: [negative, positive]; multiclass: class i is classes[i]
        **({"positive_class": prepared.classes[1]} if prepared.objective == "binary" and prepared.classes else {}),
    }


def raw_example(prepared: Prepared, n: int = 5) -> pd.DataFrame:
    """n validation rows as raw rows (text categories, int64 integers), the input example."""
    from ..model.rows import decode_frame

    return decode_frame(prepared.parts["valid"].head(n), encoding(prepared))


def input_schema(prepared: Prepared) -> Schema:
    from mlflow.types.schema import AnyType, ColSpec, Schema

    spec = encoding(prepared)
    return Schema(
        [
            ColSpec(AnyType() if spec["kinds"][f] == "integer" else SIGNATURE_TYPES[spec["kinds"][f]], f)
            for f in spec["features"]
        ]
    )


def output_schema(prepared: Prepared, booster: lgb.Booster, encoded: pd.DataFrame) -> Schema:
    """What the model returns (runner/model/rows.py model_output): binary and regression as the
    booster predicts (a tensor of floats); multiclass, the columns `prediction` (the label's
    type) and `proba_<label>` (double) per class."""
    from mlflow.models import infer_signature
    from mlflow.types.schema import ColSpec, Schema

    from ..model.rows import PREDICTION, class_columns

    if prepared.objective != "multiclass" or not prepared.classes:
        return infer_signature(model_output=booster.predict(encoded)).outputs
    kinds = {type(c) for c in prepared.classes}  # one type (runner/model/labels.py plain_values)
    label = {bool: "boolean", int: "long", float: "double"}.get(kinds.pop(), "string") if len(kinds) == 1 else "string"
    return Schema([ColSpec(label, PREDICTION), *(ColSpec("double", c) for c in class_columns(prepared.classes))])


def save_model(
    path: Path, booster: lgb.Booster, prepared: Prepared, run_id: Optional[str] = None, model_id: Optional[str] = None
) -> None:
    """Write the MLflow model folder at `path` (which must not exist)."""
    import tempfile

    import lightgbm
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import Model, ModelSignature

    example = raw_example(prepared)
    encoded = prepared.parts["valid"].head(len(example))
    signature = ModelSignature(inputs=input_schema(prepared), outputs=output_schema(prepared, booster, encoded))
    mlflow_model = Model(run_id=run_id, model_id=model_id)
    mlflow_model.add_flavor(
        "lightgbm",
        lgb_version=lightgbm.__version__,
        data=f"artifacts/{BOOSTER_FILE}",
        model_class="lightgbm.basic.Booster",
    )
    requirements = [f"{m.__name__}=={m.__version__}" for m in (mlflow, lightgbm, pd, np)]
    # MLflow loads the saved model to check the example against the signature, and says so at INFO.
    chatty = logging.getLogger("mlflow.pyfunc")
    level = chatty.level
    with tempfile.TemporaryDirectory() as tmp:
        booster_file = Path(tmp, BOOSTER_FILE)
        booster.save_model(str(booster_file))  # trees up to the best iteration
        encoding_file = Path(tmp, ENCODING_FILE)
        encoding_file.write_text(json.dumps(encoding(prepared), indent=1), encoding="utf-8")
        chatty.setLevel(logging.WARNING)
        try:
            mlflow.pyfunc.save_model(
                str(path),
                python_model=str(MODEL_CODE),
                artifacts={"booster": str(booster_file), "encoding": str(encoding_file), "rows": str(ROWS_CODE)},
                signature=signature,
                input_example=example,
                mlflow_model=mlflow_model,
                pip_requirements=requirements,
            )
        finally:
            chatty.setLevel(level)


def warm() -> None:
    """Load what saving a model loads once per process (~1-2 s, pure Python, no OpenMP):
    MLflow's pyfunc modules and the map of installed distributions that its requirement
    check (`warn_dependency_requirement_mismatches`, called by every pyfunc save) builds the
    first time. Called while the run trains, off the path to its end."""
    import mlflow.pyfunc  # noqa: F401
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    warn_dependency_requirement_mismatches(["mlflow"])  # no version: nothing to warn about


_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def registered_name(tracker_cfg: DictConfig, setting: Optional[str] = None) -> Optional[str]:
    """The Model Registry name of a sweep's best model, or None when registration is off.

    tracker.register=false: off. Else hydra.sweeper.registered_model (`setting`), else
    tracker.registered_model, else tracker.experiment with every run of characters other than
    letters, digits, `_`, `.` and `-` replaced by `-` (MLflow refuses `/` and `:` in names;
    "runner" if nothing is left).
    """
    if not tracker_cfg.get("register", True):
        return None
    name = setting or tracker_cfg.get("registered_model")
    if name:
        return str(name)
    return _NOT_IN_NAME.sub("-", str(tracker_cfg.experiment)).strip("-.") or "runner"
