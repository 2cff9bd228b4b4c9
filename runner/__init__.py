"""runner: declarative experiments from warehouse features to MLflow.

import runner
result = runner.run(["model.params.num_leaves=63"])
summary = runner.sweep(["sweep=lightgbm", "hydra.sweeper.n_trials=10"])
"""

import os as _os

__version__ = "0.1.0"

# MLflow 3 sends usage telemetry to an address on the internet from background threads
# unless told not to. Experiment metadata stays in the tracking server we name, so runner
# turns it off; MLFLOW_DISABLE_TELEMETRY=false in the environment turns it back on.
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from .api import SweepSummary, run, sweep  # noqa: E402  (light: the calls import the heavy parts)
from .errors import CacheError, ConfigError, DataError, RunnerError, TrackingError, WarehouseError  # noqa: E402

__all__ = [
    "CacheError",
    "ConfigError",
    "DataError",
    "RunnerError",
    "SweepSummary",
    "TrackingError",
    "WarehouseError",
    "__version__",
    "run",
    "sweep",
]
