"""The end of a sweep, prepared while its last trials run (issue 26 part 5).

Once no trial is left to start, one background thread imports what the summary draws with
(matplotlib, Optuna's plots, scikit-learn's forest for the param importances and its
metrics for the report) and what saving the best model loads (MLflow's pyfunc modules,
the map of installed distributions its requirement check builds): about 2 s, so the end does
not wait for them. Pure Python starts no OpenMP threads, so the trials still running keep
LightGBM's thread pool to themselves. The end itself draws its charts in forked processes
while it saves and registers the model (runner/report/forked.py).

Tried and dropped (benchmarks/README.md): saving the best-so-far's model folder and drawing
its report in the background as the best changes. LightGBM's predictions in a second
long-lived thread start a second OpenMP pool; with more OpenMP threads than cores libgomp
stops spinning and the trials' rounds wait on futexes (trials 3.5x slower). In a thread per
step, or only during the last trial, the work moved into the trial loop what it took off
the end: on 2 cores LightGBM leaves too little idle.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ._budget import Budget

log = logging.getLogger("runner.sweep")


class Ahead:
    def __init__(self, budget: Budget, warm: Callable[[], Any]) -> None:
        self.budget = budget
        self.warm = warm
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="runner-ahead", daemon=True)

    def start(self) -> Ahead:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop (after an import in progress) and wait for it."""
        self._stop.set()
        self.budget.wake()
        self._thread.join()

    def _work(self) -> None:
        while not self._stop.is_set():
            c = self.budget.counts()
            if c["complete"] and c["finished"] + c["running"] >= self.budget.sweep.limit:
                try:
                    self.warm()
                except Exception as exc:  # the summary imports them itself, and says what failed
                    log.debug("ahead: imports: %s", exc)
                return
            self.budget.wait(1.0)
