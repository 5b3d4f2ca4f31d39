"""MediaSession: one WebRTC peer connection running one pipeline chain."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from scope_relay.protocol.capabilities import Capabilities, direction
from scope_relay.protocol.errors import InvalidMessage, NotReady
from scope_relay.protocol.parameters import parse_parameters_message
from scope_relay.rtc.ice import (
    add_remote_candidate,
    loopback_candidates,
    parse_candidate,
    rtc_configuration,
)
from scope_relay.rtc.sdp import refusing_bad_sdp, validate_offer_sdp
from scope_relay.util.tasks import OwnedTasks, RunOnce

from .media_buffer import MediaBuffer
from .output_tracks import TimedAudioTrack, TimedVideoTrack
from .pipeline_manager import PipelineManager
from .pipeline_runner import PipelineRunner
from .pipelines.base import InputFrame

logger = logging.getLogger(__name__)

#: Offer keys that select the chain or are mere hints; everything else is a parameter.
_NON_PARAMETER_KEYS = {"pipeline_ids", "produces_video", "produces_audio", "accepts_video"}


class MediaSession:
    def __init__(self, manager: PipelineManager, *, ice_servers: list[dict[str, Any]],
                 loopback_ice: bool = False, playout_delay: float = 0.1,
                 max_buffer: float = 6.0, connect_timeout: float = 30.0):
        self.session_id = uuid.uuid4().hex
        self.manager = manager
        self.loopback_ice = loopback_ice
        self.playout_delay = playout_delay
        self.max_buffer = max_buffer
        self.connect_timeout = connect_timeout
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.pipeline_ids: list[str] = []
        self.capabilities: Capabilities | None = None
        self.runner: PipelineRunner | None = None
        self.buffer: MediaBuffer | None = None
        self.audio_track: TimedAudioTrack | None = None
        self.video_track: TimedVideoTrack | None = None
        self.created = time.monotonic()
        self.closed = asyncio.Event()
        self.bad_parameter_messages = 0
        self.drained_input_frames = 0
        self._tasks = OwnedTasks()
        self._close = RunOnce(self._close_once)
        self.on_closed: Callable[[str], object] | None = None


    async def accept_offer(self, sdp: str, initial_parameters: Mapping[str, Any]) -> str:
        """Set up the chain and tracks for ``sdp``; returns the answer SDP."""
        validate_offer_sdp(sdp)
        chain_ids = initial_parameters.get("pipeline_ids")
        if chain_ids is None:
            if self.manager.state.status != "loaded":
                raise NotReady("no pipeline is loaded: pass initialParameters.pipeline_ids "
                               "or POST /api/v1/pipeline/load first")
            chain_ids = self.manager.state.pipeline_ids
        state = await self.manager.load(chain_ids)
        if state.status != "loaded":
            raise NotReady(f"pipeline chain {state.pipeline_ids} failed to load: {state.error}")
        self.pipeline_ids = list(state.pipeline_ids)
        caps = self.manager.registry.capabilities(self.pipeline_ids)
        self.capabilities = caps

        loop = asyncio.get_running_loop()
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)
        with refusing_bad_sdp("remote description"):
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))

        has_audio_mline = any(t.kind == "audio" for t in self.pc.getTransceivers())
        self.buffer = MediaBuffer(loop, playout_delay=self.playout_delay,
                                  max_buffer=self.max_buffer,
                                  audio_clocked=caps.produces_audio and has_audio_mline)
        video_done = audio_done = False
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video" and not video_done:
                video_done = True
                if caps.produces_video:
                    self.video_track = TimedVideoTrack(self.buffer)
                    transceiver.sender.replaceTrack(self.video_track)
                transceiver.direction = direction(caps.produces_video, caps.accepts_video)
            elif transceiver.kind == "audio" and not audio_done:
                audio_done = True
                if caps.produces_audio:
                    self.audio_track = TimedAudioTrack(self.buffer)
                    transceiver.sender.replaceTrack(self.audio_track)
                transceiver.direction = "sendonly" if caps.produces_audio else "inactive"
            else:
                transceiver.direction = "inactive"

        params = {k: v for k, v in initial_parameters.items() if k not in _NON_PARAMETER_KEYS}
        # A real model's constructor takes seconds: never on the event loop other sessions use.
        chain = await asyncio.to_thread(self.manager.instantiate, self.pipeline_ids)
        self.runner = PipelineRunner(chain, self.buffer, params=params)
        with refusing_bad_sdp("answer"), loopback_candidates(self.loopback_ice):
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._tasks.spawn(self._connect_watchdog())
        return self.pc.localDescription.sdp

    async def add_candidate(self, candidate: Mapping[str, Any] | None) -> None:
        """A trickled candidate; ``None`` (or an empty one) is end-of-candidates."""
        await add_remote_candidate(self.pc, None if candidate is None else parse_candidate(candidate))

    # --- events --------------------------------------------------------------------------
    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        logger.info("session %s: connection %s", self.session_id[:8], state)
        if state == "connected" and self.runner and not self.runner._thread.is_alive():
            self.runner.start()
        elif state in ("failed", "closed"):
            self._close.start()

    async def _connect_watchdog(self) -> None:
        await asyncio.sleep(self.connect_timeout)
        if self.pc.connectionState != "connected":
            logger.warning("session %s did not connect in %.0f s", self.session_id[:8],
                           self.connect_timeout)
            await self.close()

    def _on_track(self, track) -> None:
        if track.kind == "video" and self.capabilities and self.capabilities.accepts_video:
            self._tasks.spawn(self._consume_input(track))
        else:
            self._tasks.spawn(self._drain(track))  # never let aiortc's unbounded queue pile up

    async def _drain(self, track) -> None:
        try:
            while True:
                await track.recv()
                self.drained_input_frames += 1
        except MediaStreamError:
            pass

    async def _consume_input(self, track) -> None:
        first_time: float | None = None
        base = 0.0
        try:
            while True:
                frame = await track.recv()
                if self.runner is None or self.runner.inputs is None:
                    continue
                t = float(frame.time or 0.0)
                if first_time is None:
                    first_time, base = t, max(self.buffer.media_now(), 0.0)
                rgb = await asyncio.to_thread(frame.to_ndarray, format="rgb24")
                self.runner.inputs.put(InputFrame(rgb, base + t - first_time))
        except MediaStreamError:
            pass

    def _on_datachannel(self, channel) -> None:
        if channel.label != "parameters":
            return

        @channel.on("message")
        def on_message(message: Any) -> None:
            # An exception escaping here would travel up into aiortc's SCTP transport and
            # close the whole peer connection: bad messages are refused and counted.
            try:
                updates = parse_parameters_message(message)
            except InvalidMessage as exc:
                self.bad_parameter_messages += 1
                logger.warning("session %s: bad parameters message: %s", self.session_id[:8], exc)
                return
            if self.runner is not None:
                self.runner.update_params(updates)

    async def close(self) -> None:
        await self._close()

    async def _close_once(self) -> None:
        self.closed.set()
        if self.on_closed is not None:
            self.on_closed(self.session_id)
        if self.runner is not None:
            self.runner.request_stop()  # at once: the worker stops producing
        await self._tasks.cancel_all()
        if self.buffer is not None:
            self.buffer.close()
        if self.runner is not None:
            await asyncio.to_thread(self.runner.stop)
        await self.pc.close()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sessionId": self.session_id, "pipeline_ids": self.pipeline_ids,
                               "connection": self.pc.connectionState}
        if self.capabilities:
            out.update(self.capabilities.as_dict())
        if self.buffer:
            out.update(self.buffer.stats())
        if self.audio_track:
            out["audio_frames_sent"] = self.audio_track.frames_sent
            out["clipped_samples"] = self.audio_track.clipped_samples
        if self.video_track:
            out["video_frames_sent"] = self.video_track.frames_sent
            out["late_video_frames"] = self.video_track.late_frames
        if self.runner:
            out["pipeline_errors"] = self.runner.errors
            out["rejected_parameters"] = self.runner.rejected_params
            out["input_frames_dropped"] = self.runner.inputs.dropped if self.runner.inputs else 0
            out["nonfinite_samples"] = self.runner._resampler.nonfinite_samples
        out["drained_input_frames"] = self.drained_input_frames
        out["bad_parameter_messages"] = self.bad_parameter_messages
        return out
