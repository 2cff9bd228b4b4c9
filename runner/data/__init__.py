"""Data: warehouse sessions (embedded emulator or Snowflake), the feature definition,
the pull into the content-addressed cache, and the entity-hash split."""

from .cache import FeatureCache, cache_key
from .definition import MATERIALIZED_PREFIX, build_frame, check_identifier, find_column, frame_sql, validate
from .featureset import FeatureSet
from .offline import config_digest, embedded_features, offline_features
from .pull import load_features
from .split import split_labels
from .sql import snapshot_timestamp, source_tables, time_travel_sql
from .warehouse import Warehouse, open_warehouse

__all__ = [
    "MATERIALIZED_PREFIX",
    "FeatureCache",
    "FeatureSet",
    "Warehouse",
    "build_frame",
    "cache_key",
    "check_identifier",
    "config_digest",
    "embedded_features",
    "find_column",
    "frame_sql",
    "load_features",
    "offline_features",
    "open_warehouse",
    "snapshot_timestamp",
    "source_tables",
    "split_labels",
    "time_travel_sql",
    "validate",
]
