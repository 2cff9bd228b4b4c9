"""runner/model/threads.py: two jobs' LightGBM calls in threads of one process.

The race runner's sweeps had: one thread makes boosters with num_threads=1 (a trial
starting) while another predicts without num_threads (as runner's trials did, and as every
Dataset LightGBM builds from a Sequence does). Without job_threads this process died with
SIGSEGV in 5 runs of 5, each within 3 s; inside job_threads it must live through 6 s.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

RACE = textwrap.dedent(
    """
    import threading, time
    import numpy as np, lightgbm as lgb
    from runner.model.threads import job_threads

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50_000, 20)); y = (X[:, 0] + rng.normal(size=len(X)) > 0).astype(float)
    params = {"verbosity": -1, "num_threads": 1, "objective": "binary"}
    data = lgb.Dataset(X, y, params=params).construct()
    model = lgb.train(params, data, 20)
    stop = threading.Event()
    calls = []

    def boosters():
        with job_threads(1):
            t = time.monotonic()
            while time.monotonic() - t < 6:
                lgb.train(params, data, 1)
        stop.set()

    def predictions():
        with job_threads(1):
            while not stop.is_set():
                model.predict(X[:2000])  # no num_threads: LightGBM's count back to "all cores"
                calls.append(1)

    threads = [threading.Thread(target=boosters), threading.Thread(target=predictions)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print("predictions", len(calls))
    """
)


def test_a_job_keeps_its_thread_count_whatever_another_thread_asks_lightgbm_for():
    done = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert int(done.stdout.split()[-1]) > 100  # the two threads did race


def test_no_count_leaves_the_thread_as_it_was():
    import lightgbm  # noqa: F401 - its OpenMP loaded
    from threadpoolctl import threadpool_info

    from runner.model.threads import job_threads

    def openmp():
        return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"}

    before = openmp()
    assert before
    with job_threads(0):
        assert openmp() == before
    with job_threads(7):
        assert set(openmp().values()) == {7}
    assert openmp() == before
