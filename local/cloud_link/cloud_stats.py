"""The cloud's sender figures for the relay's own sessions (``cloud_send`` in the relay's
stats): what the cloud's video encoder aims at, its bandwidth estimate and pacer queue live
only in the cloud app's ``/api/v1/stats``, which the relay reads through its control socket.

Fetched in the background, at most once every :data:`INTERVAL` s and only while someone
reads the relay's stats (the page's poll, ``/api/v1/stats``, a ``/metrics`` scrape): a
reader is never held up by a slow or absent cloud. It gets the last value with its age;
a failed fetch is counted and shown (``available: false``, ``last_error``), never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from scope_relay.util.tasks import OwnedTasks

logger = logging.getLogger(__name__)

#: seconds between the starts of two fetches, at least
INTERVAL = 1.0
#: a fetch that takes longer than this is a failure (the next read starts another)
TIMEOUT = 5.0
#: the cloud session's figures copied, when it has them (each a dict of numbers)
SENDER_KEYS = ("video_send", "audio_send")

#: ``fetch()`` answers ``(status, body)`` like ``ControlConnection.api("GET", "/api/v1/stats")``
Fetch = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


class CloudSendStats:
    """A rate-limited, non-blocking cache of the cloud's per-session sender figures."""

    def __init__(self, fetch: Fetch, *, interval: float = INTERVAL, timeout: float = TIMEOUT,
                 clock: Callable[[], float] = time.monotonic):
        self._fetch, self._interval, self._timeout, self._clock = fetch, interval, timeout, clock
        self._tasks = OwnedTasks()
        #: cloud session id -> its sender figures, as of ``_fetched_at``
        self._sessions: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._started_at: float | None = None  # the last fetch's start
        self._in_flight = False
        self._ok = False  # whether the last finished fetch succeeded
        self.fetches = 0
        self.failures = 0
        self.last_error: str | None = None

    def figures(self, cloud_session: str | None) -> dict[str, Any]:
        """``cloud_send`` for the session the cloud knows as ``cloud_session``: its
        ``video``/``audio`` sender figures (``None`` when unknown), their ``age_s``,
        whether the last fetch worked (``available``), ``fetch_failures`` and
        ``last_error``. Starts a fetch when one is due; never waits for it."""
        self._refresh_if_due()
        mine = self._sessions.get(cloud_session) if cloud_session else None
        age = None if self._fetched_at is None or mine is None else round(
            self._clock() - self._fetched_at, 2)
        return {"available": self._ok and mine is not None, "age_s": age,
                "video": None if mine is None else mine.get("video_send"),
                "audio": None if mine is None else mine.get("audio_send"),
                "fetch_failures": self.failures, "last_error": self.last_error}

    def _refresh_if_due(self) -> None:
        now = self._clock()
        if self._in_flight or (self._started_at is not None
                               and now - self._started_at < self._interval):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # read outside the event loop (a test, a tool): no fetch
            return
        self._in_flight, self._started_at = True, now
        self._tasks.spawn(self._refresh())

    async def _refresh(self) -> None:
        try:
            status, data = await asyncio.wait_for(self._fetch(), self._timeout)
            if status != 200:
                raise RuntimeError(f"the cloud answered {status}: "
                                   f"{data.get('error', '') if isinstance(data, dict) else ''}")
            self._sessions = _sender_figures(data)
            self._fetched_at = self._clock()
            self._ok, self.last_error = True, None
            self.fetches += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # no cloud, a timeout, a bad reply: counted, shown, kept going
            self._ok = False
            self.failures += 1
            self.last_error = (f"{type(exc).__name__}: {exc}" if str(exc)
                               else type(exc).__name__)[:200]
            logger.debug("the cloud's stats could not be read: %s", self.last_error)
        finally:
            self._in_flight = False

    async def close(self) -> None:
        await self._tasks.cancel_all()


def _sender_figures(data: Any) -> dict[str, dict[str, Any]]:
    """Cloud session id -> its :data:`SENDER_KEYS` figures, from the cloud's stats."""
    if not isinstance(data, dict) or not isinstance(data.get("sessions"), list):
        raise ValueError("the cloud's stats have no 'sessions' list")
    out: dict[str, dict[str, Any]] = {}
    for session in data["sessions"]:
        if isinstance(session, dict) and isinstance(session.get("sessionId"), str):
            out[session["sessionId"]] = {k: session[k] for k in SENDER_KEYS
                                         if isinstance(session.get(k), dict)}
    return out
