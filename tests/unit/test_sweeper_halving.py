"""hydra_plugins/.../_halving.py: the rungs of the halving strategy, when trials train on all rows,
and one trial's rungs on real data (scikit-learn's breast_cancer repeated to 56,900 rows)
against an in-memory Optuna study with the strategy's own pruner."""

from __future__ import annotations

import optuna
import pandas as pd
import pyarrow as pa
import pytest
from omegaconf import OmegaConf
from sklearn.datasets import load_breast_cancer

from hydra_plugins.runner_optuna_sweeper._halving import (
    MIN_RUNG_ROWS,
    Halving,
    RungTrainer,
    halving_from_env,
    pruner,
    rungs,
    why_all_rows,
)
from runner.config import ModelConfig
from runner.errors import ConfigError
from runner.model import prepare, train

pytestmark = pytest.mark.unit


def test_rungs_grow_by_the_factor_and_never_go_below_the_smallest_rung():
    assert rungs(160_000, 1 / 16, 4) == [1 / 16, 1 / 4, 1.0]
    assert rungs(160_000, 1 / 64, 4) == [1 / 64, 1 / 16, 1 / 4, 1.0]
    assert rungs(16 * MIN_RUNG_ROWS - 1, 1 / 16, 4) == [1 / 4, 1.0]  # 1/16 would be < MIN_RUNG_ROWS rows
    assert rungs(MIN_RUNG_ROWS, 1 / 16, 4) == [1.0]  # too few rows: all rows
    assert rungs(100_000, 0.3, 2) == [0.5, 1.0]


def test_what_trains_on_all_rows_and_why():
    assert why_all_rows("halving", "NopPruner", "TPESampler", 1, False) is None
    assert why_all_rows("plain", "NopPruner", "TPESampler", 1, False) == ""
    assert why_all_rows("fast", "NopPruner", "TPESampler", 1, False) == ""
    assert "hydra/sweeper/pruner=MedianPruner" in why_all_rows("halving", "MedianPruner", "TPESampler", 1, False)
    assert "grid" in why_all_rows("halving", "NopPruner", "GridSampler", 1, False)
    assert "several objectives" in why_all_rows("halving", "NopPruner", "TPESampler", 2, False)
    assert "custom_search_space" in why_all_rows("halving", "NopPruner", "TPESampler", 1, True)
    with pytest.raises(ConfigError, match="hydra.sweeper.strategy must be one of fast, halving, plain, got 'quick'"):
        why_all_rows("quick", "NopPruner", "TPESampler", 1, False)
    with pytest.raises(ConfigError, match=r"hydra.sweeper.min_fraction must be in \(0, 1\), got 1.5"):
        Halving(1.5, 4).check()
    with pytest.raises(ConfigError, match="hydra.sweeper.reduction_factor must be >= 2, got 1"):
        Halving(0.1, 1).check()
    assert halving_from_env("") is None and halving_from_env("0.0625,4") == Halving(0.0625, 4)


@pytest.fixture(scope="module")
def prepared():
    frame = load_breast_cancer(as_frame=True).frame
    big = pd.concat([frame] * 100, ignore_index=True)  # 56,900 rows, ~40,000 to train: rungs of 1/16, 1/4
    big.insert(0, "ID", range(len(big)))
    cfg = OmegaConf.create({"entity_key": "ID", "label": "target", "drop": [], "split": {"valid": 0.2, "test": 0.1}})
    cfg.split.salt = "runner-split-v1"
    return prepare(pa.Table.from_pandas(big, preserve_index=False), cfg, "binary")


def _model(**params):
    model = OmegaConf.structured(ModelConfig)
    model.num_boost_round = 20
    for k, v in params.items():
        model.params[k] = v
    return model


def test_a_trial_climbs_its_rungs_and_reports_each_to_the_study(prepared):
    study = optuna.create_study(direction="maximize", pruner=pruner(4))
    trial = study.ask()
    history: dict = {}
    result = RungTrainer(trial, Halving(1 / 16, 4), "valid_auc")(prepared, _model(), (), history)
    n = len(prepared.parts["train"].y)
    points = history["valid_auc_by_train_rows"]
    assert [p[0] for p in points] == [round(n / 16), round(n / 4), n]
    assert study.trials[0].intermediate_values == {1: points[0][1], 4: points[1][1]}
    assert points[-1][1] == result.metrics["valid_auc"]
    # the all-rows rung is the plain training of the same configuration
    assert result.metrics == train(prepared, _model()).metrics
    # a rung's evaluation is re-created by model.row_fraction (and model.row_seed)
    again = train(prepared, OmegaConf.merge(_model(), {"row_fraction": 1 / 4}))
    assert again.metrics["valid_auc"] == points[1][1]


def test_a_configuration_worse_than_the_rest_of_its_rung_stops_there(prepared):
    study = optuna.create_study(direction="maximize", pruner=pruner(4))
    for _ in range(4):  # four good configurations reach the first rung
        RungTrainer(study.ask(), Halving(1 / 16, 4), "valid_auc")(prepared, _model(), (), {})
    trainer = RungTrainer(study.ask(), Halving(1 / 16, 4), "valid_auc")
    with pytest.raises(optuna.TrialPruned, match=r"stopped after 0.0625 of the training rows"):
        trainer(prepared, _model(num_leaves=2, learning_rate=0.001, min_child_samples=5000), (), {})
    assert trainer.fraction == 1 / 16
