"""BrowserSession: one browser peer connection, bridged to one cloud peer connection."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from scope_relay.protocol.capabilities import Capabilities, direction
from scope_relay.protocol.errors import InvalidMessage, ProtocolError
from scope_relay.protocol.parameters import parse_parameters_message
from scope_relay.rtc.ice import (
    add_remote_candidate,
    loopback_candidates,
    parse_candidate,
    rtc_configuration,
)
from scope_relay.rtc.sdp import refusing_bad_sdp, validate_offer_sdp
from scope_relay.util.tasks import OwnedTasks, RunOnce

from .camera import LatestFrameTrack
from .cloud_connection import CloudConnectionManager
from .cloud_peer import CloudWebRTCClient
from .frame_processor import FrameProcessor
from .output_tracks import AudioProcessingTrack, CloudTrack

logger = logging.getLogger(__name__)

#: keys that pick the chain: they belong to the negotiated session, not to live parameters
CHAIN_KEYS = frozenset({"pipeline_ids"})
#: parameters remembered for a cloud reconnect; beyond this the oldest key is forgotten
MAX_PARAMETER_KEYS = 256
#: a browser that never completes ICE (it went away after its offer) is let go after this
CONNECT_TIMEOUT = 60.0


async def chain_capabilities(connection: CloudConnectionManager,
                             pipeline_ids: Any) -> tuple[list[str], Capabilities]:
    """Ask the cloud (the only authority) for the chain's flags, loading it if needed."""
    if pipeline_ids is None:
        status, data = await connection.api("GET", "/api/v1/pipeline/status")
    else:
        status, data = await connection.api("POST", "/api/v1/pipeline/load",
                                            {"pipeline_ids": pipeline_ids}, timeout=600)
    if status >= 400:
        raise ProtocolError(str(data.get("detail", "pipeline load failed")),
                            code=str(data.get("code", "LOAD_FAILED")), status=status)
    if data.get("status") != "loaded":
        raise ProtocolError(f"pipeline not loaded: {data.get('error') or data.get('status')}",
                            code="NOT_LOADED", status=409)
    return list(data.get("pipeline_ids") or []), Capabilities.from_mapping(data)


