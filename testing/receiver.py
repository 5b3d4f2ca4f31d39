"""A receiver peer standing in for the browser page: offers what the chain's flags need,
keeps what arrives (bounded), and lets a test wait for an amount of media."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from scope_relay.media.audio import frame_to_s16
from scope_relay.protocol import errors
from scope_relay.protocol.capabilities import Capabilities
from scope_relay.protocol.errors import PipelineFailed
from scope_relay.protocol.media import SAMPLE_RATE
from scope_relay.rtc.ice import rtc_configuration


class Receiver:
    """One peer connection to the relay, offered like the page offers it.

    Received audio is kept as int16 ``(2, n)`` 48 kHz blocks (the newest
    ``keep_audio_seconds``), video as RGB ``(H, W, 3)`` uint8 frames (the newest
    ``keep_video_frames``), so a long test cannot grow without bound.
    """

    def __init__(self, capabilities: Capabilities, *, camera: MediaStreamTrack | None = None,
                 keep_audio_seconds: float = 30.0, keep_video_frames: int = 120):
        self.capabilities = capabilities
        self.pc = RTCPeerConnection(rtc_configuration())
        self.session_id: str | None = None
        self.audio_samples = 0  # received in all
        self.video_frames = 0  # received in all
        self._audio: collections.deque[np.ndarray] = collections.deque()
        self._audio_kept = 0
        self._keep_audio = round(keep_audio_seconds * SAMPLE_RATE)
        self._video: collections.deque[np.ndarray] = collections.deque(maxlen=keep_video_frames)
        self._arrived = asyncio.Condition()
        self._readers: set[asyncio.Task[None]] = set()
        if capabilities.accepts_video and camera is not None:
            self.pc.addTransceiver(camera, direction="sendrecv" if capabilities.produces_video
                                   else "sendonly")
        elif capabilities.produces_video:
            self.pc.addTransceiver("video", direction="recvonly")
        if capabilities.produces_audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.channel = self.pc.createDataChannel("parameters", ordered=True)
        self._channel_open = asyncio.Event()
        self.channel.on("open", self._channel_open.set)
        self.channel.on("message", self._on_message)
        #: the cloud's reason, once its pipeline failed mid-stream (media then stops)
        self.failure: str | None = None
        self.pc.on("track", self._on_track)

    async def connect(self, relay_url: str, initial_parameters: Mapping[str, Any],
                      timeout: float = 60.0) -> None:
        """POST the offer to the relay and apply its answer; raises with the relay's reply
        when it refuses (an unknown pipeline, a failed load, ...)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with httpx.AsyncClient(base_url=relay_url, timeout=timeout) as http:
            response = await http.post("/api/v1/webrtc/offer", json={
                "sdp": self.pc.localDescription.sdp, "type": "offer",
                "initialParameters": dict(initial_parameters)})
        if response.status_code != 200:
            raise RuntimeError(f"the relay refused the offer ({response.status_code}): "
                               f"{response.text}")
        data = response.json()
        self.session_id = data["sessionId"]
        await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._own(self._read(track))

    def _own(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    def _on_message(self, message: Any) -> None:
        """The relay speaks on the channel only to say the pipeline failed."""
        try:
            data = json.loads(message) if isinstance(message, str) else None
        except ValueError:
            return
        if isinstance(data, dict) and data.get("code") == errors.PipelineFailed.code:
            self.failure = str(data.get("error"))
            self._own(self._wake())

    async def _wake(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, av.AudioFrame):
                    self._keep_audio_block(frame_to_s16(frame))
                elif isinstance(frame, av.VideoFrame):
                    self._video.append(frame.to_ndarray(format="rgb24"))
                    self.video_frames += 1
                async with self._arrived:
                    self._arrived.notify_all()

    def _keep_audio_block(self, block: np.ndarray) -> None:
        self._audio.append(block)
        self._audio_kept += block.shape[1]
        self.audio_samples += block.shape[1]
        while self._audio_kept - self._audio[0].shape[1] >= self._keep_audio:
            self._audio_kept -= self._audio.popleft().shape[1]

    @property
    def audio(self) -> np.ndarray:
        """All kept audio, int16 ``(2, n)`` at 48 kHz, oldest first."""
        if not self._audio:
            return np.zeros((2, 0), np.int16)
        return np.concatenate(list(self._audio), axis=1)

    @property
    def video(self) -> list[np.ndarray]:
        """The kept video frames, RGB ``(H, W, 3)`` uint8, oldest first."""
        return list(self._video)

    async def _until(self, predicate: Any, timeout: float, what: str) -> None:
        """Wait for ``predicate``; :class:`PipelineFailed` (the protocol's own error, so one
        ``except`` catches it from the kit and from a client alike) at once if the pipeline
        fails, its message the cloud's ``"<pipeline id>: <ExceptionType>: <message>"``."""
        try:
            async with self._arrived:
                await asyncio.wait_for(self._arrived.wait_for(
                    lambda: self.failure is not None or predicate()), timeout)
        except TimeoutError:
            raise TimeoutError(f"no {what} within {timeout:g} s") from None
        if self.failure is not None:
            raise PipelineFailed(self.failure)

    async def wait_audio(self, seconds: float, timeout: float = 20.0) -> np.ndarray:
        """The next ``seconds`` of audio to arrive, int16 ``(2, n)`` at 48 kHz."""
        want = round(seconds * SAMPLE_RATE)
        if want > self._keep_audio:
            raise ValueError(f"asked for {seconds} s; only {self._keep_audio / SAMPLE_RATE} s kept")
        start = self.audio_samples
        await self._until(lambda: self.audio_samples - start >= want, timeout,
                          f"{seconds:g} s of audio")
        kept = self.audio
        first = max(0, kept.shape[1] - (self.audio_samples - start))
        return kept[:, first:first + want]

    async def wait_video(self, frames: int, timeout: float = 20.0) -> list[np.ndarray]:
        """The next ``frames`` video frames to arrive, RGB ``(H, W, 3)`` uint8."""
        if frames > (self._video.maxlen or 0):
            raise ValueError(f"asked for {frames} frames; only {self._video.maxlen} kept")
        start = self.video_frames
        await self._until(lambda: self.video_frames - start >= frames, timeout,
                          f"{frames} video frames")
        kept = list(self._video)
        first = max(0, len(kept) - (self.video_frames - start))
        return kept[first:first + frames]

    async def send_parameters(self, updates: Mapping[str, Any], timeout: float = 10.0) -> None:
        """Send live parameter updates on the ``parameters`` data channel, as the page does;
        the cloud applies them at its next chunk boundary."""
        await asyncio.wait_for(self._channel_open.wait(), timeout)
        self.channel.send(json.dumps(dict(updates)))

    async def close(self) -> None:
        for task in list(self._readers):
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        await self.pc.close()
