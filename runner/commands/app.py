"""`python -m runner`: compose the Hydra config and run one job (or one job of a multirun)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import hydra
from omegaconf import DictConfig

from .. import config as _config  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from .. import env
from ..console import exit_with
from ..errors import RunnerError

if TYPE_CHECKING:
    from ..job import JobResult
    from ..tracking import Tracker


def conf_dir() -> str:
    """runner's default configs: conf/ at the top of the repo, shipped in the wheel as
    runner/conf (in a checkout, runner/conf is a link to it)."""
    return str(Path(__file__).resolve().parent.parent / "conf")


CONF_DIR = conf_dir()


def run(cfg: DictConfig) -> Optional[float]:
    """The Hydra task: one job; its return value (the headline validation metric) is the
    job's return for Hydra's sweepers."""
    result = task(cfg)
    return result.metrics.get(f"valid_{result.headline}")


def task(cfg: DictConfig) -> JobResult:
    """One job under Hydra (a run, or a job of a multirun); returns its JobResult."""
    from ..console import quiet_libraries
    from ..job import run_job
    from ..secrets import install_log_filter
    from ..tracking import Tracker

    install_log_filter()
    quiet_libraries()
    tracker = Tracker(cfg.tracker)
    result = run_job(cfg, tracker=tracker, parent_run_id=os.environ.get(env.PARENT_RUN_ID))
    _report(result, tracker, cfg)
    return result


def _report(result: JobResult, tracker: Tracker, cfg: DictConfig) -> None:
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
        f"  open the UI: {tracker.ui_command(run_id=result.run_id)}",
    ]
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    try:
        return run(cfg)
    except RunnerError as exc:
        exit_with(exc)
