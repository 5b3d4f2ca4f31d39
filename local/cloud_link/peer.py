"""CloudWebRTCClient: the relay's peer connection to the cloud app.

Transceivers follow the chain's flags: video (recvonly, or sendrecv carrying the
browser's camera when the chain accepts video) only when the chain produces or accepts
video; an audio transceiver when it produces audio (recvonly) or accepts it and the
browser sends its microphone (sendonly, or sendrecv carrying it). Received packed-s16
audio is de-interleaved into the FrameProcessor; both tracks are stamped with cloud time
from the sender reports before anything is queued. Once the cloud has answered, the
client watches its cloud session on the control socket: a ``PIPELINE_FAILED`` for it sets
:attr:`CloudWebRTCClient.pipeline_failed` and calls ``on_pipeline_failed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from scope_relay.local.cloud_link.control_socket import CONNECTION_LOST, CloudConnectionManager
from scope_relay.local.inputs.camera_uplink import CameraFeed, LatestFrameTrack
from scope_relay.local.inputs.microphone_uplink import AudioForwarder, MicrophoneFeed
from scope_relay.local.playout.frame_processor import FrameProcessor
from scope_relay.local.playout.track_timing import TrackTimer
from scope_relay.media.audio import float_to_s16, frame_channel_names, frame_to_array, frame_to_s16
from scope_relay.media.resample import TimedResampler
from scope_relay.protocol import messages as m
from scope_relay.protocol.capabilities import Capabilities
from scope_relay.protocol.errors import PipelineFailed, Unavailable
from scope_relay.protocol.media import SAMPLE_RATE, VIDEO_CLOCK_RATE
from scope_relay.rtc.ice import loopback_candidates, rtc_configuration
from scope_relay.rtc.keyframe_requests import UpstreamKeyframes, pass_keyframe_requests
from scope_relay.rtc.receive_path import EncodedVideo, ReceivePath, install_receive_path
from scope_relay.util.counters import Counters
from scope_relay.util.tasks import OwnedTasks, RunOnce

logger = logging.getLogger(__name__)

#: parameter messages queued in SCTP beyond this are dropped (counted), not buffered forever
MAX_PARAMETERS_BUFFERED = 1 << 20


@dataclass(slots=True)
class CloudPeerCounts(Counters):
    """What the relay's peer to the cloud dropped, clipped and forwarded."""

    pending_dropped: int = 0  # frames held before the first sender report, oldest dropped
    clipped_samples: int = 0  # audio samples outside [-1, 1], clipped
    parameters_forwarded: int = 0
    parameters_dropped: int = 0  # over the data channel's unsent-bytes bound
    notices_received: int = 0  # parameter_refused, pipeline_reload_failed from the cloud
    unknown_channel_messages: int = 0  # anything else the cloud sent there (ignored)

