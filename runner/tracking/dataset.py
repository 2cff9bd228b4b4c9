"""The features as an MLflow dataset input: digest = cache key, source = the warehouse."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Union

from ..names import MlflowTag

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.data.dataset_source import DatasetSource
    from mlflow.entities import DatasetInput

    from ..data.featureset import FeatureSet
    from ..score.features import ScoringFeatures


@functools.cache
def source_class() -> Callable[[Dict[str, Any]], DatasetSource]:
    from mlflow.data.dataset_source import DatasetSource

    class WarehouseSource(DatasetSource):
        """Where features came from: account/database/schema and the query (never credentials)."""

        def __init__(self, info: Dict[str, Any]) -> None:
            self.info = dict(info)

        @staticmethod
        def _get_source_type() -> str:
            return "snowflake"

        def load(self, **kwargs: Any) -> Any:
            raise NotImplementedError("re-run the query in data.* to load these features")

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> DatasetSource:
            raise NotImplementedError

        def to_dict(self) -> Dict[str, Any]:
            return self.info

        @classmethod
        def from_dict(cls, source_dict: Dict[str, Any]) -> DatasetSource:
            return cls(source_dict)

    return WarehouseSource


def fit_source(info: Dict[str, Any]) -> Dict[str, Any]:
    from mlflow.utils.validation import MAX_DATASET_SOURCE_SIZE

    info = dict(info)
    excess = len(json.dumps(info)) - MAX_DATASET_SOURCE_SIZE
    if excess > 0:
        info["query"] = info["query"][: max(0, len(info["query"]) - excess - 40)] + "...[truncated]"
    return info


def dataset_digest(features: Union[FeatureSet, ScoringFeatures]) -> str:
    """The digest of the dataset input of features (a FeatureSet): its cache key's first 36
    characters (MLflow's limit)."""
    return features.key[:36]


# Rows MLflow infers the schema's column types from: mlflow.data.from_pandas checks every value
# of the whole frame in Python (~11 s for 160,000 x 51 here); types come from these rows and
# "required" (no missing value) from the whole column.
SCHEMA_SAMPLE_ROWS = 1000


class FrameSummary:
    """What a dataset input says of a frame: its first SCHEMA_SAMPLE_ROWS rows (the types),
    which columns are never missing, its rows and elements. Built from a whole frame
    (`of`) or from a stream of frames of the same columns (`add` each)."""

    def __init__(self) -> None:
        self.head: Any = None
        self.complete: Dict[str, bool] = {}
        self.rows = 0
        self.elements = 0

    @classmethod
    def of(cls, frame: pd.DataFrame) -> FrameSummary:
        summary = cls()
        summary.add(frame)
        return summary

    def add(self, frame: pd.DataFrame) -> None:
        """One more frame (pandas) of the rows."""
        import pandas as pd

        if self.head is None:  # a copy: a view would keep the whole first batch alive
            self.head = frame.head(SCHEMA_SAMPLE_ROWS).copy()
        elif len(self.head) < SCHEMA_SAMPLE_ROWS:
            self.head = pd.concat([self.head, frame.head(SCHEMA_SAMPLE_ROWS - len(self.head))])
        for name, ok in frame.notna().all().items():
            self.complete[name] = self.complete.get(name, True) and bool(ok)
        self.rows += len(frame)
        self.elements += int(frame.size)


def dataset_input(
    frame: Union[pd.DataFrame, FrameSummary],
    features: Union[FeatureSet, ScoringFeatures],
    targets: Optional[str],
    context: str = "training",
) -> DatasetInput:
    """The DatasetInput entity of a frame pulled as `features` (a FeatureSet); frame: a pandas
    DataFrame or a FrameSummary of the rows; targets: the label column (None: rows scored, not
    trained on). Its schema and profile describe the whole frame; see SCHEMA_SAMPLE_ROWS."""
    import mlflow.data
    from mlflow.entities import Dataset, DatasetInput, InputTag

    summary = frame if isinstance(frame, FrameSummary) else FrameSummary.of(frame)
    spec = mlflow.data.from_pandas(  # type: ignore[attr-defined]
        summary.head,
        source=source_class()(fit_source(features.source)),
        targets=targets,
        name=f"features-{features.key[:12]}",
        digest=dataset_digest(features),
    ).to_dict()
    schema = json.loads(spec["schema"]) if spec.get("schema") else None
    if schema:
        for column in schema.get("mlflow_colspec", []):
            if column.get("name") in summary.complete:
                column["required"] = summary.complete[column["name"]]
    entity = Dataset(
        name=spec["name"],
        digest=spec["digest"],
        source_type=spec["source_type"],
        source=spec["source"],
        schema=json.dumps(schema) if schema else None,
        profile=json.dumps({"num_rows": summary.rows, "num_elements": summary.elements}),
    )
    return DatasetInput(entity, [InputTag(MlflowTag.DATA_CONTEXT, context)])
