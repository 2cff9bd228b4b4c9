"""The OpenMP thread count of a job's thread, so that LightGBM's stays the job's.

LightGBM keeps one thread count for the whole process (LGBM_DEFAULT_NUM_THREADS), set by
every C call that takes parameters: a call's num_threads, or with none or 0, "all cores",
read then as the calling thread's OpenMP default (omp_get_max_threads). It sizes per-thread
buffers from that count when an object is made and reads it again when a loop starts. A
sweep runs trials in threads of one process, each with num_threads=1 on 2 cores: a call
without num_threads in one (LightGBM's own Dataset.get_params drops it, so every Dataset
built from a Sequence or as a subset is such a call) turns the other's next loop into two
threads over a buffer sized for one. A 2,000,000-row sweep died with SIGSEGV that way, and
two threads, one predicting without num_threads while the other made boosters with 1,
crashed within seconds. With the calling thread's OpenMP default set to the job's count
(OpenMP keeps it per thread), "all cores" in that thread means the job's count, so every
value LightGBM's global takes gives each job the count it sized for.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional

_controller: Optional[Any] = None
_lock = threading.Lock()


@contextmanager
def job_threads(num_threads: int) -> Iterator[None]:
    """Within: this thread's OpenMP default is num_threads (unchanged when it is 0 or less:
    all cores, LightGBM's default, and the thread's own default already)."""
    if num_threads <= 0:
        yield
        return
    global _controller
    from threadpoolctl import ThreadpoolController

    with _lock:  # the loaded libraries, found once (LightGBM's OpenMP is loaded by now)
        if _controller is None:
            import lightgbm  # noqa: F401

            _controller = ThreadpoolController()
    with _controller.limit(limits=num_threads, user_api="openmp"):
        yield
