"""Job: one run end to end (features from the per-process memo, LightGBM, one MLflow run),
with the tags every run records and the hooks a sweeper adds."""

from .hooks import JobHooks
from .memo import MEMO, FeatureMemo, prefetch, prepared_data
from .run import JobResult, log_lineage, run_job
from .tags import CODE_STATE, base_tags, overrides

__all__ = [
    "CODE_STATE",
    "MEMO",
    "FeatureMemo",
    "JobHooks",
    "JobResult",
    "base_tags",
    "log_lineage",
    "overrides",
    "prefetch",
    "prepared_data",
    "run_job",
]
