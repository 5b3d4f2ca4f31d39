"""A stand-in for Scope's own cloud client (CloudConnectionManager + CloudWebRTCClient,
v0.1-v0.2 cloud mode), written from docs/scope-compatibility.md (the Scope client's
behaviours; the messages are docs/protocol.md), not from our relay: it behaves the way that
client does, quirks included.

- waits for ``ready`` as the first text message (30 s to connect, 180 s for ready);
- sends no ``Authorization`` header and never sends ``ping``;
- sends ``set_user_id`` without a ``request_id`` and does not wait for the reply;
- consumes every ``type: "error"`` message without routing it to a waiter (so an error
  reply to a request surfaces only as that request's timeout);
- matches replies by ``request_id``, treats a missing ``status`` as 200, reads
  ``data.detail`` (or ``error``) on failure;
- offers a ``sendrecv`` video m-line first, always, sending ~1 fps black 512x512 frames,
  then a ``recvonly`` audio m-line only when its ``produces_audio`` hint is true, then the
  ``parameters`` data channel; ``initialParameters`` only when non-empty, ``user_id``
  only when set; it carries keys our cloud does not use.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import re
import time
import uuid
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from helpers.control import open_control

logger = logging.getLogger("scope_like_client")
SCOPE_EXTRA_KEYS = {"input_mode": "text", "prompt_interpolation_method": "linear",
                    "vace_context_scale": 1.0, "graph": {"nodes": []},
                    "source_track_order": ["video"]}


class ScopeApiError(Exception):
    pass


class BlackFrames(MediaStreamTrack):
    """What Scope sends on its video m-line when the chain takes no input: ~1 fps black."""

    kind = "video"

    def __init__(self):
        super().__init__()
        self.sent = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self.sent - time.monotonic()))
        frame = av.VideoFrame.from_ndarray(np.zeros((512, 512, 3), np.uint8), format="rgb24")
        frame.pts = self.sent * 90_000
        frame.time_base = fractions.Fraction(1, 90_000)
        self.sent += 1
        return frame


class ScopeLikeClient:
    def __init__(self, ws_url: str, user_id: str | None = None):
        self.ws_url = ws_url
        self.user_id = user_id
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.first_message: dict | None = None
        self.errors: list[dict] = []  # every error message received, never routed
        self.log_messages: list[list[str]] = []
        self.all_messages: list[dict] = []
        self._pending: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self.pc: RTCPeerConnection | None = None
        self.black = BlackFrames()
        self.session_id: str | None = None
        self.audio_frames = 0
        self.video_frames = 0
        self._tasks: list[asyncio.Task] = []
        self._media = asyncio.Event()
        self._logs = asyncio.Event()

    async def wait_log_lines(self, marker: str, count: int, timeout: float = 10.0) -> None:
        async def enough():
            while sum(marker in line for batch in self.log_messages for line in batch) < count:
                self._logs.clear()
                await self._logs.wait()
        await asyncio.wait_for(enough(), timeout)

    async def wait_media(self, audio: int = 0, video: int = 0, timeout: float = 20.0) -> None:
        async def enough():
            while self.audio_frames < audio or self.video_frames < video:
                self._media.clear()
                await self._media.wait()
        await asyncio.wait_for(enough(), timeout)

    async def connect(self) -> None:
        self.http = aiohttp.ClientSession()
        # no auth header; 30 s to connect, then up to 180 s for ready, asserted to be first
        self.ws, self.first_message = await open_control(
            self.http, self.ws_url, connect_timeout=30, ready_timeout=180)
        self._reader = asyncio.ensure_future(self._read())
        if self.user_id:
            await self.ws.send_str(json.dumps({"type": "set_user_id", "user_id": self.user_id}))

    async def _read(self) -> None:
        assert self.ws is not None  # started by connect()
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            self.all_messages.append(data)
            if data.get("type") == "error":
                self.errors.append(data)  # consumed here, like Scope's client
                continue
            if data.get("type") == "logs":
                self.log_messages.append(data["lines"])
                self._logs.set()
                for line in data["lines"]:
                    match = re.search(r" - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - ", line)
                    logger.log(getattr(logging, match.group(1)) if match else logging.INFO, line)
                continue
            future = self._pending.pop(data.get("request_id"), None)
            if future is not None and not future.done():
                future.set_result(data)

    async def request(self, msg_type: str, timeout: float = 30.0, **fields: Any) -> dict:
        request_id = str(uuid.uuid4())
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        assert self.ws is not None, "request() before connect()"
        await self.ws.send_str(json.dumps({"type": msg_type, "request_id": request_id, **fields}))
        reply = await asyncio.wait_for(future, timeout)
        reply.setdefault("status", 200)
        return reply

    async def api(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> dict:
        fields = {"method": method, "path": path}
        if body is not None:
            fields["body"] = body
        reply = await self.request("api", timeout=timeout, **fields)
        if reply["status"] >= 400:
            data = reply.get("data") or {}
            raise ScopeApiError(data.get("detail") or reply.get("error"))
        return reply["data"]

    async def start_webrtc(self, initial_parameters: dict | None, produces_audio: bool,
                           timeout: float = 30.0) -> None:
        ice = await self.request("get_ice_servers")
        servers = [RTCIceServer(**{k: v for k, v in s.items()
                                   if k in ("urls", "username", "credential")})
                   for s in ice["data"]["iceServers"]]
        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        pc.addTransceiver(self.black, direction="sendrecv")
        if produces_audio:
            pc.addTransceiver("audio", direction="recvonly")
        pc.createDataChannel("parameters")
        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        def on_state():
            if pc.connectionState == "connected":
                connected.set()

        @pc.on("track")
        def on_track(track):
            self._tasks.append(asyncio.ensure_future(self._count(track)))

        await pc.setLocalDescription(await pc.createOffer())
        fields: dict[str, Any] = {"sdp": pc.localDescription.sdp, "sdp_type": "offer"}
        if initial_parameters:
            fields["initialParameters"] = initial_parameters
        if self.user_id:
            fields["user_id"] = self.user_id
        answer = await self.request("offer", **fields)
        self.session_id = answer["sessionId"]
        self.answer_sdp = answer["sdp"]
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await asyncio.wait_for(connected.wait(), timeout)

    async def _count(self, track) -> None:
        try:
            while True:
                await track.recv()
                if track.kind == "audio":
                    self.audio_frames += 1
                else:
                    self.video_frames += 1
                self._media.set()
        except MediaStreamError:
            pass

    async def wait_closed(self, timeout: float) -> None:
        """Until the server ends the control socket (the reader has read its last message)."""
        assert self._reader is not None, "not connected"
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.pc:
            await self.pc.close()
        if self.ws:
            await self.ws.close()
        if self._reader:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.http:
            await self.http.close()
