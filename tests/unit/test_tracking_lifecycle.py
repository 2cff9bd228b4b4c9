"""One run's life, `with tracker.run(...) as run:`: started with its tags and parent, ended
FINISHED, FAILED with runner.error, KILLED with runner.interrupted, with the status the caller
owns, or left RUNNING for another process; a signal that lands while the run is being created
still ends it KILLED; a run a dead process left RUNNING is closed with what it lacks. On a
local SQLite store in this process (runner's tracker=local)."""

from __future__ import annotations

import signal
from contextlib import contextmanager

import pytest

from runner.errors import DataError
from runner.interrupts import INTERRUPTS, Interrupted
from runner.names import MlflowTag, Tag

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    import logging

    from omegaconf import OmegaConf

    from runner.config import TrackerConfig
    from runner.tracking import Tracker

    logging.getLogger("alembic").setLevel(logging.WARNING)
    folder = tmp_path_factory.mktemp("store")
    return Tracker(OmegaConf.merge(OmegaConf.structured(TrackerConfig), {"experiment": "unit", "dir": str(folder)}))


@pytest.fixture(autouse=True)
def _fresh_interrupts():
    INTERRUPTS.reset()
    yield
    INTERRUPTS.reset()


def stored(tracker, run_id):
    return tracker.client.get_run(run_id)


def test_a_block_that_ends_normally_finishes_its_run_with_tags_and_parent(tracker):
    with tracker.run("parent", {"user.team": "a"}) as parent:
        pass
    with tracker.run("child", {Tag.SWEEP: "basic"}, parent=parent.id) as child:
        child.log(metrics={"valid_auc": 0.75})
        child.end_tags = {Tag.SWEEP_STATUS: "FINISHED"}
    run = stored(tracker, child.id)
    assert run.info.status == "FINISHED" and run.data.metrics["valid_auc"] == 0.75
    assert run.data.tags[MlflowTag.PARENT_RUN_ID] == parent.id
    assert run.data.tags[Tag.SWEEP_STATUS] == "FINISHED" and run.data.tags[Tag.SWEEP] == "basic"
    assert stored(tracker, parent.id).info.status == "FINISHED"


def test_an_error_fails_the_run_with_its_message_and_the_pending_tags(tracker):
    with pytest.raises(DataError):
        with tracker.run("bad", {}) as run:
            run.pending_tags[Tag.CACHE_KEY] = "abc"
            run.pending_params["model.x"] = 1  # sent only with a status the caller owns
            raise DataError("data.label='Y' is constant\nsecond line")
    stored_run = stored(tracker, run.id)
    assert stored_run.info.status == "FAILED"
    assert stored_run.data.tags[Tag.ERROR] == "DataError: data.label='Y' is constant"
    assert stored_run.data.tags[Tag.CACHE_KEY] == "abc" and not stored_run.data.params


def test_an_interrupt_kills_the_run_and_says_what_was_kept(tracker):
    with pytest.raises(KeyboardInterrupt):
        with tracker.run("stopped", {}) as run:
            run.kept = lambda: "the custom line"
            raise Interrupted(signal.SIGTERM)
    stored_run = stored(tracker, run.id)
    assert stored_run.info.status == "KILLED" and stored_run.data.tags[Tag.INTERRUPTED] == "SIGTERM"
    assert INTERRUPTS.kept == "the custom line"


def test_a_status_the_caller_owns_ends_the_run_with_params_and_final_tags(tracker):
    class Pruned(Exception):
        pass

    def final(status, exc):
        return {Tag.TRIAL_STATE: "PRUNED" if status == "KILLED" else "FAIL"}

    with pytest.raises(Pruned):
        with tracker.run(
            "trial", {}, status_of=lambda e: "KILLED" if isinstance(e, Pruned) else None, final_tags=final
        ) as run:
            run.pending_params["model.params.num_leaves"] = 31
            raise Pruned("round 10")
    stored_run = stored(tracker, run.id)
    assert stored_run.info.status == "KILLED" and Tag.ERROR not in stored_run.data.tags
    assert stored_run.data.tags[Tag.TRIAL_STATE] == "PRUNED"
    assert stored_run.data.params["model.params.num_leaves"] == "31"


def test_left_running_is_not_ended_nor_tagged(tracker):
    with tracker.run("shared parent", {}) as run:
        run.status = "RUNNING"
        run.end_tags = {Tag.SWEEP_STATUS: "FINISHED"}
    with pytest.raises(RuntimeError):
        with tracker.run("failed, shared", {}, status_of=lambda e: "RUNNING") as other:
            raise RuntimeError("this worker failed")
    for run_id in (run.id, other.id):
        stored_run = stored(tracker, run_id)
        assert stored_run.info.status == "RUNNING"
        assert Tag.SWEEP_STATUS not in stored_run.data.tags and Tag.ERROR not in stored_run.data.tags


def test_a_signal_while_the_run_is_created_ends_it_killed(tracker):
    """The gate holds a first signal from the block's start until the block holds the run: the
    run is created, then ended KILLED, never left RUNNING."""
    created = []

    @contextmanager
    def guard():
        INTERRUPTS._handle(signal.SIGINT, None)  # as the signal handler does, while the gate is shut
        yield

    with pytest.raises(Interrupted):
        with tracker.run("signalled", {}, guard=guard, on_start=lambda run: created.append(run.id)):
            raise AssertionError("the block's body must not run")
    assert len(created) == 1
    stored_run = stored(tracker, created[0])
    assert stored_run.info.status == "KILLED" and stored_run.data.tags[Tag.INTERRUPTED] == "SIGINT"


def test_adopt_continues_an_existing_run(tracker):
    with tracker.run("first", {}) as first:
        pass
    assert stored(tracker, first.id).info.status == "FINISHED"
    seen = {}

    def adopt(tags):
        seen.update(tags)
        return first.id

    with tracker.run("again", {Tag.SWEEP: "runner_optuna"}, adopt=adopt) as again:
        assert again.adopted and again.id == first.id
        assert stored(tracker, first.id).info.status == "RUNNING"  # reopened
    assert seen == {Tag.SWEEP: "runner_optuna"}
    assert stored(tracker, first.id).info.status == "FINISHED"


def test_close_ends_a_run_left_running_with_what_it_lacks(tracker):
    with tracker.run("orphan", {}) as orphan:
        orphan.status = "RUNNING"  # as if its process had died
    assert tracker.close(orphan.id, "FAILED", tags={Tag.ERROR: "stale trial: owner gone"}, metrics={"m": 1.0})
    stored_run = stored(tracker, orphan.id)
    assert stored_run.info.status == "FAILED" and stored_run.data.tags[Tag.ERROR] == "stale trial: owner gone"
    assert stored_run.data.metrics["m"] == 1.0
    assert not tracker.close("0" * 32, "FAILED")  # no such run: a warning, not an error
