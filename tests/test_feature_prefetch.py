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
