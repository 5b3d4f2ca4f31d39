"""The ``/ws`` control channel: ready handshake, signaling, API proxy, logs.

Requests are handled concurrently (a slow model load never blocks an offer or ICE), each
under a timeout; every failure is answered with its ``request_id`` and the connection
keeps serving. Failed ``api`` calls are ``api_response`` with status >= 400, because
Scope's client does not route ``error`` replies (docs/scope-compatibility.md).

Budget: every message (WebSocket pings included) takes a token (cloud/control/budget.py); without
one the socket is not read, parsed or answered until there is, so a flooding client
costs the event loop that media shares no more than a polite one. A socket held back for
too long is told ``RATE_LIMITED`` and closed (1008).

Isolation: the channel's work runs with ``tenancy.current_connection`` set to its id, so
its log lines and its view of ``/api/v1/stats`` are its own; its sessions answer only
to it (another connection's ``sessionId`` is ``UNKNOWN_SESSION``, as a made-up one is,
for ``icecandidate`` and ``close_session`` alike).
A session whose pipeline fails mid-stream is reported here, to its owner only, as an
unsolicited ``error`` (``PIPELINE_FAILED``) naming the ``sessionId``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from scope_relay.cloud.control.budget import ThrottleMeter, TokenBucket
from scope_relay.cloud.control.host import ChannelHost
from scope_relay.cloud.control.log_forwarding import LogBuffer
from scope_relay.cloud.control.tenancy import current_connection, short_id
from scope_relay.protocol import messages as m
from scope_relay.protocol.errors import (
    AccessDenied,
    Busy,
    Internal,
    InvalidMessage,
    MaxDurationExceeded,
    ProtocolError,
    RateLimited,
    RequestTimeout,
    TooLarge,
    UnknownSession,
)
from scope_relay.util.tasks import OwnedTasks

if TYPE_CHECKING:
    from scope_relay.cloud.sessions.media_session import MediaSession

logger = logging.getLogger(__name__)

CLOSE_ACCESS_DENIED = 4003
CLOSE_POLICY = 1008
#: how long a policy close (rate limit, bad messages) may take before it is cut off
POLICY_CLOSE_WAIT = 1.0


class ControlChannel:
    """One client's control socket; it sees the app only as a :class:`ChannelHost`."""

    def __init__(self, host: ChannelHost, ws: web.WebSocketResponse,
                 transport: asyncio.BaseTransport | None = None):
        self.host = host
        self.config = host.config
        self.ws = ws
        #: the TCP connection under ``ws``: cut at once on a policy close
        self._transport = transport
        self.connection_id = uuid.uuid4().hex
        self.user_id: str | None = None
        self.sessions: set[str] = set()
        self._send_lock = asyncio.Lock()
        self._tasks = OwnedTasks()  # log forwarding, the duration limit
        self._requests = OwnedTasks()  # requests in progress, served concurrently
        self._bad_times: list[float] = []
        self._log_buffer: LogBuffer | None = None
        rate = self.config.message_rate
        self._bucket = TokenBucket(rate, self.config.message_burst) if rate else None
        self._throttle = ThrottleMeter(self.config.rate_limit_window)
        #: messages that had to wait for a token
        self.rate_limited_messages = 0

    @property
    def log_lines_dropped(self) -> int:
        return self._log_buffer.dropped if self._log_buffer is not None else 0

    # --- plumbing ------------------------------------------------------------------------
    async def send(self, message: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        if message.get("request_id", "") is None:
            message = {k: v for k, v in message.items() if k != "request_id"}
        try:
            text = m.encode(message)
        except ValueError as exc:  # over Scope's 4 MiB limit: answer that instead
            logger.warning("reply not sent: %s", exc)
            rid = message.get("request_id")
            if rid is None:
                return
            request_type = "api" if message.get("type") == "api_response" else None
            text = m.encode(m.failure(TooLarge(str(exc)), request_type, rid))
        async with self._send_lock:
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                pass  # the peer went away; the receive loop will notice

    async def shut_down(self, reason: ProtocolError) -> None:
        """Tell the client why (an unsolicited ``error``), then close the socket."""
        await self.send(m.error_from(reason))
        await self.close(1001, reason.message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (its sessions close as :meth:`run` ends)."""
        await self.ws.close(code=code, message=reason.encode()[:120])

    async def _close_reading_nothing_more(self, code: int, reason: str) -> None:
        """Close a misbehaving client's socket: the close frame is written, then the
        connection is cut. (A flooder's backlog, megabytes in the socket buffers, sits
        before its close frame: waiting for that frame would mean parsing all of it.)"""
        closing = asyncio.ensure_future(self.close(code, reason))
        await asyncio.sleep(0)  # closing runs first: the close frame goes into the transport
        transport = self._transport
        if isinstance(transport, asyncio.Transport) and transport.can_write_eof():
            # FIN after the close frame, not yet a close: closing a socket with unread data
            # sends a reset, and a reset can discard the close frame (and the error before
            # it) from the client's receive buffer before the client reads them
            transport.pause_reading()
            transport.write_eof()
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(asyncio.shield(closing), POLICY_CLOSE_WAIT)
        if transport is not None:
            transport.close()  # now: what was written has gone out
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(closing, POLICY_CLOSE_WAIT)

    # --- lifecycle -----------------------------------------------------------------------
    async def run(self) -> None:
        # everything this channel does, and every task it starts, works for this connection
        owner = current_connection.set(self.connection_id)
        try:
            await self.host.ready.wait()
            await self.send(m.ready(self.connection_id))  # strictly the first message
            self._log_buffer = self.host.log_hub.subscribe(self.connection_id)
            self._tasks.spawn(self._forward_logs(self._log_buffer))
            if self.config.max_session_seconds:
                self._tasks.spawn(self._limit_duration(self.config.max_session_seconds))
            await self._receive_loop()
        finally:
            if self._log_buffer is not None:
                self.host.log_hub.unsubscribe(self._log_buffer)
            await self._requests.cancel_all()
            await self._tasks.cancel_all()
            for session_id in list(self.sessions):
                await self.host.close_session(session_id)
            current_connection.reset(owner)

    async def _receive_loop(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if msg.type == WSMsgType.ERROR:
                logger.info("control socket error: %s", self.ws.exception())
                return
            if not await self._take_token():
                return
            if msg.type == WSMsgType.TEXT:
                await self._on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await self._reject(InvalidMessage("binary frames are not part of the protocol"))
            elif msg.type == WSMsgType.PING:  # autoping is off: answered here, on the budget
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.ws.pong(msg.data)
            # (a PONG needs nothing: any data from the peer resets the heartbeat)
            await asyncio.sleep(0)  # media and other clients run between any two messages

    async def _take_token(self) -> bool:
        """Take a token for the message just received, waiting for one (reading nothing
        more meanwhile) when there is none. ``False`` when the socket was held back too
        long and has been closed."""
        if self._bucket is None:
            return True
        wait = self._bucket.take()
        if wait:
            self.rate_limited_messages += 1
        while wait:
            held = self._throttle.add(wait)
            limit = self.config.rate_limit_close_after
            if limit is not None and held > limit:
                await self._close_rate_limited(held)
                return False
            await asyncio.sleep(wait)
            wait = self._bucket.take()
        return True

    async def _close_rate_limited(self, held: float) -> None:
        self.host.count_rate_limited_socket()  # now: the close itself takes a moment
        window = self.config.rate_limit_window
        logger.warning("closing control socket: over its message budget (%g a second, "
                       "burst %d) for %.1f s of the last %g s", self.config.message_rate,
                       self.config.message_burst, held, window)
        await self.send(m.error_from(RateLimited(
            f"more than {self.config.message_rate:g} messages a second (burst "
            f"{self.config.message_burst}) for {held:.1f} s of the last {window:g} s: "
            "closing this socket")))
        await self._close_reading_nothing_more(CLOSE_POLICY, "rate limit exceeded")

    async def _forward_logs(self, buffer: LogBuffer) -> None:
        while True:
            await asyncio.sleep(self.config.log_interval)
            lines = buffer.drain()
            for message in m.logs(lines):
                await self.send(message)

    def _pipeline_failed(self, session: MediaSession, message: str) -> None:
        """Tell this connection's client that one of its sessions stopped generating."""
        if session.session_id in self.sessions and not self.ws.closed:
            self._tasks.spawn(self.send(m.pipeline_failed(message, session.session_id)))

    async def _limit_duration(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.send(m.error_from(MaxDurationExceeded(
            f"maximum session duration of {seconds:g} s exceeded")))
        await self.close(1000, "max duration exceeded")

    async def _reject(self, exc: ProtocolError) -> None:
        await self.send(m.failure(exc))
        now = time.monotonic()
        self._bad_times = [t for t in self._bad_times if now - t < 10.0] + [now]
        if len(self._bad_times) > self.config.max_bad_messages:
            logger.warning("closing control socket: %d bad messages in 10 s", len(self._bad_times))
            await self._close_reading_nothing_more(CLOSE_POLICY, "too many invalid messages")

    async def _on_text(self, raw: str) -> None:
        try:
            request = m.parse_request(raw)
        except ProtocolError as exc:
            await self._reject(exc)
            return
        if isinstance(request, m.SetUserId):
            await self._serve(request)  # in order: the next request is judged with it
            return
        if self.config.require_user_id and self.user_id is None and request.type != "ping":
            await self._deny(request.request_id)
            return
        if len(self._requests) >= self.config.max_requests_in_flight:
            busy = Busy(f"{len(self._requests)} requests already in progress")
            await self.send(m.failure(busy, request.type, request.request_id))
            return
        self._requests.spawn(self._serve(request))

    async def _deny(self, request_id: str | None) -> None:
        await self.send(m.error_from(AccessDenied("Access denied"), request_id))
        await self.close(CLOSE_ACCESS_DENIED, "access denied")

    async def _serve(self, request: m.Request) -> None:
        try:
            reply = await asyncio.wait_for(self._handle(request), self.config.request_timeout)
        except TimeoutError:
            reply = m.failure(RequestTimeout(f"{request.type} did not finish within "
                                             f"{self.config.request_timeout:g} s"),
                              request.type, request.request_id)
        except ProtocolError as exc:
            reply = m.failure(exc, request.type, request.request_id)
        except Exception as exc:  # a bug of ours: answer, log, keep serving
            logger.exception("%s failed", request.type)
            reply = m.failure(Internal(f"internal error: {exc}"), request.type,
                              request.request_id)
        if reply is not None:
            await self.send(reply)

    # --- requests ------------------------------------------------------------------------
    async def _close_owned(self, request: m.CloseSession) -> dict[str, Any]:
        """End one of this connection's sessions. Anything else (another connection's, an
        id already closed, a made-up one) is ``UNKNOWN_SESSION`` and nothing is touched:
        a client cannot end, or probe for, another tenant's session, and asking twice
        leaves the cloud as asking once did."""
        if self.host.owned_session(request.session_id, self.connection_id) is None:
            raise UnknownSession(f"unknown sessionId {request.session_id!r}")
        self.sessions.discard(request.session_id)
        await self.host.close_session(request.session_id)
        logger.info("session %s closed at its client's request", short_id(request.session_id))
        return m.session_closed(request.request_id, request.session_id)

    async def _handle(self, request: m.Request) -> dict[str, Any] | None:
        rid = request.request_id
        if isinstance(request, m.Ping):
            return m.pong(rid)
        if isinstance(request, m.SetUserId):
            allowed = self.config.allowed_user_ids
            if allowed is not None and request.user_id not in allowed:
                await self._deny(rid)
                return None
            self.user_id = request.user_id
            return m.user_id_set(request.user_id, rid)
        if isinstance(request, m.GetIceServers):
            servers = self.host.ice.servers(self.user_id or self.connection_id[:8])
            return m.ice_servers(rid, servers)
        if isinstance(request, m.Offer):
            session = await self.host.create_session(request.sdp, request.initial_parameters,
                                                     owner=self.connection_id)
            # remember this connection's sessions (to close them with it), forgetting ended ones
            self.sessions = {sid for sid in self.sessions if sid in self.host.sessions}
            self.sessions.add(session.session_id)
            # (its runner starts once the peer connects, after this answer: nothing is missed)
            session.on_pipeline_failed = self._pipeline_failed
            return m.answer(rid, session.pc.localDescription.sdp, session.session_id)
        if isinstance(request, m.IceCandidate):
            # another connection's session answers as a made-up id does: nothing to probe
            target = self.host.owned_session(request.session_id, self.connection_id)
            if target is None:
                raise UnknownSession(f"unknown sessionId {request.session_id!r}")
            await target.add_candidate(request.candidate)
            return m.icecandidate_ack(rid)
        if isinstance(request, m.CloseSession):
            return await self._close_owned(request)
        if isinstance(request, m.ApiCall):
            result = await self.host.router.handle(request.method, request.path, request.body)
            return m.api_response(rid, result.status, result.data, result.error, result.code)
        raise InvalidMessage(f"unhandled message type {request.type!r}")
