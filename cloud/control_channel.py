"""The ``/ws`` control channel: ready handshake, signaling, API proxy, logs.

Requests are handled concurrently (a slow model load never blocks an offer or ICE), each
under a timeout; every failure is answered with its ``request_id`` and the connection
keeps serving. Failed ``api`` calls are ``api_response`` with status >= 400, because
Scope's client does not route ``error`` replies (docs/scope-compatibility.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from scope_relay.protocol import messages as m
from scope_relay.protocol.errors import (
    AccessDenied,
    Busy,
    InvalidMessage,
    ProtocolError,
    RequestTimeout,
    UnknownSession,
)
from scope_relay.util.tasks import OwnedTasks

if TYPE_CHECKING:
    from .app import CloudState

logger = logging.getLogger(__name__)

CLOSE_ACCESS_DENIED = 4003
CLOSE_POLICY = 1008


class ControlChannel:
    def __init__(self, state: CloudState, ws: web.WebSocketResponse):
        self.state = state
        self.config = state.config
        self.ws = ws
        self.connection_id = uuid.uuid4().hex
        self.user_id: str | None = None
        self.sessions: set[str] = set()
        self._send_lock = asyncio.Lock()
        self._tasks = OwnedTasks()  # log forwarding, the duration limit
        self._requests = OwnedTasks()  # requests in progress, served concurrently
        self._bad_times: list[float] = []

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
            reply = (m.api_response(rid, 413, {"detail": str(exc)}, str(exc), "TOO_LARGE")
                     if message.get("type") == "api_response" else m.error(str(exc), "TOO_LARGE", rid))
            text = m.encode(reply)
        async with self._send_lock:
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                pass  # the peer went away; the receive loop will notice

    async def shut_down(self, message: str, code: str) -> None:
        """Tell the client why (an unsolicited ``error``), then close the socket."""
        await self.send(m.error(message, code, status=503))
        await self.close(1001, message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (its sessions close as :meth:`run` ends)."""
        await self.ws.close(code=code, message=reason.encode()[:120])

    # --- lifecycle -----------------------------------------------------------------------
    async def run(self) -> None:
        log_buffer = None
        try:
            await self.state.ready.wait()
            await self.send(m.ready(self.connection_id))  # strictly the first message
            log_buffer = self.state.log_hub.subscribe()
            self._tasks.spawn(self._forward_logs(log_buffer))
            if self.config.max_session_seconds:
                self._tasks.spawn(self._limit_duration(self.config.max_session_seconds))
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._reject(InvalidMessage("binary frames are not part of the protocol"))
                elif msg.type == WSMsgType.ERROR:
                    logger.info("control socket error: %s", self.ws.exception())
                    break
        finally:
            if log_buffer is not None:
                self.state.log_hub.unsubscribe(log_buffer)
            await self._requests.cancel_all()
            await self._tasks.cancel_all()
            for session_id in list(self.sessions):
                await self.state.close_session(session_id)

    async def _forward_logs(self, buffer) -> None:
        while True:
            await asyncio.sleep(self.config.log_interval)
            lines = buffer.drain()
            for message in m.logs(lines):
                await self.send(message)

    async def _limit_duration(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.send(m.error(f"maximum session duration of {seconds:g} s exceeded",
                                "MAX_DURATION_EXCEEDED"))
        await self.close(1000, "max duration exceeded")

    async def _reject(self, exc: ProtocolError) -> None:
        await self.send(m.failure(exc, getattr(exc, "request_type", None)))
        now = time.monotonic()
        self._bad_times = [t for t in self._bad_times if now - t < 10.0] + [now]
        if len(self._bad_times) > self.config.max_bad_messages:
            logger.warning("closing control socket: %d bad messages in 10 s", len(self._bad_times))
            await self.close(CLOSE_POLICY, "too many invalid messages")

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
            reply = m.failure(ProtocolError(f"internal error: {exc}", code="INTERNAL", status=500),
                              request.type, request.request_id)
        if reply is not None:
            await self.send(reply)

    # --- requests ------------------------------------------------------------------------
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
            servers = self.state.ice.servers(self.user_id or self.connection_id[:8])
            return m.ice_servers(rid, servers)
        if isinstance(request, m.Offer):
            session = await self.state.create_session(request.sdp, request.initial_parameters)
            # remember this connection's sessions (to close them with it), forgetting ended ones
            self.sessions = {sid for sid in self.sessions if sid in self.state.sessions}
            self.sessions.add(session.session_id)
            return m.answer(rid, session.pc.localDescription.sdp, session.session_id)
        if isinstance(request, m.IceCandidate):
            target = self.state.sessions.get(request.session_id)
            if target is None:
                raise UnknownSession(f"unknown sessionId {request.session_id!r}")
            await target.add_candidate(request.candidate)
            return m.icecandidate_ack(rid)
        if isinstance(request, m.ApiCall):
            result = await self.state.router.handle(request.method, request.path, request.body)
            return m.api_response(rid, result.status, result.data, result.error, result.code)
        raise InvalidMessage(f"unhandled message type {request.type!r}")
