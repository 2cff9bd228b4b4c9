"""The features as an MLflow dataset input: digest = cache key, source = the warehouse."""

from __future__ import annotations

import functools
import json
from typing import Any, Dict, Optional


@functools.cache
def source_class():
    from mlflow.data.dataset_source import DatasetSource

    class WarehouseSource(DatasetSource):
        """Where features came from: account/database/schema and the query (never credentials)."""

        def __init__(self, info: Dict[str, Any]):
            self.info = dict(info)

        @staticmethod
        def _get_source_type() -> str:
            return "snowflake"

        def load(self, **kwargs):
            raise NotImplementedError("re-run the query in data.* to load these features")

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any):
            raise NotImplementedError

        def to_dict(self) -> Dict[str, Any]:
            return self.info

        @classmethod
        def from_dict(cls, source_dict: Dict[str, Any]):
            return cls(source_dict)

    return WarehouseSource


def fit_source(info: Dict[str, Any]) -> Dict[str, Any]:
    from mlflow.utils.validation import MAX_DATASET_SOURCE_SIZE

    info = dict(info)
    excess = len(json.dumps(info)) - MAX_DATASET_SOURCE_SIZE
    if excess > 0:
        info["query"] = info["query"][: max(0, len(info["query"]) - excess - 40)] + "...[truncated]"
    return info


def dataset_digest(features) -> str:
    """The digest of the dataset input of features (a FeatureSet): its cache key's first 36
    characters (MLflow's limit)."""
    return features.key[:36]


def dataset_input(frame, features, targets: Optional[str], context: str = "training"):
    """The DatasetInput entity of a frame pulled as `features` (a FeatureSet); targets: the
    label column (None: rows scored, not trained on)."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
        frame,
        source=source_class()(fit_source(features.source)),
        targets=targets,
        name=f"features-{features.key[:12]}",
        digest=dataset_digest(features),
    )
    return DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", context)])
