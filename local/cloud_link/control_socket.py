"""CloudConnectionManager: the relay's control socket to the cloud app.

One WebSocket for signaling and API proxying. Replies are matched by ``request_id``;
an ``error`` reply goes to its waiter at once (never a silent timeout), and when the
socket drops every pending request fails immediately. The manager reconnects with
backoff and waits for ``ready`` every time. An unsolicited ``error`` naming a
``sessionId`` (a pipeline that failed mid-stream) goes to whoever watches that cloud
session (:meth:`CloudConnectionManager.watch_session`), not to the connection's status.
A cloud session the relay gives up is ended with ``close_session`` over this socket
(:meth:`CloudConnectionManager.release_session`), never trusting the peer connection's
own close to get through.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp

from scope_relay.local.cloud_link.outage import OutageReport, close_reason, connection_failure
from scope_relay.local.cloud_link.target import CloudTarget
from scope_relay.protocol import messages as m
from scope_relay.protocol.errors import (
    AccessDenied,
    CloudRefused,
    ProtocolError,
    RequestTimeout,
    TooManyConnections,
    Unauthorized,
    Unavailable,
    UnknownSession,
)
from scope_relay.util.tasks import OwnedTasks

logger = logging.getLogger(__name__)
#: Cloud log lines are re-emitted here, outside the ``scope_relay`` tree on purpose (an
#: embedded cloud app forwards ``scope_relay.cloud`` records; they must not echo back).
cloud_logger = logging.getLogger("scope_cloud")
_LEVEL = re.compile(r" - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - ")


class CloudError(ProtocolError):
    """A failure the cloud reported, passed on with the cloud's own code and status (codes
    of protocol/errors.py, or ones a newer cloud app knows)."""

    def __init__(self, message: str, code: str, status: int):
        super().__init__(message)
        self.code = code
        self.status = status

    @classmethod
    def from_reply(cls, reply: m.ErrorReply) -> CloudError:
        return cls(reply.message, reply.code, reply.status)


#: After a refusal the relay tries again only this rarely (a key fixed on the cloud side).
REFUSED_RETRY_SECONDS = 60.0
#: ``error`` codes in place of ``ready`` that mean the same as an HTTP 401/403.
_REFUSAL_CODES = frozenset({Unauthorized.code, AccessDenied.code})
#: cloud sessions watched at once; beyond this the oldest watch is forgotten (counted)
MAX_SESSION_WATCHES = 1024

#: gets the ``error`` messages about one cloud session
SessionErrorCallback = Callable[[m.ErrorReply], object]
#: What watched sessions are told when the control socket they were opened on is lost: the
#: cloud ends a socket's media sessions with it, so waiting for WebRTC to notice (ICE
#: consent, ~30 s) would only keep the user in silence.
CONNECTION_LOST = "CONNECTION_LOST"
#: Reconnect backoff: from 0.25 s, doubling, at most 1 s through the first minute of an
#: outage (a restarted cloud app is found within ~1 s of being ready), then at most 15 s.
BACKOFF_FIRST, BACKOFF_SHORT_CAP, BACKOFF_LONG_CAP, SHORT_OUTAGE = 0.25, 1.0, 15.0, 60.0
#: ``close_session`` requests in flight at once; beyond this one is not sent (counted)
MAX_RELEASES_IN_FLIGHT = 64

class CloudConnectionManager:
    def __init__(self, target: CloudTarget, *, ready_timeout: float = 300.0,
                 request_timeout: float = 30.0, ping_interval: float = 20.0,
                 reconnect: bool = True, user_id: str | None = None):
        self.target = target
        self.ready_timeout = ready_timeout
        self.request_timeout = request_timeout
        self.ping_interval = ping_interval
        self.reconnect = reconnect
        self.user_id = user_id
        self.state = "idle"  # connecting | ready | reconnecting | refused | error | closed
        self.stage = ""
        self.last_error: str | None = None
        self.connection_id: str | None = None
        self.connects = 0
        #: connection attempts that failed (each outage is reported by :class:`OutageReport`)
        self.failed_attempts = 0
        self._outage = OutageReport(target.ws_url)
        #: set once the first attempt has ended, ready or not (the CLI's start-up waits on it)
        self._first_attempt = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False
        self._session_watches: dict[str, SessionErrorCallback] = {}
        #: watches forgotten to keep the table bounded, and session errors nobody watched
        self.session_watches_forgotten = 0
        self.unrouted_session_errors = 0
        self._releases = OwnedTasks()
        #: ``close_session`` outcomes: closed by the cloud, already gone there (or never
        #: ours), not sent or not answered (logged at DEBUG; see :meth:`release_session`)
        self.session_releases = {"closed": 0, "gone": 0, "failed": 0}

    # --- public ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start connecting in the background (returns at once)."""
        if self._task is None:
            self._http = aiohttp.ClientSession()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def wait_ready(self, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout or self.ready_timeout)
        except TimeoutError:
            raise Unavailable(f"cloud app not ready ({self.state}"
                              f"{': ' + self.last_error if self.last_error else ''})") from None
        if self.state == "refused":  # a refusal is answered at once, in words
            raise CloudRefused(self.last_error or "the cloud app refused the connection")
        if self.state in ("closed", "error"):  # woken by close() or by giving up
            raise Unavailable(f"cloud connection {self.state}"
                              f"{': ' + self.last_error if self.last_error else ''}")

    async def first_attempt(self) -> bool:
        """Wait for the first connection attempt to end; whether the cloud is ready."""
        await self._first_attempt.wait()
        return self.state == "ready"

    async def request(self, request: m.Request, timeout: float | None = None) -> dict[str, Any]:
        """Send ``request`` (its ``request_id`` is assigned here) and return the reply;
        raises :class:`CloudError` on an ``error`` reply."""
        await self.wait_ready()
        ws = self._ws
        if ws is None or ws.closed:
            raise Unavailable("cloud connection is down")
        request_id = f"r{next(self._ids)}"
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await ws.send_str(m.encode(replace(request, request_id=request_id).to_message()))
            reply = await asyncio.wait_for(future, timeout or self.request_timeout)
        except TimeoutError:
            raise RequestTimeout(f"cloud did not answer {request.type} in "
                                 f"{timeout or self.request_timeout:g} s") from None
        finally:
            self._pending.pop(request_id, None)
        if reply.get("type") == "error":
            raise CloudError.from_reply(m.parse_error(reply))
        return reply

    async def api(self, method: str, path: str, body: Any = None,
                  timeout: float | None = None) -> tuple[int, dict[str, Any]]:
        reply = m.parse_api_response(
            await self.request(m.ApiCall(None, method, path, body), timeout=timeout))
        return reply.status, reply.data

    def watch_session(self, session_id: str, callback: SessionErrorCallback) -> None:
        """Send unsolicited ``error`` messages naming cloud session ``session_id`` to
        ``callback`` (on the event loop) until :meth:`unwatch_session`."""
        self._session_watches.pop(session_id, None)
        while len(self._session_watches) >= MAX_SESSION_WATCHES:
            oldest = next(iter(self._session_watches))
            del self._session_watches[oldest]
            self.session_watches_forgotten += 1
            logger.warning("forgot the watch on cloud session %s (more than %d)", oldest[:8],
                           MAX_SESSION_WATCHES)
        self._session_watches[session_id] = callback

    def unwatch_session(self, session_id: str) -> None:
        self._session_watches.pop(session_id, None)

    def release_session(self, session_id: str) -> None:
        """Ask the cloud to end ``session_id``, which the relay no longer uses, without
        waiting: a hop rebuild must not wait on it. With the socket down there is nothing to
        ask: the cloud ended the sessions opened on it when it went."""
        if self.state != "ready" or self._ws is None or self._ws.closed:
            return
        if len(self._releases) >= MAX_RELEASES_IN_FLIGHT:
            self.session_releases["failed"] += 1
            logger.debug("close_session for cloud session %s not sent: %d in flight",
                         session_id[:8], len(self._releases))
            return
        self._releases.spawn(self._release(session_id))

    async def _release(self, session_id: str) -> None:
        try:
            # (the usual timeout: the socket may share the congested path that made the hop fail)
            await self.request(m.CloseSession(None, session_id))
        except CloudError as exc:
            outcome = "gone" if exc.code == UnknownSession.code else "failed"
            self.session_releases[outcome] += 1
            logger.debug("close_session for cloud session %s: %s: %s", session_id[:8],
                         exc.code, exc.message)
        except ProtocolError as exc:  # not answered: the socket dropped, or a timeout
            self.session_releases["failed"] += 1
            logger.debug("close_session for cloud session %s failed: %s", session_id[:8],
                         exc.message)
        else:
            self.session_releases["closed"] += 1

    def _sessions_lost(self) -> None:
        """The socket is gone, and with it every cloud session opened on it: tell them."""
        watches, self._session_watches = self._session_watches, {}
        lost = m.ErrorReply(f"{self.last_error}: its sessions ended with it",
                            CONNECTION_LOST, 503)
        for callback in watches.values():
            try:
                callback(lost)
            except Exception:  # one session's bug must not stop the reconnect loop
                logger.exception("a session's connection-lost handler failed")

    @property
    def pending_requests(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._pending)

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "stage": self.stage, "app_id": self.target.app_id,
                "url": self.target.ws_url, "connection_id": self.connection_id,
                "last_error": self.last_error, "connects": self.connects,
                "session_watches_forgotten": self.session_watches_forgotten,
                "unrouted_session_errors": self.unrouted_session_errors,
                "session_releases": dict(self.session_releases)}

    async def close(self) -> None:
        self._closing = True
        self.state = "closed"
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._ready.set()  # waiters wake and see the connection is closed
        await self._releases.cancel_all()  # (the cloud ends this socket's sessions with it)
        if self._ws is not None:
            await self._ws.close()
        self._fail_pending(Unavailable("cloud connection closed"))
        if self._http is not None:
            await self._http.close()

    # --- connection loop ---------------------------------------------------------------
    async def _run(self) -> None:
        backoff = BACKOFF_FIRST
        outage_began: float | None = None
        while not self._closing:
            self.state = "connecting" if self.connects == 0 else "reconnecting"
            started = time.monotonic()
            try:
                await self._connect_once()
            except asyncio.CancelledError:
                raise
            except CloudRefused as exc:
                self.last_error = exc.message
                logger.error("cloud connection refused: %s (trying again in %.0f s)",
                             exc.message, REFUSED_RETRY_SECONDS)
                self._fail_pending(exc)
                self.state = "refused"
                self.failed_attempts += 1
                self._first_attempt.set()
                self._ready.set()  # waiters wake and fail at once
                await asyncio.sleep(REFUSED_RETRY_SECONDS)
                self._ready.clear()
                continue
            except Exception as exc:
                self.last_error = connection_failure(exc)
                self.failed_attempts += 1
                self._outage.failed(self.last_error)
            else:  # it was up and has closed: one line saying why
                logger.warning("%s; reconnecting", self.last_error)
            finally:
                self._first_attempt.set()
                self._ready.clear()
                self._fail_pending(Unavailable(f"cloud connection lost: {self.last_error}"))
            self._sessions_lost()
            if not self.reconnect or self._closing:
                self.state = "error"
                self._ready.set()  # waiters wake and see it gave up
                return
            now = time.monotonic()
            if now - started > 30:  # it had been up a while: a new outage
                backoff, outage_began = BACKOFF_FIRST, now
            if outage_began is None:
                outage_began = now
            cap = BACKOFF_SHORT_CAP if now - outage_began < SHORT_OUTAGE else BACKOFF_LONG_CAP
            await asyncio.sleep(min(backoff, cap) * (1 + random.random() * 0.2))
            backoff = min(backoff * 2, cap)

    async def _connect_once(self) -> None:
        headers = {"Authorization": f"Key {self.target.api_key}"} if self.target.api_key else {}
        self.stage = "connecting websocket"
        assert self._http is not None
        try:
            ws = await self._http.ws_connect(self.target.ws_url, headers=headers,
                                             max_msg_size=m.MAX_MESSAGE_BYTES * 2,
                                             timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
        except aiohttp.WSServerHandshakeError as exc:
            refusal = self._refusal(exc.status) or self._transient(exc.status)
            if refusal is None:
                raise
            raise refusal from None
        async with ws:
            self._ws = ws
            self.stage = "waiting for ready"
            first = await asyncio.wait_for(ws.receive(), self.ready_timeout)
            if first.type != aiohttp.WSMsgType.TEXT:
                raise Unavailable(f"cloud closed before ready ({first.type.name})")
            hello = m.decode_json_object(first.data)
            if hello["type"] == "error":
                refused = m.parse_error(hello)
                if refused.code in _REFUSAL_CODES:
                    raise CloudRefused(f"the cloud app refused this relay: {refused.message}")
                raise CloudError.from_reply(refused)
            try:
                self.connection_id = m.parse_ready(hello)
            except ProtocolError as exc:
                raise Unavailable(exc.message) from None
            self.connects += 1
            self.state, self.stage, self.last_error = "ready", "ready", None
            self._ready.set()
            self._first_attempt.set()
            lasted = self._outage.recovered()
            if lasted is None:
                logger.info("cloud ready (connection %s)", self.connection_id)
            else:
                logger.warning("cloud ready again after %.0f s without it (connection %s)",
                               lasted, self.connection_id)
            pinger = asyncio.get_running_loop().create_task(self._keepalive())
            try:
                if self.user_id:
                    await ws.send_str(m.encode(m.SetUserId(None, self.user_id).to_message()))
                await self._read(ws)
            finally:
                pinger.cancel()
                await asyncio.gather(pinger, return_exceptions=True)
                self._ws = None
            self.last_error = self.last_error or close_reason(ws.close_code)

    def _refusal(self, status: int) -> CloudRefused | None:
        """The permanent failure an HTTP status of the WebSocket upgrade means, if any."""
        if status in (401, 403):
            hint = "" if self.target.api_key else " (none was given: set SCOPE_CLOUD_API_KEY)"
            return CloudRefused(f"the cloud app refused the API key{hint}")
        if status == 404:
            return CloudRefused(f"no cloud app at {self.target.ws_url}")
        return None

    @staticmethod
    def _transient(status: int) -> Unavailable | None:
        """What a passing refusal of the upgrade means, in words (retried as usual)."""
        if status == 429:
            return Unavailable("the cloud app has too many connections from this address or "
                               f"key ({TooManyConnections.code}); retrying")
        if status == 503:
            return Unavailable("the cloud app is not taking connections (503); retrying")
        return None

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = m.decode_json_object(msg.data)
            except ProtocolError as exc:
                logger.warning("ignored bad message from cloud: %s", exc)
                continue
            self._dispatch(data)

    def _dispatch(self, data: dict[str, Any]) -> None:
        rid = data.get("request_id")
        if rid is not None and str(rid) in self._pending:
            future = self._pending.pop(str(rid))
            if not future.done():
                future.set_result(data)
            return
        if data["type"] == "logs":
            for line in m.parse_logs(data):
                match = _LEVEL.search(line)
                level = getattr(logging, match.group(1)) if match else logging.INFO
                cloud_logger.log(level, "%s", line)
        elif data["type"] == "error":
            failure = m.parse_error(data)
            if failure.session_id is not None:  # one session's news, not the connection's
                self._route_session_error(failure)
                return
            self.last_error = f"{failure.code}: {failure.message}"
            logger.warning("cloud error: %s", self.last_error)

    def _route_session_error(self, failure: m.ErrorReply) -> None:
        assert failure.session_id is not None
        callback = self._session_watches.get(failure.session_id)
        if callback is None:  # a session already closed here: nobody left to tell
            self.unrouted_session_errors += 1
            logger.info("cloud error for session %s nobody watches: %s: %s",
                        failure.session_id[:8], failure.code, failure.message)
            return
        try:
            callback(failure)
        except Exception:  # a watcher's bug must not end the read loop
            logger.exception("handling a cloud error for session %s failed",
                             failure.session_id[:8])

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                await self.request(m.Ping(), timeout=self.ping_interval)
            except ProtocolError as exc:
                logger.warning("cloud ping failed: %s", exc)

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)
