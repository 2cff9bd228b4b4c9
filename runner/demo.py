"""The demo's feature code under the name configs and logged runs record
(`data.features._target_: runner.demo.churn_features`); it lives in runner.embedded."""

from .embedded.demo import churn_features, seed_demo, seed_sql
from .embedded.synthetic import seed_synthetic, synthetic_sql

__all__ = ["churn_features", "seed_demo", "seed_sql", "seed_synthetic", "synthetic_sql"]
