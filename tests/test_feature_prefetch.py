"""The sweep's feature prefetch (runner/job/memo.py): pulled once in the background, reported
by the first job that uses it, errors raised by that job; Datasets go to one thread only."""

from __future__ import annotations

import threading

import pytest
from hydra import compose, initialize_config_dir

import runner.config  # noqa: F401  (registers the schema)
from runner import job as pipeline
from runner.errors import ConfigError
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _cfg(tmp_path, *extra):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose(
            config_name="config",
            overrides=[
                "data=synthetic",
                "data.demo.rows=600",
                "data.demo.n_features=4",
                "data.split.test=0.05",
                f"data.cache_dir={tmp_path / 'cache'}",
                *extra,
            ],
        )


@pytest.fixture(autouse=True)
def _fresh_memo():
    pipeline.MEMO.reset()
    yield
    pipeline.MEMO.reset()


def test_first_job_reports_the_prefetched_pull(tmp_path):
    cfg = _cfg(tmp_path)
    pipeline.prefetch(cfg, query_tag="runner test").join()
    seen = {}
    first_done = threading.Event()
    both_done = threading.Barrier(2, timeout=60)

    def job(name):
        if name == "second":
            first_done.wait(60)
        seen[name] = pipeline.prepared_data(cfg)
        first_done.set()
        both_done.wait()  # two trial threads alive at once

    threads = [threading.Thread(target=job, args=(name,)) for name in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first, prepared1 = seen["first"]
    second, prepared2 = seen["second"]
    assert (first.feature_queries, first.cache_hit) == (1, False)
    assert (second.feature_queries, second.cache_hit, second.query_ids) == (0, True, [])
    assert first.key == second.key
    # The prefetch built the Datasets; the first thread to ask owns them, the next builds its own.
    assert len(prepared1.datasets) == 1 and prepared2.datasets == {}
    assert prepared1.parts is prepared2.parts  # the split itself is shared, not copied


def test_prefetch_error_is_raised_by_the_job(tmp_path):
    cfg = _cfg(tmp_path, "data.demo.dataset=nope")
    pipeline.prefetch(cfg).join()
    with pytest.raises(ConfigError, match="data.demo.dataset must be one of"):
        pipeline.prepared_data(cfg)
    # Raised once: a later job tries again (and fails again, by itself).
    assert not pipeline.MEMO.errors
    with pytest.raises(ConfigError, match="data.demo.dataset must be one of"):
        pipeline.prepared_data(cfg)


@pytest.mark.parametrize("batched", [False, True])
def test_a_table_read_in_batches_sweeps_one_trial_at_a_time(batched, tmp_path, monkeypatch, capsys):
    """n_jobs null: trials at once split the cores, unless the prefetch finds a training table
    too large to keep (KEEP_BYTES, set to 0 here): then one trial at a time with every core
    (each concurrent trial would bin its own copy of the table)."""
    import importlib

    from mlflow import MlflowClient

    import runner

    if batched:
        monkeypatch.setattr(importlib.import_module("runner.model.prepare"), "KEEP_BYTES", 0)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.chdir(tmp_path)
    summary = runner.sweep(
        [
            "sweep=lightgbm",
            "data=synthetic",
            "data.demo.rows=2000",
            "data.demo.n_features=4",
            f"data.cache_dir={tmp_path / 'cache'}",
            "model.num_boost_round=10",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.seed=0",
        ]
    )
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    parent = client.get_run(summary.parent_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{summary.parent_run_id}'")
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    threads = {c.data.params["model.params.num_threads"] for c in children}
    said = "one trial at a time with every core" in capsys.readouterr().err
    if batched:
        assert (parent.data.tags["optuna.n_jobs"], threads, said) == ("1", {"0"}, True)
    else:
        assert (parent.data.tags["optuna.n_jobs"], threads, said) == ("2", {"1"}, False)
