"""The dataset input's schema and profile describe the whole frame, though types are inferred
from its first rows (runner/tracking/dataset.py)."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd

from runner.tracking.dataset import SCHEMA_SAMPLE_ROWS, dataset_input, source_class


def test_schema_and_profile_equal_mlflows_inference_on_the_whole_frame():
    import mlflow.data

    rng = np.random.default_rng(0)
    n = SCHEMA_SAMPLE_ROWS * 3
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=["A", "B", "C", "D"])
    frame["PLAN"] = rng.choice(["basic", "pro"], n).astype(object)
    frame.loc[n - 1, "B"] = np.nan  # a missing value only after the sampled rows
    frame.loc[n - 2, "PLAN"] = None
    frame["CHURNED"] = rng.integers(0, 2, n)
    features = SimpleNamespace(key="0123456789abcdef" * 4, source={"query": "select 1", "database": "DEMO"})
    entity = dataset_input(frame, features, "CHURNED").dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = mlflow.data.from_pandas(  # type: ignore[attr-defined]
            frame, source=source_class()(features.source), targets="CHURNED", name=entity.name, digest=entity.digest
        )._to_mlflow_entity()
    assert json.loads(entity.schema) == json.loads(full.schema)
    required = {c["name"]: c["required"] for c in json.loads(entity.schema)["mlflow_colspec"]}
    assert required["B"] is False and required["PLAN"] is False and required["A"] is True
    assert json.loads(entity.profile) == {"num_rows": n, "num_elements": n * 6} == json.loads(full.profile)
    assert entity.digest == features.key[:36] and entity.source_type == "snowflake"
