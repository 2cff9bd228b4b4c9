"""`python -m runner`: compose the Hydra config and run one job (or one sweep job)."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from . import config as _config  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from .errors import RunnerError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("runner")


def run(cfg: DictConfig):
    from .pipeline import run_job
    from .secrets import install_log_filter
    from .tracking import Tracker

    install_log_filter()
    quiet_libraries()
    tracker = Tracker(cfg.tracker)
    parent = os.environ.get("RUNNER_PARENT_RUN_ID")
    result = run_job(cfg, tracker=tracker, parent_run_id=parent)
    _report(result, tracker, cfg)
    return result.metrics.get(f"valid_{result.headline}")


def quiet_libraries() -> None:
    import warnings

    for name in ("snowflake", "urllib3", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Overriding the parameters from Reference Dataset")
    warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")


def _report(result, tracker, cfg) -> None:
    m = result.metrics
    h = result.headline
    f = result.features
    lines = [
        f"runner: run {result.run_id} {result.status} in {result.seconds:.1f}s",
        f"  valid_{h}={m.get('valid_' + h):.4f}  test_{h}={m.get('test_' + h):.4f}  "
        f"best_iteration={int(m['best_iteration'])}",
        f"  features: cache {'hit' if f.cache_hit else 'miss'}, {f.feature_queries} feature queries, "
        f"key {f.key[:16]}{'' if f.warehouse_started else ' (embedded warehouse not started)'}",
        f"  stored in: {tracker.display_uri} (experiment {cfg.tracker.experiment!r})",
        f"  open the UI: {tracker.ui_command()}",
    ]
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig):
    try:
        return run(cfg)
    except RunnerError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        from .secrets import scrub

        print(f"runner: error: {scrub(str(exc))}", file=sys.stderr, flush=True)
        sys.exit(2)
