"""What the relay says about its cloud connection: why an attempt failed or a socket closed,
in words a person acts on, and an outage reported at a pace a person can read."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import aiohttp

logger = logging.getLogger("scope_relay.local.cloud_link.control_socket")

#: An outage is reported when it begins, then again only after this many seconds of it (the
#: last gap repeating): a terminal a person reads, not a line per attempt.
OUTAGE_REPORTS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def connection_failure(exc: BaseException) -> str:
    """One line for a failed connection attempt, in words a person acts on."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        why = err.strerror or (os.strerror(err.errno) if err.errno else str(err))
        if isinstance(err, ConnectionRefusedError):
            why = "connection refused"
        return f"nothing answers at {exc.host}:{exc.port} ({why})"
    return str(exc) or type(exc).__name__


def close_reason(code: int | None) -> str:
    """What a closed control socket means: the cloud app went away, or it closed it."""
    if code in (None, 1006):  # no close frame: the process died or the network failed
        return "the cloud's connection was lost (the cloud app exited, or the network failed)"
    if code == 1001:
        return "the cloud app shut down (going away)"
    return f"the cloud app closed the connection (code {code})"


class OutageReport:
    """Says when the cloud cannot be reached: the first failure of an outage at once, then
    a reminder after 10 s, 30 s, 1, 2, 5 and every 10 min; the other attempts at DEBUG."""

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic):
        self.url = url
        self._clock = clock
        self.began: float | None = None
        self.attempts = 0
        self._next = 0

    def failed(self, reason: str) -> None:
        now = self._clock()
        if self.began is None:
            self.began, self.attempts, self._next = now, 1, 0
            logger.warning("cloud connection: %s (retrying in the background)", reason)
            return
        self.attempts += 1
        elapsed = now - self.began
        k = self._next
        due = (OUTAGE_REPORTS[k] if k < len(OUTAGE_REPORTS)
               else OUTAGE_REPORTS[-1] * (k - len(OUTAGE_REPORTS) + 2))
        if elapsed >= due:
            self._next += 1
            logger.warning("still no cloud at %s after %.0f s (%d attempts): %s", self.url,
                           elapsed, self.attempts, reason)
        else:
            logger.debug("cloud connection attempt %d failed: %s", self.attempts, reason)

    def recovered(self) -> float | None:
        """The outage is over: how long it lasted (None if there was none)."""
        if self.began is None:
            return None
        lasted, self.began = self._clock() - self.began, None
        return lasted
