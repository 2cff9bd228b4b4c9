"""The dataset input's schema and profile describe the whole frame, though types are inferred
from its first rows (runner/tracking/dataset.py)."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from runner.tracking.dataset import SCHEMA_SAMPLE_ROWS, FrameSummary, dataset_input, source_class

pytestmark = pytest.mark.unit


def _frame(rng):
    n = SCHEMA_SAMPLE_ROWS * 3
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=["A", "B", "C", "D"])
    frame["PLAN"] = rng.choice(["basic", "pro"], n).astype(object)
    frame.loc[n - 1, "B"] = np.nan  # a missing value only after the sampled rows
    frame.loc[n - 2, "PLAN"] = None
    frame["CHURNED"] = rng.integers(0, 2, n)
    return frame


def test_schema_and_profile_equal_mlflows_inference_on_the_whole_frame():
    import mlflow.data

    frame = _frame(np.random.default_rng(0))
    n = len(frame)
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


def test_a_summary_added_up_from_batches_says_what_the_whole_frame_says():
    frame = _frame(np.random.default_rng(1))
    features = SimpleNamespace(key="fedcba9876543210" * 4, source={"query": "select 1"})
    summary = FrameSummary()
    for start, stop in ((0, 300), (300, 1200), (1200, len(frame))):  # the sampled rows span two batches
        summary.add(frame.iloc[start:stop])
    assert len(summary.head) == SCHEMA_SAMPLE_ROWS and summary.head.equals(frame.head(SCHEMA_SAMPLE_ROWS))
    streamed = dataset_input(summary, features, None, "scoring").dataset
    whole = dataset_input(frame, features, None, "scoring").dataset
    assert (streamed.schema, streamed.profile, streamed.digest) == (whole.schema, whole.profile, whole.digest)
    assert {c["name"]: c["required"] for c in json.loads(streamed.schema)["mlflow_colspec"]}["B"] is False
