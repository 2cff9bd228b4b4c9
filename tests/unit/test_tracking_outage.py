"""runner/tracking/outage.py: the retry loop around a tracking server that stops answering,
driven with a fake clock (no sleeping, no server)."""

from __future__ import annotations

import pytest

from runner import env
from runner.errors import TrackingError
from runner.tracking.outage import REACHED, Outage, is_outage

pytestmark = pytest.mark.unit

URI = "http://127.0.0.1:5999"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv(env.TRACKER_REACHED, raising=False)
    REACHED.reset()
    yield
    REACHED.reset()


def flaky(failures: int, error: Exception = ConnectionError("Connection refused")):
    calls = {"n": 0}

    def fn(x):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error
        return x * 2

    return fn, calls


def outage(clock: Clock, deadline: float = 30.0, ride_out: bool = True) -> Outage:
    return Outage(URI, URI, deadline, ride_out=ride_out, sleep=clock.sleep, clock=clock)


def test_server_never_reached_fails_at_once():
    clock = Clock()
    fn, calls = flaky(1)
    with pytest.raises(ConnectionError):
        outage(clock).call("log", fn, 1)
    assert calls["n"] == 1 and clock.slept == []


def test_outage_of_a_reached_server_is_ridden_out_with_backoff(capsys):
    clock = Clock()
    o = outage(clock)
    assert o.call("log", lambda: "up") == "up"  # reached once
    assert URI in REACHED
    fn, calls = flaky(5)
    assert o.call("log", fn, 21) == 42
    assert calls["n"] == 6
    assert clock.slept == [0.5, 1.0, 2.0, 4.0, 5.0]  # doubling, capped at 5 s
    err = capsys.readouterr().err
    assert "is unreachable" in err and "tracker.outage_deadline=30s" in err
    assert "reachable again after 12s" in err
    assert o.down_since is None


def test_past_the_deadline_one_error_naming_the_setting_and_no_second_wait():
    clock = Clock()
    o = outage(clock, deadline=3.0)
    o.call("log", lambda: None)
    fn, calls = flaky(100)
    with pytest.raises(TrackingError, match=r"tracker\.outage_deadline=3s .*failed to log"):
        o.call("log", fn, 1)
    assert sum(clock.slept) == pytest.approx(3.0)
    slept = len(clock.slept)
    with pytest.raises(TrackingError):  # still down: fails at its first unreachable answer
        o.call("log", fn, 1)
    assert len(clock.slept) == slept


def test_refusals_and_s3_errors_are_not_outages():
    clock = Clock()
    o = outage(clock)
    o.call("log", lambda: None)
    fn, calls = flaky(1, PermissionError("403 Forbidden"))
    with pytest.raises(PermissionError):
        o.call("log", fn, 1)
    assert calls["n"] == 1

    class EndpointConnectionError(Exception):
        __module__ = "botocore.exceptions"

    assert not is_outage(EndpointConnectionError("Could not connect: Connection refused"))
    assert is_outage(RuntimeError("API request failed: 503 Service Unavailable"))


def test_local_store_calls_straight_through():
    clock = Clock()
    o = outage(clock, ride_out=False)
    o.call("log", lambda: None)
    fn, _ = flaky(1)
    with pytest.raises(ConnectionError):
        o.call("log", fn, 1)


def test_reached_is_inherited_through_the_environment(monkeypatch):
    monkeypatch.setenv(env.TRACKER_REACHED, URI)
    clock = Clock()
    fn, calls = flaky(2)
    assert outage(clock).call("log", fn, 2) == 4
    assert calls["n"] == 3
