"""Riding out a tracking server that stops answering.

MLflow's client retries each request itself (tracker.max_retries). On top of that, a
server that stays unreachable is retried with backoff (0.5 s doubling to 5 s) until
tracker.outage_deadline seconds after the outage's first failure, shared by every thread
of one Tracker; then one TrackingError naming the setting. Once past the deadline, later
calls fail at their first unreachable answer (no second wait). A server never reached
from this process (or, through RUNNER_TRACKER_REACHED, from the sweep that started it)
is not waited for: a wrong tracker.uri fails at once. S3 errors (boto3, artifacts on
s3://) are not server outages: botocore retries those itself (AWS_MAX_ATTEMPTS).
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any, Callable, Optional, Set

from .. import env
from ..console import say
from ..errors import TrackingError, first_line

GATEWAY = re.compile(r"Bad Gateway|Service Unavailable|Gateway Time-?out", re.IGNORECASE)
UNREACHABLE = re.compile(
    r"Max retries exceeded|Failed to establish a new connection|Connection refused|"
    r"ConnectionError|Name or service not known|timed out|RemoteDisconnected",
    re.IGNORECASE,
)


class ReachedServers:
    """Tracking URIs that answered in this process (or in the sweep that started it)."""

    def __init__(self) -> None:
        self.uris: Set[str] = set()

    def add(self, uri: str) -> None:
        if uri not in self.uris:
            self.uris.add(uri)
            os.environ[env.TRACKER_REACHED] = uri  # launcher jobs started from here inherit it

    def __contains__(self, uri: str) -> bool:
        return uri in self.uris or os.environ.get(env.TRACKER_REACHED) == uri

    def reset(self) -> None:
        self.uris.clear()


REACHED = ReachedServers()


def from_boto(exc: BaseException) -> bool:
    return (type(exc).__module__ or "").startswith(("botocore", "boto3"))


def is_outage(exc: BaseException) -> bool:
    """Does this exception say the server did not answer (rather than refused or erred)?"""
    text = str(exc)
    return not from_boto(exc) and bool(
        UNREACHABLE.search(text) or GATEWAY.search(text) or "ConnectionError" in type(exc).__name__
    )


class Outage:
    """Calls to one tracking server, retried through an outage until the deadline.

    `ride_out=False` (the local SQLite store) calls straight through.
    """

    def __init__(
        self,
        uri: str,
        shown: str,
        deadline: Optional[float],
        ride_out: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.uri = uri
        self.shown = shown
        self.deadline = 300.0 if deadline is None else float(deadline)
        self.ride_out = ride_out
        self.down_since: Optional[float] = None  # first failure of the current outage
        self._lock = threading.Lock()
        self._sleep = sleep
        self._clock = clock

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        delay = 0.5
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not self.ride_out or self.uri not in REACHED or not is_outage(exc):
                    raise
                down_for = self._note_failure(exc)
                if down_for >= self.deadline:
                    raise TrackingError(
                        f"MLflow at tracker.uri={self.shown} unreachable for {down_for:.0f}s, past "
                        f"tracker.outage_deadline={self.deadline:g}s (failed to {what}): start the server or "
                        "raise tracker.outage_deadline, then run the same command again"
                    ) from None
                self._sleep(max(0.05, min(delay, self.deadline - down_for)))
                delay = min(delay * 2, 5.0)
                continue
            REACHED.add(self.uri)
            if self.down_since is not None:
                self._note_recovery()
            return result

    def _note_failure(self, exc: BaseException) -> float:
        with self._lock:
            now = self._clock()
            if self.down_since is None:
                self.down_since = now
                say(
                    f"runner: MLflow at tracker.uri={self.shown} is unreachable ({first_line(exc, 160)}): "
                    f"retrying for up to tracker.outage_deadline={self.deadline:g}s"
                )
            return now - self.down_since

    def _note_recovery(self) -> None:
        with self._lock:
            if self.down_since is not None:
                say(
                    f"runner: MLflow at tracker.uri={self.shown} reachable again after "
                    f"{self._clock() - self.down_since:.0f}s"
                )
                self.down_since = None
