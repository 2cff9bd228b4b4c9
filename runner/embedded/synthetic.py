"""The synthetic data set (data=synthetic, the benchmark's workload): `rows` x `n_features`
float features in [0, 1) and a binary label Y from a linear combination of the first ten
features, one interaction and uniform noise, thresholded at zero (about half positives).
Plain Snowflake SQL only (generator, seq8, hash), so the same script runs on a real account;
fixed for a seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .demo import run_seed

if TYPE_CHECKING:
    from omegaconf import DictConfig

_SYNTH_WEIGHTS = (3.0, -2.5, 2.0, -1.5, 1.2, -1.0, 0.8, -0.6, 0.5, -0.4)
_SYNTH_SCALE = 1_000_003  # a prime: hash % n is close to uniform


def _synth_feature(j: int) -> str:
    # % n before abs() and the ::int cast before any arithmetic: fakesnow's hash is unsigned.
    return f"(abs(hash(ID, {{seed}}, {j}) % {_SYNTH_SCALE})::int / {float(_SYNTH_SCALE)})::float as F{j}"


def synthetic_sql(database: str, schema: str, demo: DictConfig) -> list[str]:
    n = int(demo.n_features)
    rows = int(demo.rows)
    if n < 2 or rows < 10:
        raise ConfigError(
            f"data.demo.n_features must be >= 2 and data.demo.rows >= 10 for the synthetic "
            f"data set, got n_features={n}, rows={rows}"
        )
    weights = _SYNTH_WEIGHTS[:n]
    columns = ",\n       ".join(_synth_feature(j) for j in range(1, n + 1))
    signal = " + ".join(f"({w}) * (F{j} - 0.5)" for j, w in enumerate(weights, 1))
    signal += " + 2.0 * (F1 - 0.5) * (F2 - 0.5)"
    noise = f"(abs(hash(ID, {{seed}}, 0) % {_SYNTH_SCALE})::int / {float(_SYNTH_SCALE)} - 0.5) * 3.0"
    script = [
        "create database if not exists {db}",
        "create schema if not exists {db}.{schema}",
        f"""create or replace table {{db}}.{{schema}}.SYNTH as
select s.*, iff({signal} + {noise} > 0, 1, 0) as Y
from (select ID,
       {columns}
      from (select seq8() + 1 as ID from table(generator(rowcount => {rows})))) s""",
    ]
    return [stmt.format(db=database, schema=schema, seed=int(demo.seed)) for stmt in script]


def seed_synthetic(session: Any, database: str, schema: str, demo: DictConfig) -> str:
    """Create table SYNTH (ID, F1..Fn, Y); return a digest of the script, the data's version."""
    return run_seed(session, database, schema, synthetic_sql(database, schema, demo))
