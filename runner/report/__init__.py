"""What a run shows of its model (issue 27): evaluation metrics, charts, contributions and a
one-page HTML report under the run's `evaluation/` artifacts.

  evaluation.py  metrics and curves of one split, named as MLflow's default evaluator
  contrib.py     feature contributions from LightGBM's pred_contrib
  charts.py      the PNGs (matplotlib Figures, no pyplot)
  build.py       all of it for one model; a failing chart is a warning, not a failed run
  page.py        the HTML page; single.py its sections for a model
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional, TypeVar

from .build import FOLDER, Report, build, files

log = logging.getLogger("runner.report")
T = TypeVar("T")


def safely(what: str, fn: Callable[[], T]) -> Optional[T]:
    """fn(), or None with one warning line: a report is never worth a failed run."""
    try:
        return fn()
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("runner: warning: %s: %s (the run goes on without it)", what, first)
        return None


def warm() -> None:
    """Import what a report draws and scores with (matplotlib's Figure and Agg, scikit-learn's
    metrics) and load what saving the model loads (runner/tracking/model.py warm): pure
    Python, no OpenMP, for a thread while the run waits or trains."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import sklearn.calibration  # noqa: F401
    import sklearn.metrics  # noqa: F401

    from ..tracking.model import warm as warm_model

    warm_model()


def preload() -> threading.Thread:
    """warm() in a daemon thread: a single run waits on its warehouse and its tracking store
    meanwhile, so its end finds everything loaded."""

    def work() -> None:
        try:
            warm()
        except Exception as exc:  # the report imports them itself, and says what failed
            log.debug("report preload: %s", exc)

    thread = threading.Thread(target=work, name="runner-report-imports", daemon=True)
    thread.start()
    return thread


__all__ = ["FOLDER", "Report", "build", "files", "preload", "safely", "warm"]
