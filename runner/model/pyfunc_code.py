"""The logged model's code (MLflow "models from code"): MLflow copies this file into the model
and runs it when the model is loaded; runner itself never imports it.

The model takes raw feature rows as the warehouse returns them (text for categorical columns,
in any column order, extra columns such as the entity key or label ignored) and returns the
booster's predictions: binary, P(positive class), and regression, the value, one float per
row; multiclass, a DataFrame of the predicted label (`prediction`) and `proba_<label>` per
class (rows.py model_output). It loads, from the model's own folder:

- artifacts/booster.lgb: the LightGBM booster (trees up to the best iteration);
- artifacts/encoding.json: features in the booster's order, each column's kind, the categories,
  the objective and the classes;
- artifacts/rows.py: the encoding rule (a copy of runner/model/rows.py, loaded from this
  model's own folder), so scoring needs mlflow, lightgbm, pandas and numpy, not runner.
"""

import importlib.util
import json
from typing import Any, Dict, Optional

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class RunnerModel(PythonModel):
    """A LightGBM booster and the raw-row encoding it was trained with."""

    def load_context(self, context: Any) -> None:
        import lightgbm

        self.booster = lightgbm.Booster(model_file=context.artifacts["booster"])
        with open(context.artifacts["encoding"], encoding="utf-8") as f:
            self.spec = json.load(f)
        # This model's own copy of the rule, under a name of its own: models loaded side by side
        # in one process (with their own training-time copies) do not share it.
        spec = importlib.util.spec_from_file_location(f"runner_model_rows_{id(self):x}", context.artifacts["rows"])
        assert spec is not None and spec.loader is not None  # a file path always has a spec and a loader
        self.rows = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.rows)

    # The pd.DataFrame hint: MLflow checks the input against the signature (not the hint).
    def predict(self, context: Any, model_input: pd.DataFrame, params: Optional[Dict[str, Any]] = None) -> Any:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        pred = self.booster.predict(self.rows.encode_frame(model_input, self.spec))
        return self.rows.model_output(pred, self.spec, model_input.index)


mlflow.models.set_model(RunnerModel())