class CloudWebRTCClient:
    def __init__(self, connection: CloudConnectionManager, processor: FrameProcessor,
                 capabilities: Capabilities, *, camera: LatestFrameTrack | None = None,
                 microphone: AudioForwarder | None = None,
                 loopback_ice: bool = False, connect_timeout: float = 30.0,
                 sync_timeout: float = 3.0, max_pending: int = 400,
                 on_video: Callable[[], object] | None = None,
                 forward_video: Callable[[str], bool] | None = None):
        self.connection = connection
        self.processor = processor
        self.capabilities = capabilities
        self.camera = camera
        self.microphone = microphone
        self.loopback_ice = loopback_ice
        self.connect_timeout = connect_timeout
        self.sync_timeout = sync_timeout
        self.max_pending = max_pending
        #: called for each video frame received (the relay's figures count them)
        self.on_video = on_video
        #: which video codecs are forwarded still encoded (the page takes them as they
        #: are); None: every frame is decoded, as before forwarding existed
        self.forward_video = forward_video
        #: keyframe requests from downstream, one PLI at a time to the cloud
        self.keyframes: UpstreamKeyframes | None = None
        self.session_id: str | None = None
        self.pc: RTCPeerConnection | None = None
        self._connected = asyncio.Event()  # replaced by negotiate() for its connection
        self._channel_open = asyncio.Event()
        self.channel: Any = None  # aiortc's RTCDataChannel once connected
        self._timers: dict[str, TrackTimer] = {}
        #: our jitter buffers and loss handling on each receiver (rtc/receive_path.py)
        self.receive_paths: dict[str, ReceivePath] = {}
        self._tasks = OwnedTasks()
        self._close = RunOnce(self._close_once)
        self._resampler = TimedResampler()
        self.counts = CloudPeerCounts()
        self.closed = asyncio.Event()
        self.failed = asyncio.Event()
        #: the cloud's reason once its pipeline failed mid-stream (no reconnect cures that)
        self.pipeline_failed: str | None = None
        #: called with :attr:`pipeline_failed` when the cloud reports it
        self.on_pipeline_failed: Callable[[str], object] | None = None
        #: called with each notice the cloud sends on the channel (protocol/messages.py:
        #: CHANNEL_NOTICES: a refused parameter value, a ``--reload`` edit that did not load)
        self.on_notice: Callable[[dict[str, Any]], object] | None = None

    async def connect(self, initial_parameters: Mapping[str, Any]) -> str:
        """Negotiate, then wait until media and parameters can flow."""
        session_id = await self.negotiate(initial_parameters)
        await self.wait_connected()
        return session_id

    async def negotiate(self, initial_parameters: Mapping[str, Any]) -> str:
        """Offer to the cloud and apply its answer; returns the cloud session id. Raises
        what the cloud refused (unknown pipeline, no capacity, ...). ICE and DTLS go on
        in the background: :meth:`wait_connected` waits for them."""
        servers = m.parse_ice_servers(await self.connection.request(m.GetIceServers()))
        self.pc = pc = RTCPeerConnection(rtc_configuration(servers))
        caps = self.capabilities
        self._connected = connected = asyncio.Event()
        self._channel_open = channel_open = asyncio.Event()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            # (DEBUG: the browser session's line says the session is up, the hop's that
            # the cloud hop failed and is being rebuilt)
            logger.debug("cloud peer: %s", pc.connectionState)
            if pc.connectionState == "connected":
                connected.set()
            elif pc.connectionState in ("failed", "closed"):
                self.failed.set()
                connected.set()
                channel_open.set()  # nothing more to wait for

        pc.on("track", self._on_track)
        if caps.produces_video or caps.accepts_video:
            if caps.accepts_video and self.camera is not None:
                feed = CameraFeed(self.camera)
                transceiver = pc.addTransceiver(
                    feed, direction="sendrecv" if caps.produces_video else "sendonly")
                feed.sender = transceiver.sender
                # forwarded camera frames: only the camera's sender can make a keyframe
                pass_keyframe_requests(transceiver.sender, self.camera.request_keyframe)
            else:
                transceiver = pc.addTransceiver("video", direction="recvonly")
            self._timers["video"] = TrackTimer(transceiver.receiver, VIDEO_CLOCK_RATE,
                                                self.sync_timeout)
            path = self.receive_paths["video"] = install_receive_path(transceiver.receiver,
                                                                       "video")
            if self.forward_video is not None:
                path.forward_video(self._on_encoded_video, self.forward_video)
                self.keyframes = UpstreamKeyframes(path.request_keyframe, lambda: path.rtt)
                self.processor.request_keyframe = self.keyframes.request
        if caps.accepts_audio and self.microphone is not None:  # the browser's microphone up
            transceiver = pc.addTransceiver(MicrophoneFeed(self.microphone),
                                            direction="sendrecv" if caps.produces_audio else "sendonly")
        elif caps.produces_audio:
            transceiver = pc.addTransceiver("audio", direction="recvonly")
        if caps.produces_audio:
            self._timers["audio"] = TrackTimer(transceiver.receiver, SAMPLE_RATE,
                                                self.sync_timeout)
            self.receive_paths["audio"] = install_receive_path(transceiver.receiver, "audio")
            # holes decided against what the playout can still play (rtc/receive_path.py)
            self.receive_paths["audio"].attach_playout(self.processor.hold_budget,
                                                       self.processor.want_hold)
            if "video" in self.receive_paths:  # audio waits in the hop's queue too
                self.receive_paths["video"].watch_queue(self.processor.queue_seen)
        if "video" in self._timers and "audio" in self._timers:
            video, audio = self._timers["video"], self._timers["audio"]
            video.follower_of = audio
            video.sibling, audio.sibling = audio, video
        self.channel = pc.createDataChannel("parameters", ordered=True)
        self.channel.on("open", channel_open.set)
        self.channel.on("message", self._on_channel_message)

        with loopback_candidates(self.loopback_ice):
            await pc.setLocalDescription(await pc.createOffer())
        offer = m.Offer(None, pc.localDescription.sdp, initial_parameters=dict(initial_parameters))
        answer = m.parse_answer(await self.connection.request(offer))
        self.session_id = answer.session_id
        # before the peer can connect (and the cloud's runner start): nothing is missed
        self.connection.watch_session(answer.session_id, self._on_cloud_error)
        await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
        return self.session_id or ""

    async def wait_connected(self) -> None:
        """Wait for the negotiated connection to carry media and the data channel; raises
        :class:`Unavailable` if it fails or takes longer than ``connect_timeout``."""
        connected, channel_open = self._connected, self._channel_open
        try:
            await asyncio.wait_for(connected.wait(), self.connect_timeout)
            if not self.failed.is_set():  # connected: parameters can flow once SCTP is up
                await asyncio.wait_for(channel_open.wait(), self.connect_timeout)
        except TimeoutError:
            raise Unavailable(
                f"WebRTC to the cloud did not connect in {self.connect_timeout:g} s") from None
        if self.failed.is_set():
            raise Unavailable("WebRTC connection to the cloud failed")

    def _on_cloud_error(self, failure: m.ErrorReply) -> None:
        if failure.code == CONNECTION_LOST:  # the cloud ended our session: rebuild at once
            # (DEBUG: the control socket's line says why, the hop's that it reconnects)
            logger.debug("cloud session %s: %s", (self.session_id or "")[:8], failure.message)
            self.failed.set()
            return
        if failure.code != PipelineFailed.code:
            logger.warning("cloud session %s: %s: %s", (self.session_id or "")[:8],
                           failure.code, failure.message)
            return
        if self.pipeline_failed is not None or self.closed.is_set():
            return
        self.pipeline_failed = failure.message
        if self.on_pipeline_failed is not None:
            self.on_pipeline_failed(failure.message)

    def _on_channel_message(self, raw: Any) -> None:
        """A notice from the cloud; anything else is ignored (counted). Never raises: an
        exception here would reach aiortc's SCTP transport and end the connection."""
        notice = m.parse_channel_notice(raw)
        if notice is None:
            self.counts.unknown_channel_messages += 1
            return
        self.counts.notices_received += 1
        if self.on_notice is not None:
            try:
                self.on_notice(notice)
            except Exception:
                logger.exception("handling a cloud notice failed")

    def send_parameters(self, message: str) -> None:
        """Forward a browser ``parameters`` message unchanged (observe, never edit)."""
        channel = self.channel
        if (channel is not None and channel.readyState == "open"
                and channel.bufferedAmount < MAX_PARAMETERS_BUFFERED):
            channel.send(message)
            self.counts.parameters_forwarded += 1
        else:
            self.counts.parameters_dropped += 1

    # --- receiving ---------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        timer = self._timers.get(track.kind)
        if timer is None:
            self._tasks.spawn(self._drain(track))
        else:
            self._tasks.spawn(self._consume(track, timer))

    async def _drain(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
        except MediaStreamError:
            pass

    async def _consume(self, track: MediaStreamTrack, timer: TrackTimer) -> None:
        try:
            while True:
                frame = await track.recv()
                self._place(track.kind, timer, frame, frame.pts or 0, time.time())
        except MediaStreamError:
            pass

    def _on_encoded_video(self, frame: EncodedVideo) -> None:
        """A complete encoded frame from the receive path (forwarding): placed on cloud
        time exactly as a decoded frame would be."""
        if self.keyframes is not None:
            self.keyframes.frame(frame.keyframe)
        self._place("video", self._timers["video"], frame, frame.pts, time.time())

    def _place(self, kind: str, timer: TrackTimer, frame: Any, pts: int, arrival: float) -> None:
        """Stamp ``frame`` with cloud time and deliver it, or hold it (bounded) until the
        track's first sender report."""
        cloud_time = timer.cloud_time(pts, arrival)
        if cloud_time is None:  # until the first sender report: hold, bounded
            if len(timer.pending) >= self.max_pending:
                timer.pending.popleft()
                self.counts.pending_dropped += 1
                if kind == "video":
                    self.processor.video_gap()  # (encoded frames: the next keyframe on)
            timer.pending.append((frame, pts, arrival))
            return
        while timer.pending:
            held, held_pts, held_arrival = timer.pending.popleft()
            held_time = timer.cloud_time(held_pts, held_arrival)
            assert held_time is not None  # the timer has a clock from here on
            self.deliver(kind, held, held_time, held_arrival)
        self.deliver(kind, frame, cloud_time, arrival)

    def deliver(self, kind: str, frame: Any, cloud_time: float, arrival: float) -> None:
        """Queue one frame (decoded, or an encoded video frame) already placed on cloud
        time (``arrival``: local wall clock). Audio in any format or rate is made 48 kHz
        stereo s16 first."""
        if kind == "video":
            self.processor.add_video(frame, cloud_time, arrival)
            if self.on_video is not None:
                self.on_video()
            return
        if frame.format.name in ("s16", "s16p") and frame.sample_rate == SAMPLE_RATE and \
                frame.layout.nb_channels == 2:
            samples = frame_to_s16(frame)  # what aiortc decodes: passes untouched
        else:  # any other format or rate: one streaming resampler for this track
            names = frame_channel_names(frame) if frame.layout.nb_channels > 2 else None
            resampled, index = self._resampler.process(
                frame_to_array(frame), frame.sample_rate, round(cloud_time * SAMPLE_RATE), names)
            samples, clipped = float_to_s16(resampled)
            self.counts.clipped_samples += clipped
            cloud_time = index / SAMPLE_RATE
            if not samples.shape[1]:
                return
        self.processor.add_audio(samples, cloud_time, arrival)

    def media_silence(self) -> float | None:
        """Seconds since the last RTP packet from the cloud on any track (None before the
        first one)."""
        last = [p.last_packet for p in self.receive_paths.values() if p.last_packet is not None]
        return None if not last else time.monotonic() - max(last)

    def stats(self) -> dict[str, Any]:
        return {
            "cloud_session": self.session_id,
            "cloud_connection": self.pc.connectionState if self.pc else "new",
            "sender_reports": {k: t.tap.reports for k, t in self._timers.items()},
            "timing": {k: ("arrival" if t.fallback else "sender-report")
                       for k, t in self._timers.items()},
            "receive": {k: p.stats() for k, p in self.receive_paths.items()},
            "keyframes_upstream": None if self.keyframes is None else self.keyframes.stats(),
            "tracks_timed_by_arrival": sum(t.fallback is not None for t in self._timers.values()),
            "nonfinite_samples": self._resampler.resampler.nonfinite_samples,
            **self.counts.as_stats(),
        }

    async def close(self) -> None:
        await self._close()

    async def _close_once(self) -> None:
        self.closed.set()
        if self.session_id is not None:
            self.connection.unwatch_session(self.session_id)
        await self._tasks.cancel_all()
        if self.keyframes is not None:
            self.keyframes.close()
        if self.pc is not None:
            await self.pc.close()