class BrowserSession:
    def __init__(self, connection: CloudConnectionManager, *, ice_servers: list[dict],
                 loopback_ice: bool, cloud_loopback_ice: bool, playout_delay: float):
        self.session_id = uuid.uuid4().hex
        self.connection = connection
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.loopback_ice = loopback_ice
        self.cloud_loopback_ice = cloud_loopback_ice
        self.processor = FrameProcessor(playout_delay=playout_delay)
        self.cloud: CloudWebRTCClient | None = None
        self.capabilities: Capabilities | None = None
        self.pipeline_ids: list[str] = []
        self.video_track: CloudTrack | None = None
        self.audio_track: AudioProcessingTrack | None = None
        #: the browser's camera through a bounded pump this session owns: it keeps being
        #: drained while the cloud hop reconnects (aiortc's receive queue is unbounded)
        self.camera: LatestFrameTrack | None = None
        self.closed = asyncio.Event()
        self.on_closed: Callable[[str], object] | None = None
        #: every parameter update forwarded so far, merged: a new cloud connection after a
        #: network failure starts from them, not from the offer's initial values
        self.parameter_state: dict[str, Any] = {}
        self.cloud_reconnects = 0
        self.bad_parameter_messages = 0
        self.parameters_forgotten = 0
        self.connect_timeout = CONNECT_TIMEOUT
        self._cloud_params: dict[str, Any] = {}
        self._browser_sends_video = False
        self._tasks = OwnedTasks()
        self._close = RunOnce(self._close_once)

    async def handle_offer(self, sdp: Any, initial_parameters: Mapping[str, Any]) -> str:
        sdp = validate_offer_sdp(sdp)
        if not isinstance(initial_parameters, Mapping):
            raise InvalidMessage("initialParameters must be an object")
        self.pipeline_ids, caps = await chain_capabilities(
            self.connection, initial_parameters.get("pipeline_ids"))
        self.capabilities = caps

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self.camera is None:
                self.camera = LatestFrameTrack(track)

        @self.pc.on("datachannel")
        def on_datachannel(channel) -> None:
            if channel.label != "parameters":
                return

            @channel.on("message")
            def on_message(message: Any) -> None:
                # Nothing may escape into aiortc's SCTP transport (it would close the
                # connection): bad messages are refused and counted, never forwarded.
                try:
                    update = parse_parameters_message(message)
                except InvalidMessage as exc:
                    self.bad_parameter_messages += 1
                    logger.warning("session %s: bad parameters message: %s",
                                   self.session_id[:8], exc)
                    return
                if self.cloud is not None:
                    self.cloud.send_parameters(message)  # unchanged
                self._observe_parameters(update)

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self.close_soon()

        with refusing_bad_sdp("remote description"):
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        transceivers = self.pc.getTransceivers()
        browser_sends_video = any(t.kind == "video" and t._offerDirection in ("sendrecv", "sendonly")
                                  for t in transceivers)

        self._cloud_params = dict(initial_parameters)
        self._cloud_params["pipeline_ids"] = self.pipeline_ids
        self._browser_sends_video = browser_sends_video
        self.cloud = self._new_cloud_client()
        await self.cloud.connect(self._cloud_params)
        self._tasks.spawn(self._keep_cloud_connected())
        self._tasks.spawn(self._connect_watchdog())

        self._attach_tracks(transceivers, caps, browser_sends_video)
        with refusing_bad_sdp("answer"), loopback_candidates(self.loopback_ice):
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    def _attach_tracks(self, transceivers: list, caps: Capabilities,
                       browser_sends_video: bool) -> None:
        """Our tracks on the browser's m-lines, by the chain's flags (first of each kind)."""
        video_done = audio_done = False
        for t in transceivers:
            if t.kind == "video" and not video_done:
                video_done = True
                if caps.produces_video:
                    self.video_track = CloudTrack(self.processor)
                    t.sender.replaceTrack(self.video_track)
                t.direction = direction(caps.produces_video,
                                        caps.accepts_video and browser_sends_video)
            elif t.kind == "audio" and not audio_done and caps.produces_audio:
                audio_done = True
                self.audio_track = AudioProcessingTrack(self.processor)
                t.sender.replaceTrack(self.audio_track)
                t.direction = "sendonly"
            else:
                t.direction = "inactive"

    def _new_cloud_client(self) -> CloudWebRTCClient:
        assert self.capabilities is not None
        send_camera = self.capabilities.accepts_video and self._browser_sends_video
        return CloudWebRTCClient(self.connection, self.processor, self.capabilities,
                                 camera=self.camera if send_camera else None,
                                 loopback_ice=self.cloud_loopback_ice)

    def _observe_parameters(self, update: dict[str, Any]) -> None:
        """Remember what the browser set, to restore it on a new cloud hop; the chain
        itself stays the one this session negotiated."""
        self.parameter_state.update(
            (k, v) for k, v in update.items() if k not in CHAIN_KEYS)
        while len(self.parameter_state) > MAX_PARAMETER_KEYS:  # oldest keys go first
            del self.parameter_state[next(iter(self.parameter_state))]
            self.parameters_forgotten += 1


    async def _connect_watchdog(self) -> None:
        await asyncio.sleep(self.connect_timeout)
        if self.pc.connectionState != "connected":
            logger.warning("session %s: the browser did not connect in %.0f s",
                           self.session_id[:8], self.connect_timeout)
            self.close_soon()

    async def _keep_cloud_connected(self) -> None:
        """aiortc has no ICE restart: when the cloud hop fails, build a new peer connection
        to the cloud and feed the same FrameProcessor; the browser hop stays up (audio
        plays silence, video holds) and resumes on the cloud's clock."""
        backoff = 0.5
        while True:
            assert self.cloud is not None
            await self.cloud.failed.wait()
            logger.warning("session %s: cloud media connection lost, reconnecting",
                           self.session_id[:8])
            await self.cloud.close()
            while True:
                client = self._new_cloud_client()
                restored = dict(self.parameter_state)
                try:
                    await client.connect({**self._cloud_params, **restored})
                except BaseException as exc:
                    await client.close()
                    if not isinstance(exc, Exception):
                        raise  # cancelled by close(): the half-built client is closed too
                    logger.warning("session %s: reconnecting to the cloud failed: %s",
                                   self.session_id[:8], exc)
                    await asyncio.sleep(backoff)
                    backoff = min(2 * backoff, 10.0)
                    continue
                self.cloud, backoff = client, 0.5
                self.cloud_reconnects += 1
                # what the browser changed while we connected went to the old channel
                changed = {k: v for k, v in self.parameter_state.items()
                           if k not in restored or restored[k] != v}
                if changed:
                    client.send_parameters(json.dumps(changed))
                break

    async def add_candidates(self, candidates: Any) -> int:
        """Trickled browser candidates; an empty ``candidate`` is end-of-candidates, which
        lets ICE give up (and the session close) when no pair works."""
        if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
            raise InvalidMessage("'candidates' must be a list of candidate objects")
        parsed = [parse_candidate(c) for c in candidates]  # all valid, or none is added
        for candidate in parsed:
            await add_remote_candidate(self.pc, candidate)
        return sum(c is not None for c in parsed)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sessionId": self.session_id, "pipeline_ids": self.pipeline_ids,
                               "connection": self.pc.connectionState}
        if self.capabilities:
            out.update(self.capabilities.as_dict())
        out.update(self.processor.stats())
        if self.cloud:
            out.update(self.cloud.stats())
        out["cloud_reconnects"] = self.cloud_reconnects
        out["bad_parameter_messages"] = self.bad_parameter_messages
        out["parameters_forgotten"] = self.parameters_forgotten
        out["camera_frames_dropped"] = self.camera.dropped if self.camera else 0
        if self.video_track:
            out["video_frames_sent"] = self.video_track.frames_sent
        if self.audio_track:
            out["audio_frames_sent"] = self.audio_track.frames_sent
        return out

    def close_soon(self) -> None:
        """Start closing without waiting (from event handlers and watchdogs)."""
        self._close.start()

    async def close(self) -> None:
        await self._close()

    async def _close_once(self) -> None:
        self.closed.set()
        if self.on_closed:
            self.on_closed(self.session_id)
        await self._tasks.cancel_all()
        self.processor.close()
        if self.cloud is not None:
            await self.cloud.close()
        if self.camera is not None:
            self.camera.stop()
        await self.pc.close()
