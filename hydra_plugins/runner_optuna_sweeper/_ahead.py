"""The end of a sweep, done ahead while trials run (issue 26 part 5).

One background thread, once a trial has completed, imports what the summary draws with
(matplotlib, Optuna's plots, scikit-learn's forest for the param importances) and, each time
this process's best trial changes, saves that trial's model folder and draws its report's
charts in memory. The summary then finds them ready: it stamps the model's id into the
folder and uploads it, and uploads the charts (only the final best is logged, registered and reported, as before). A
best that is superseded before the end costs CPU here, not requests.

LightGBM's trials release the GIL while they train; on this sort of table they leave part
of the second core idle, which this thread uses. Work for a best that is already superseded
is skipped (the latest best is taken when the thread is free). A failure here is a debug
line: the summary then does the work itself, as it would without this thread.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from ._liveness import is_mine

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from runner.tracking import Tracker

    from ._budget import Budget
    from ._compose import Composer
    from ._report import TrialReport

log = logging.getLogger("runner.sweep")


@dataclass
class Ready:
    """What is prepared for one trial: its model folder (no model id yet) and its report."""

    number: int
    model: Optional[Path] = None
    report: Optional[TrialReport] = None


class Ahead:
    def __init__(
        self,
        budget: Budget,
        tracker: Tracker,
        task_cfg: DictConfig,
        composer: Composer,
        warm: Callable[[], Any],
    ) -> None:
        self.budget = budget
        self.tracker = tracker
        self.composer = composer
        self.warm = warm
        self.log_model = bool(task_cfg.tracker.get("log_model", True))
        self.report = bool(task_cfg.tracker.get("report", True))
        self.ready: Dict[int, Ready] = {}
        self._stop = threading.Event()
        self._finish = True
        self._warmed = False
        self._folder = Path(tempfile.mkdtemp(prefix="runner-ahead-"))
        self._thread = threading.Thread(target=self._work, name="runner-ahead", daemon=True)

    def start(self) -> Ahead:
        self._thread.start()
        return self

    def close(self, finish: bool = True) -> None:
        """The trials are over. finish: prepare the final best too (the summary's work, done
        here), then stop; else (an interrupt) stop after the step in progress."""
        self._finish = finish
        self._stop.set()
        self.budget.wake()
        self._thread.join()

    def cleanup(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)

    def of(self, number: int) -> Ready:
        return self.ready.get(number) or Ready(number)

    def _work(self) -> None:
        seen = -1
        while True:
            stopping = self._stop.is_set()
            if stopping and not self._finish:
                return
            told = self.budget.session_told
            if told != seen:  # a trial ended: the best may have changed
                seen = told
                self._step()
            elif stopping:
                return
            else:
                self.budget.wait(1.0)

    def _step(self) -> None:
        best = self._best()
        if best is None:
            return
        if not self._warmed:  # once a trial has completed: a sweep whose trials fail imports nothing
            self._warmed = True
            try:
                self.warm()
            except Exception as exc:  # the summary imports them itself
                log.debug("ahead: imports: %s", exc)
        if best.number in self.ready or not is_mine(best.user_attrs):
            return  # another worker's trial: its model file is on its machine
        try:
            self._prepare(best)
        except Exception as exc:  # the summary does it itself
            log.debug("ahead: trial %d: %s", best.number, exc)
            self.ready[best.number] = Ready(best.number)

    def _best(self) -> Any:
        from ._summary import ranked

        order = ranked(self.budget.sweep)
        return order[0] if order else None

    def _prepare(self, best: Any) -> None:
        from runner.names import TrialAttr

        from ._report import trial_report
        from ._summary import best_model

        if not best.user_attrs.get(TrialAttr.RUN_ID):
            return
        ready = Ready(best.number)
        model = best_model(self.composer, best)
        if self.log_model:
            from runner.tracking.model import save_model

            booster, prepared, _ = model
            path = self._folder / f"trial-{best.number}"
            save_model(path, booster, prepared, run_id=best.user_attrs[TrialAttr.RUN_ID])
            ready.model = path
        if self.report and not (self._stop.is_set() and not self._finish):
            ready.report = trial_report(self.tracker, best, lambda: model)
        self.ready[best.number] = ready
