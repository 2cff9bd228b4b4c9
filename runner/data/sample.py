"""data.sample: a sample of the feature result, drawn by the warehouse in the feature query.

A row is in the sample by a hash of its entity key and the seed, computed in the warehouse
(Snowflake's HASH): the same seed gives the same rows on every run, whatever order the rows
come in or plan the query gets, and a different seed other rows. `fraction` keeps each row
whose bucket, ABS(HASH(key, seed)) % 10^9, is below fraction x 10^9; `rows` takes the rows of
the lowest buckets (the key breaks ties). So the samples of one seed are nested: a smaller
one is part of a larger one. Snowflake's own SAMPLE clause is not used: it takes a SEED only
on a table, not on a view or a query (the feature definition often is one), and none with a
number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional

from ..errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

BUCKETS = 1_000_000_000


@dataclass(frozen=True)
class Sample:
    seed: int
    fraction: Optional[float] = None
    rows: Optional[int] = None

    @property
    def threshold(self) -> int:
        """The buckets a fraction keeps: those below this (at least one)."""
        return max(1, round((self.fraction or 0.0) * BUCKETS))

    def describe(self) -> Dict[str, Any]:
        """The sample as the dataset's source records it: {fraction|rows, seed}."""
        size = {"fraction": self.fraction} if self.fraction is not None else {"rows": self.rows}
        return {**size, "seed": self.seed}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def sample_of(data_cfg: DictConfig) -> Optional[Sample]:
    """data.sample checked: None for all rows (null, or neither fraction nor rows set)."""
    node = data_cfg.get("sample")
    if node is None:
        return None
    if not hasattr(node, "get"):  # the schema types it; a config built without the schema may not
        raise ConfigError(
            f"data.sample must be null or a mapping with fraction or rows, and seed "
            f"(data.sample.fraction=0.1 data.sample.seed=3), got {node!r}"
        )
    fraction, rows, seed = node.get("fraction"), node.get("rows"), node.get("seed", 0)
    if seed is None:
        seed = 0
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"data.sample.seed must be a whole number, got {seed!r}")
    if fraction is not None and rows is not None:
        raise ConfigError(
            f"data.sample: set data.sample.fraction or data.sample.rows, not both (got fraction={fraction!r}, "
            f"rows={rows!r}; set the other to null)"
        )
    if fraction is not None:
        if not _number(fraction) or not 0 < fraction < 1:
            raise ConfigError(f"data.sample.fraction must be in (0, 1), got {fraction!r} (data.sample=null: all rows)")
        return Sample(seed=seed, fraction=float(fraction))
    if rows is not None:
        if not isinstance(rows, int) or isinstance(rows, bool) or rows <= 0:
            raise ConfigError(f"data.sample.rows must be a positive whole number of rows, got {rows!r}")
        return Sample(seed=seed, rows=rows)
    return None


def sample_sql(sql: str, key: str, sample: Sample) -> str:
    """`sql` (one statement) restricted to the sample; `key`: data.entity_key as written."""
    bucket = f"abs(hash({key}, {sample.seed})) % {BUCKETS}"
    if sample.fraction is not None:
        return f"select * from ({sql}) where {bucket} < {sample.threshold}"
    return f"select * from ({sql}) order by {bucket}, {key} limit {sample.rows}"


def sampled(frame: Any, data_cfg: DictConfig) -> Any:
    """The frame restricted to data.sample in the warehouse (the frame itself: no sample).

    A one-statement frame is wrapped as SQL text, as in_key_order does (Snowpark's filter
    would describe the query first: one more round trip); a frame whose temporary objects
    come first goes through Snowpark's DataFrame API, to the same SQL."""
    sample = sample_of(data_cfg)
    if sample is None:
        return frame
    from .definition import check_identifier

    key = str(data_cfg.entity_key)
    check_identifier(key, "data.entity_key")
    queries = frame.queries
    if len(queries["queries"]) == 1 and not queries.get("post_actions"):
        return frame.session.sql(sample_sql(queries["queries"][0], key, sample))
    from snowflake.snowpark.functions import abs as abs_
    from snowflake.snowpark.functions import col, hash, lit

    bucket = abs_(hash(col(key), lit(sample.seed))) % lit(BUCKETS)
    if sample.fraction is not None:
        return frame.filter(bucket < lit(sample.threshold))
    return frame.sort(bucket, col(key)).limit(sample.rows)
