"""MPEG-TS over HTTP: one session's output encoded once and streamed to every client of
``GET /ts/{shareToken}`` (ffplay, VLC, OBS's Media Source).

A :class:`TsStream` subscribes to the session's fan-out like a viewer, queues what it
reads (bounded: :data:`MAX_PENDING` frames, the oldest dropped and counted), encodes and
muxes in one worker thread of its own (``ts_mux.py``; the event loop never waits on a
codec) and hands each chunk to every client. A client is a bounded queue
(:data:`CLIENT_CHUNKS`); one that does not keep up (it stopped reading, or its network
is too slow) is dropped, its connection closed, and counted: the others never wait for
it. A client joining a running stream gets the stream's PAT/PMT first, then the stream
from its next keyframe (at most ``KEYFRAME_INTERVAL`` away).
The stream starts with its first client and stops with its last.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import statistics
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError

from scope_relay.local.outputs.ts_mux import TsMuxer, keyframe_at
from scope_relay.local.sessions.fanout import CountedSubscription, OutputFanout
from scope_relay.util.tasks import OwnedTasks, RunOnce

logger = logging.getLogger(__name__)

CONTENT_TYPE = "video/mp2t"
#: frames read from the fan-out and not yet encoded (a slow encoder drops the oldest)
MAX_PENDING = 60
#: chunks (one per frame muxed, ~77 a second for 30 fps + audio) a client may lag before
#: it is dropped: about 2 s
CLIENT_CHUNKS = 150
#: the kernel's send buffer for a client's socket: small, so a client that stops reading
#: shows as a full queue within seconds instead of hiding behind megabytes of buffer
SEND_BUFFER = 64 * 1024
#: frames the latency figure is the median of
LATENCY_WINDOW = 100


class TsClient:
    """One HTTP client of a stream: the chunks it has yet to send, bounded."""

    def __init__(self, transport: Any):
        self.transport = transport
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_CHUNKS)
        self.bytes_sent = 0
        self.dropped = False
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    def offer(self, chunk: bytes) -> bool:
        """Queue ``chunk``; False when the client is too far behind to take it."""
        try:
            self.queue.put_nowait(chunk)
        except asyncio.QueueFull:
            return False
        return True

    def end(self, *, drop: bool) -> None:
        """No more chunks: the client's handler returns (at once when dropped: its
        connection is closed, which also ends a write stuck on a full socket)."""
        self.dropped = drop
        if drop:
            while not self.queue.empty():
                self.queue.get_nowait()
            if self.transport is not None:
                self.transport.close()
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:  # cannot even say it ended: close its connection
            if self.transport is not None:
                self.transport.close()


class TsStream:
    """One session's MPEG-TS, encoded once for all of its clients."""

    def __init__(self, fanout: OutputFanout, *, video: bool, audio: bool):
        self.fanout = fanout
        # decoded: the session's lazy decoder runs while this output is attached
        self.video, self.audio = fanout.subscribe(video=video, audio=audio, decoded=True,
                                                  name="ts")
        self.muxer = TsMuxer(video=self.video is not None, audio=self.audio is not None)
        self.clients: set[TsClient] = set()
        #: clients waiting for the next keyframe to start on
        self._joining: set[TsClient] = set()
        self._pending: asyncio.Queue[tuple[float, av.VideoFrame | av.AudioFrame]] = \
            asyncio.Queue(MAX_PENDING)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ts-mux")
        self._tasks = OwnedTasks()
        self._close = RunOnce(self._close_once)
        # figures
        self.frames_sent = 0
        self.frames_dropped = 0
        self.clients_dropped = 0
        self.bytes_sent = 0
        #: why encoding stopped (a codec error), if it did: the clients were let go
        self.failed: str | None = None
        #: no more chunks will come (the session's tracks ended, or encoding failed)
        self.done = False
        #: from a frame's release by the fan-out to its bytes queued for the clients (ms)
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        for sub in (self.video, self.audio):
            if sub is not None:
                self._tasks.spawn(self._read(sub))
        self._tasks.spawn(self._encode())

    def join(self, transport: Any) -> TsClient:
        """A new client. The stream's first clients get it from its start (a keyframe);
        later ones its PAT/PMT and then the stream from its next keyframe (at most
        ``KEYFRAME_INTERVAL`` away), so a decoder never starts on a partial picture."""
        client = TsClient(transport)
        if self.muxer.started and self.muxer.has_video:
            self._joining.add(client)
        elif self.muxer.started:  # audio only: every AAC frame stands alone
            client.offer(self.muxer.header)
        self.clients.add(client)
        return client

    def leave(self, client: TsClient) -> None:
        self.clients.discard(client)
        self._joining.discard(client)

    def sent(self, client: TsClient, count: int) -> None:
        """``count`` bytes went out to ``client``."""
        client.bytes_sent += count
        self.bytes_sent += count

    async def _read(self, sub: CountedSubscription) -> None:
        try:
            while True:
                frame = await sub.recv()
                if self._pending.full():  # the encoder is behind: the oldest goes
                    self._pending.get_nowait()
                    self.frames_dropped += 1
                self._pending.put_nowait((time.monotonic(), frame))
        except MediaStreamError:  # the session ended
            self._end()

    async def _encode(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            released, frame = await self._pending.get()
            try:
                chunk = await loop.run_in_executor(self._executor, self.muxer.add, frame)
            except Exception as exc:  # a codec error ends this output, never the session
                logger.exception("MPEG-TS output failed")
                self.failed = f"{type(exc).__name__}: {exc}"
                self._end()
                return
            self.frames_sent += 1
            self._latencies.append((time.monotonic() - released) * 1000)
            if chunk:
                self._deliver(chunk)

    def _deliver(self, chunk: bytes) -> None:
        started: set[TsClient] = set()
        if self._joining:  # clients that joined mid-stream start with a keyframe
            start = keyframe_at(chunk)
            if start is not None:
                started, self._joining = self._joining, set()
                for client in started:  # (their queues are empty: this fits)
                    client.offer(self.muxer.header + chunk[start:])
        for client in list(self.clients):
            if client in self._joining or client in started:
                continue
            if not client.offer(chunk):
                logger.warning("MPEG-TS client dropped: %d chunks behind", CLIENT_CHUNKS)
                self.clients_dropped += 1
                self.leave(client)
                client.end(drop=True)

    def _end(self) -> None:
        self.done = True
        for client in list(self.clients):
            self.leave(client)
            client.end(drop=False)

    def latency_ms(self) -> float:
        """Median over the recent frames (0 before the first)."""
        return round(statistics.median(self._latencies), 1) if self._latencies else 0.0

    def stats(self) -> dict[str, Any]:
        return {"clients": len(self.clients), "frames_sent": self.frames_sent,
                "frames_dropped": self.frames_dropped, "clients_dropped": self.clients_dropped,
                "bytes_sent": self.bytes_sent,
                "latency_ms": self.latency_ms()}

    async def close(self) -> None:
        await self._close()

    async def _close_once(self) -> None:
        self._end()
        await self._tasks.cancel_all()
        self.fanout.unsubscribe(self.video, self.audio)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.muxer.close)
        self._executor.shutdown(wait=False)
