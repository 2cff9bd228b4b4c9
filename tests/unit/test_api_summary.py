"""runner/api.py: what runner.sweep returns, from either sweeper's return value."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from runner.api import _summary
from runner.job import JobResult

pytestmark = pytest.mark.unit


def _job(run_id: str, auc: float, leaves: int) -> SimpleNamespace:
    result = JobResult(
        run_id,
        {"valid_auc": auc},
        features=None,
        headline="auc",
        seconds=1.0,  # type: ignore[arg-type]
        parent_run_id="P",
        overrides=["data=synthetic", f"model.params.num_leaves={leaves}"],
    )
    return SimpleNamespace(return_value=result)


def test_grid_summary_picks_the_best_job_and_the_overrides_that_varied():
    raw = [[_job("a", 0.81, 7), _job("b", 0.86, 15), _job("c", 0.84, 31)]]
    summary = _summary(raw)
    assert (summary.parent_run_id, summary.best_run_id, summary.best_value) == ("P", "b", 0.86)
    assert summary.best_params == {"model.params.num_leaves": "15"} and summary.metric == "valid_auc"


def test_optuna_summary_is_passed_through():
    raw = {
        "study_name": "s",
        "parent_run_id": "P",
        "metric": "valid_rmse",
        "best_trial": 3,
        "best_values": [0.5],
        "best_params": {"x": 1},
        "best_run_id": "r3",
    }
    summary = _summary(raw)
    assert (summary.best_value, summary.best_trial, summary.best_params, summary.best_run_id) == (
        0.5,
        3,
        {"x": 1},
        "r3",
    )


def test_a_sweep_that_ran_nothing():
    assert _summary([]).best_value is None and _summary({"parent_run_id": "P"}).best_value is None
