"""What the sweep shows the user: the progress line, numbers, durations and tables."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from runner import console

if TYPE_CHECKING:
    import pandas as pd

    from ._budget import Budget
    from ._state import Sweep
    from ._trial import Outcome

_PRINT_LOCK = threading.Lock()  # worker threads print progress lines concurrently


def say(text: str) -> None:
    """A line on stderr (credentials masked), never interleaved with another thread's."""
    with _PRINT_LOCK:
        console.say(text)


def fmt(value: Any) -> str:
    """A table cell: floats to 4 significant decimals (scientific when tiny or huge)."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"


def markdown(table: pd.DataFrame) -> str:
    """A pandas DataFrame as a markdown table (the parent run's optuna/top_trials.md)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def text_table(table: pd.DataFrame) -> str:
    """A pandas DataFrame as aligned text for the terminal; dotted column names shortened."""
    cols = list(table.columns)
    cells = [[str(c).split(".")[-1] for c in cols]] + [[fmt(row[c]) for c in cols] for _, row in table.iterrows()]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    return "\n".join("  " + "  ".join(r[i].ljust(widths[i]) for i in range(len(cols))) for r in cells)


def progress_line(
    study_name: str,
    number: int,
    state: str,
    values: Optional[List[float]],
    error: Optional[str],
    seconds: float,
    counts: Dict[str, Any],
    limit: int,
    metric: str,
    elapsed: float,
    session_done: int,
) -> str:
    """The line printed after each trial: its outcome, the study's totals, best so far, ETA."""
    remaining = max(0, limit - counts["finished"])
    eta = (
        f"ETA {duration(elapsed / session_done * remaining)}"
        if session_done and remaining
        else ("ETA 0s" if not remaining else "ETA ?")
    )
    best = f"best {metric}={counts['best'][0]:.4f} (#{counts['best'][1]})" if counts["best"] else "best -"
    what = {
        "COMPLETE": f"{metric}={values[0]:.4f}" if values else "complete",
        "PRUNED": "pruned",
        "FAIL": f"FAILED ({(error or '')[:120]})",
    }[state]
    return (
        f"[{study_name}] trial {number} {what} in {seconds:.1f}s | "
        f"{counts['finished']}/{limit} done, {counts['running']} running, {counts['pruned']} pruned, "
        f"{counts['failed']} failed | {best} | {duration(elapsed)} elapsed, {eta}"
    )


def show_progress(sweep: Sweep, budget: Budget, number: int, outcome: Outcome) -> None:
    """Budget.on_tell: the progress line of a trial just told (hydra.sweeper.progress)."""
    say(
        progress_line(
            sweep.study.study_name,
            number,
            outcome.state,
            outcome.values,
            outcome.error,
            outcome.seconds,
            budget.counts(),
            sweep.limit,
            sweep.metrics[0],
            time.perf_counter() - sweep.started,
            budget.session_done,
        )
    )
