"""The life of one MLflow run, written once: `with tracker.run(...) as run:`.

Every run runner makes goes through here: a single run, a grid job and its parent, a sweep's
parent and trials, a scoring. The block:

- starts the run (tags, parent) inside the interrupt gate: a Ctrl-C or SIGTERM that lands while
  the run is being created waits until the block holds it, then ends it KILLED;
- ends it when the block ends: FINISHED (or `run.status`, set by the block), FAILED with a
  runner.error tag, KILLED with a runner.interrupted tag, or the status `status_of` gives for
  an exception the caller raises on purpose; "RUNNING" leaves it to someone else (a sweep's
  parent that other workers still use). The end request goes through the outage retry and is
  gated too, so a signal cannot cut it off;
- reaches the test kill points `<kind>_started` (the run exists, its owner does not know it
  yet) and `<kind>_ending` (the block's work is logged, the run not ended).

`close` ends a run that another, dead, process left RUNNING.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional

from ..errors import RunnerError, first_line
from ..interrupts import INTERRUPTS, as_interrupted
from ..names import Tag
from ..testhooks import kill_point

if TYPE_CHECKING:
    from .tracker import Tracker

log = logging.getLogger(__name__)

LEFT_RUNNING = "RUNNING"  # a status that leaves the run to another process


@dataclass
class Run:
    """The run of a `with tracker.run(...)` block."""

    tracker: Tracker
    id: str
    adopted: bool = False  # an existing run the block continues (a resumed sweep's parent)
    status: str = "FINISHED"  # the end status if the block ends normally
    end_tags: Dict[str, Any] = field(default_factory=dict)  # sent with a normal end
    # Sent with the end if the block fails: what the run should carry whatever happens next.
    pending_tags: Dict[str, Any] = field(default_factory=dict)
    pending_params: Dict[str, Any] = field(default_factory=dict)  # only with a status_of status
    pending_history: Dict[str, Any] = field(default_factory=dict)  # metric points, the same
    kept: Optional[Callable[[], str]] = None  # what an interrupt line says was kept

    def log(self, **kwargs: Any) -> None:
        self.tracker.log(self.id, **kwargs)


EndTags = Callable[[str, Optional[BaseException]], Dict[str, Any]]


@contextmanager
def run_scope(
    tracker: Tracker,
    name: Optional[str],
    tags: Dict[str, Any],
    *,
    parent: Optional[str] = None,
    kind: str = "run",
    guard: Optional[Callable[[], AbstractContextManager[Any]]] = None,
    adopt: Optional[Callable[[Dict[str, Any]], Optional[str]]] = None,
    on_start: Optional[Callable[[Run], None]] = None,
    status_of: Optional[Callable[[BaseException], Optional[str]]] = None,
    final_tags: Optional[EndTags] = None,
) -> Iterator[Run]:
    """Tracker.run: see the module's docstring.

    guard(): a context manager held while the run is started and on_start runs (a sweeper's
    lock; it may refuse the start by raising). adopt(tags): inside the guard, an existing run
    to continue (reopened as RUNNING), or None to create one with `tags`, which it may
    complete. on_start(run): inside the guard, once the run exists. status_of(exc): the end
    status for an exception the caller raised on purpose (None: the lifecycle decides).
    final_tags(status, exc): tags sent with the end of a failed block.
    """
    with INTERRUPTS.deferred() as gate:
        with guard() if guard else nullcontext():
            tags = dict(tags)
            existing = adopt(tags) if adopt else None
            if existing:
                tracker._reopen(existing)
            run = Run(tracker, existing or tracker._create_run(name, tags, parent_run_id=parent), bool(existing))
            kill_point(f"{kind}_started")  # test hook: the run exists, its owner does not know it yet
            if on_start:
                on_start(run)
        status = "FAILED"
        try:
            gate.open()
            yield run
            kill_point(f"{kind}_ending")  # test hook: logged, the run not ended
            status = run.status
            if run.end_tags and status != LEFT_RUNNING:
                run.log(tags=run.end_tags)
        except BaseException as exc:
            status = _failed(run, exc, status_of, final_tags)
            raise
        finally:
            gate.shut()
            if status != LEFT_RUNNING:
                try:
                    tracker._end_run(run.id, status)
                except RunnerError as exc:
                    log.error("%s", exc)


def _failed(
    run: Run,
    exc: BaseException,
    status_of: Optional[Callable[[BaseException], Optional[str]]],
    final_tags: Optional[EndTags],
) -> str:
    """The end status for an exception out of the block, its tags sent (best effort)."""
    owned = status_of(exc) if status_of else None
    params: Dict[str, Any] = {}
    history: Dict[str, Any] = {}
    if owned is not None:
        status, cause = owned, {}
        params, history = run.pending_params, run.pending_history
    elif isinstance(exc, KeyboardInterrupt):  # Ctrl-C / SIGTERM: the user stopped it
        status, cause = "KILLED", {Tag.INTERRUPTED: as_interrupted(exc).name}
        INTERRUPTS.keep(run.kept() if run.kept else f"run {run.id} ended KILLED")
    else:
        status, cause = "FAILED", {Tag.ERROR: f"{type(exc).__name__}: {first_line(exc)}"}
    if status == LEFT_RUNNING:
        return status
    tags = {**cause, **run.pending_tags, **(final_tags(status, exc) if final_tags else {})}
    try:
        run.log(params=params, tags=tags, history=history)
    except Exception:  # noqa: BLE001 - the tracker itself may be what failed
        pass
    return status


def close(
    tracker: Tracker,
    run_id: str,
    status: str,
    *,
    tags: Optional[Dict[str, Any]] = None,
    metrics: Optional[Dict[str, float]] = None,
    params: Optional[Dict[str, Any]] = None,
) -> bool:
    """End a run this process did not start (left RUNNING by a process that died, or by a
    trial thread that did not stop in time): what it lacks, then `status`. A failure is
    logged as a warning, not raised; returns whether the run was ended."""
    try:
        if tags or metrics or params:
            tracker.log(run_id, tags=tags, metrics=metrics, params=params)
        tracker._end_run(run_id, status)
    except RunnerError as exc:
        log.warning("could not end run %s as %s: %s", run_id, status, exc)
        return False
    return True
