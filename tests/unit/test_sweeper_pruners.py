"""The sweeper's pruner options (hydra_plugins/.../config.py): no pruning by default (the
comparison behind it: benchmarks/pruning.py), every named option still builds the pruner it names."""

from __future__ import annotations

import optuna
import pytest
from hydra import compose, initialize_config_dir

import runner.config  # noqa: F401 - registers runner_schema
from hydra_plugins.runner_optuna_sweeper._samplers import build
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def _pruner(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose("config", overrides=["sweep=lightgbm", *overrides], return_hydra_config=True)
    return build("pruner", cfg.hydra.sweeper.pruner)


def test_the_default_sweep_does_not_prune():
    pruner, desc = _pruner()
    assert type(pruner) is optuna.pruners.NopPruner and desc == {"name": "NopPruner", "options": {}}


def test_median_keeps_its_settings_when_asked_for():
    pruner, desc = _pruner("hydra/sweeper/pruner=median")
    assert type(pruner) is optuna.pruners.MedianPruner
    assert desc["options"] == {"n_startup_trials": 5, "n_warmup_steps": 10, "interval_steps": 1, "n_min_trials": 1}
    _, later = _pruner("hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_warmup_steps=50")
    assert later["options"]["n_warmup_steps"] == 50


def test_warmup_can_follow_the_model_config():
    # A warm-up in rounds taken from the task's config (resolved when the pruner is built).
    _, desc = _pruner(
        "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_warmup_steps=${model.early_stopping_rounds}"
    )
    assert desc["options"]["n_warmup_steps"] == 50


@pytest.mark.parametrize(
    "option, cls",
    [
        ("nop", optuna.pruners.NopPruner),
        ("none", optuna.pruners.NopPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
        ("patient", optuna.pruners.PatientPruner),
        ("wilcoxon", optuna.pruners.WilcoxonPruner),
    ],
)
def test_every_option_builds_its_pruner(option, cls):
    pruner, _ = _pruner(f"hydra/sweeper/pruner={option}")
    assert type(pruner) is cls


def test_patient_wraps_a_median_pruner():
    pruner, desc = _pruner("hydra/sweeper/pruner=patient", "hydra.sweeper.pruner.patience=3")
    assert type(pruner._wrapped_pruner) is optuna.pruners.MedianPruner and pruner._patience == 3
    assert desc["options"]["wrapped_pruner"]["_target_"] == "optuna.pruners.MedianPruner"
