"""runner/tracking/values.py: learning curves thinned to what one log batch holds, and a real
LightGBM training's per-round validation metric (scikit-learn's breast_cancer)."""

from __future__ import annotations

import pytest

from runner.tracking.values import BATCH_ENTITIES, CURVE_POINTS, curve_history, thin_curve

pytestmark = pytest.mark.unit


def test_batch_limit_is_mlflows():
    from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH

    assert BATCH_ENTITIES == MAX_ENTITIES_PER_BATCH


def test_short_curves_are_whole_and_long_ones_thinned_evenly_with_first_best_and_last():
    assert thin_curve([0.5, 0.6, 0.7], best=2) == [(1, 0.5), (2, 0.6), (3, 0.7)]
    values = [r / 1000 for r in range(1, 501)]  # round r has value r / 1000
    points = thin_curve(values, best=237)
    rounds = [r for r, _ in points]
    assert len(points) <= CURVE_POINTS and rounds == sorted(set(rounds))
    assert rounds[0] == 1 and rounds[-1] == 500 and 237 in rounds
    assert all(v == r / 1000 for r, v in points)  # each point is its own round's value
    gaps = [b - a for a, b in zip(rounds, rounds[1:], strict=False)]
    assert max(gaps) <= 2 * (500 // (CURVE_POINTS - 2)) + 1  # even, but for the best's place


def test_curves_share_the_room_left_in_the_batch():
    curves = {"valid_auc": [0.9] * 500, "valid_binary_logloss": [0.3] * 500}
    history = curve_history(curves, best=10, room=120)
    assert set(history) == {"valid_auc_by_round", "valid_binary_logloss_by_round"}
    assert sum(len(p) for p in history.values()) <= 120
    assert curve_history(curves, best=10, room=4) == {}  # no room: no curves (a warning), not a 4th request
    assert curve_history({}, best=0, room=1000) == {}


def test_a_training_records_the_validation_metric_of_every_round():
    import lightgbm as lgb
    import pyarrow as pa
    from omegaconf import OmegaConf
    from sklearn.datasets import load_breast_cancer

    from runner.config import ModelConfig
    from runner.model import prepare, train

    frame = load_breast_cancer(as_frame=True).frame
    frame.insert(0, "ID", range(len(frame)))
    data = OmegaConf.create({"entity_key": "ID", "label": "target", "drop": [], "split": {"valid": 0.2, "test": 0.1}})
    data.split.salt = "runner-split-v1"
    model = OmegaConf.structured(ModelConfig)
    model.num_boost_round = 40
    model.early_stopping_rounds = 10
    prepared = prepare(pa.Table.from_pandas(frame, preserve_index=False), data, "binary")
    result = train(prepared, model)
    curve = result.curves["valid_auc"]
    assert isinstance(result.booster, lgb.Booster)
    # one value a round: up to the best round and the early-stopping patience after it
    assert len(curve) == min(result.best_iteration + model.early_stopping_rounds, model.num_boost_round)
    assert curve[result.best_iteration - 1] == pytest.approx(result.metrics["valid_auc"])
