"""What a pull hands on: the feature table and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List


@dataclass
class FeatureSet:
    table: Any  # pyarrow.Table
    key: str
    cache_hit: bool
    sql: str
    source: Dict[str, Any]
    path: str
    query_ids: List[str] = field(default_factory=list)
    feature_queries: int = 0
    seconds: float = 0.0
    # Served from the cache index because the warehouse was unreachable (version not checked).
    offline: bool = False
    # False when an embedded-warehouse config was served from the cache without starting it.
    warehouse_started: bool = True

    def take_table(self) -> Any:
        """The pulled table, handed over: the FeatureSet keeps no reference, so the split
        can be built from it without another copy of the rows staying in memory."""
        table, self.table = self.table, None
        return table
