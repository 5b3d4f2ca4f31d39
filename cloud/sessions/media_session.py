"""MediaSession: one WebRTC peer connection running one pipeline chain.

A pipeline that fails (at load or mid-stream) is reported, never retried in silence: the
offer is refused with ``PIPELINE_FAILED``, or, mid-stream, the reason lands in the stats
(``pipeline_failed``) and goes to :attr:`MediaSession.on_pipeline_failed` (the owning
control channel tells its client). The peer stays up; its client decides when to close it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from scope_relay.cloud.hosting.manager import PipelineManager
from scope_relay.cloud.hosting.runner import PipelineRunner
from scope_relay.cloud.pipelines.base import InputFrame
from scope_relay.cloud.sessions.audio_input import InputAudioTimeline
from scope_relay.cloud.sessions.media_buffer import MediaBuffer
from scope_relay.cloud.sessions.paced_tracks import TimedAudioTrack, TimedVideoTrack
from scope_relay.protocol import messages as m
from scope_relay.protocol.errors import NotReady, PipelineFailed
from scope_relay.protocol.media import SAMPLE_RATE
from scope_relay.protocol.parameters import DATA_CHANNEL_LABEL, PIPELINE_IDS, pipeline_parameters
from scope_relay.rtc.aiortc_internals import sender_encoder
from scope_relay.rtc.congestion.audio_share import VideoShare
from scope_relay.rtc.opus import AudioPath, share_path
from scope_relay.rtc.peer import PeerSession
from scope_relay.rtc.sdp import validate_offer_sdp
from scope_relay.rtc.video_codecs import DEFAULT_VIDEO_CODEC, answer_with, video_codec
from scope_relay.util.channels import send_message
from scope_relay.util.throttled_log import ThrottledWarning

logger = logging.getLogger(__name__)
#: refused parameter values are logged at most this often per session (all are counted)
REFUSAL_LOG_INTERVAL = 10.0
#: the video's floor (b/s) while it yields to an audio starving at its own floor
#: (rtc/congestion/audio_share.py): 160x120 at 10 fps still moves at this
VIDEO_YIELD_FLOOR = 16_000


class MediaSession(PeerSession):
    """The chain's output tracks on the offer's m-lines (by the registry's flags), the
    camera into the runner when the chain accepts video, parameter updates into it."""

    role = "session"
    paced_video = True  # (its hop crosses the internet: rtc/congestion)

    def __init__(self, manager: PipelineManager, *, ice_servers: list[dict[str, Any]],
                 loopback_ice: bool = False, playout_delay: float = 0.1,
                 max_buffer: float = 6.0, connect_timeout: float = 30.0,
                 owner: str | None = None, video_codec: str = DEFAULT_VIDEO_CODEC):
        super().__init__(ice_servers=ice_servers, loopback_ice=loopback_ice,
                         connect_timeout=connect_timeout)
        self.manager = manager
        #: the ``connection_id`` of the control socket that created it: only that
        #: connection may act on it or see it in full (cloud/control/tenancy.py)
        self.owner = owner
        self.playout_delay = playout_delay
        self.max_buffer = max_buffer
        #: the codec the answer puts first for video (``--video-codec``, rtc/video_codecs.py)
        self.preferred_video_codec = video_codec
        self.runner: PipelineRunner | None = None
        self.buffer: MediaBuffer | None = None
        self.audio_track: TimedAudioTrack | None = None
        self.video_track: TimedVideoTrack | None = None
        #: the audio sender's share of the path (its Opus rate; rtc.congestion.audio_share)
        self.audio_path: AudioPath | None = None
        self._video_sender: Any = None
        self._video_floor: int | None = None  # the video estimate's own floor
        self.created = time.monotonic()
        #: ``"<pipeline id>: <ExceptionType>: <message>"`` once the chain failed mid-stream
        self.pipeline_failed: str | None = None
        #: called on the event loop with this session and :attr:`pipeline_failed`
        self.on_pipeline_failed: Callable[[MediaSession, str], object] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the microphone's placement on the media clock, once its track arrived
        self.input_audio: InputAudioTimeline | None = None
        #: the client's ``parameters`` channel: refusals and reload failures go back on it
        self._channel: Any = None
        self.notices_sent = 0
        self.notices_unsent = 0  # no open channel (or it failed): counted, the stats say it
        #: ``{"pipeline", "error"}`` of the latest ``--reload`` edit that did not load
        self.reload_failed: dict[str, str] | None = None
        #: refused updates: one line, then at most one per REFUSAL_LOG_INTERVAL with a count
        self._refusal_log = ThrottledWarning(logger, REFUSAL_LOG_INTERVAL)
        self.pc.on("datachannel", self._remember_channel)

    @property
    def drained_input_frames(self) -> int:
        """Incoming frames nobody needed (e.g. Scope's black video for an audio-only
        chain), received and dropped so aiortc's unbounded queue never grows."""
        return self.drained_frames

    async def accept_offer(self, sdp: str, initial_parameters: Mapping[str, Any]) -> str:
        """Set up the chain and tracks for ``sdp``; returns the answer SDP."""
        validate_offer_sdp(sdp)  # before a model load, not after
        chain_ids = initial_parameters.get(PIPELINE_IDS)
        if chain_ids is None:
            if self.manager.state.status != "loaded":
                raise NotReady("no pipeline is loaded: pass initialParameters.pipeline_ids "
                               "or POST /api/v1/pipeline/load first")
            chain_ids = self.manager.state.pipeline_ids
        state = await self.manager.load(chain_ids)
        if state.status != "loaded":
            raise PipelineFailed(f"{', '.join(state.pipeline_ids)}: failed to load: {state.error}")
        self.pipeline_ids = list(state.pipeline_ids)
        self._loop = asyncio.get_running_loop()
        caps = self.capabilities = self.manager.registry.capabilities(self.pipeline_ids)

        await self.set_offer(sdp)
        answer_with(self.pc, self.preferred_video_codec)  # or the other, if not offered
        audio_clocked = caps.produces_audio and self.offers("audio")
        camera_driven = caps.accepts_video and not audio_clocked
        self.buffer = MediaBuffer(asyncio.get_running_loop(),
                                  playout_delay=0.0 if camera_driven else self.playout_delay,
                                  max_buffer=self.max_buffer, audio_clocked=audio_clocked,
                                  release_when_ready=camera_driven)
        if caps.produces_video and self.offers("video"):
            self.video_track = TimedVideoTrack(self.buffer)
        if caps.produces_audio and self.offers("audio"):
            self.audio_track = TimedAudioTrack(self.buffer)
        self.attach_media(self.video_track, self.audio_track, receive_video=caps.accepts_video,
                          receive_audio=caps.accepts_audio)
        self._share_path()

        # A real model's constructor takes seconds: never on the event loop other sessions use.
        try:
            chain = await asyncio.to_thread(self.manager.instantiate, self.pipeline_ids)
        except Exception as exc:  # the pipeline's own constructor: the client must hear why
            logger.exception("%s: creating pipeline chain %s failed", self.name, self.pipeline_ids)
            raise PipelineFailed(f"{', '.join(self.pipeline_ids)}: failed to load: "
                                 f"{type(exc).__name__}: {exc}") from exc
        self.runner = PipelineRunner(chain, self.buffer,
                                     params=pipeline_parameters(initial_parameters),
                                     on_failure=self._runner_failed)
        for refusal in self.runner.initial_refusals:  # (no channel yet: the log says it)
            self._log_refusal(refusal.reason)
        return await self.create_answer()

    def _share_path(self) -> None:
        """The audio's Opus rate follows the path, the video giving way first."""
        def sender_of(track: MediaStreamTrack | None) -> Any:
            return next((t.sender for t in self.pc.getTransceivers()
                         if track is not None and t.sender.track is track), None)

        self._video_sender = sender_of(self.video_track)
        audio_sender = sender_of(self.audio_track)
        if audio_sender is not None:
            self.audio_path = share_path(
                audio_sender, self._video_share if self._video_sender is not None else None)

    def _video_share(self) -> VideoShare | None:
        """The video encoder's bandwidth estimate and floor (None until it is built); the
        floor is lowered while the video yields to a starving audio."""
        bandwidth = getattr(sender_encoder(self._video_sender), "bandwidth", None)
        if bandwidth is None:
            return None
        if self._video_floor is None:
            self._video_floor = int(bandwidth.floor)
        yields = self.audio_path is not None and self.audio_path.share.video_yields
        bandwidth.floor = min(VIDEO_YIELD_FLOOR, self._video_floor) if yields else self._video_floor
        return VideoShare(bandwidth.value, bandwidth.floor)

    # --- a pipeline that raised ------------------------------------------------------------
    def _runner_failed(self, pipeline_id: str, reason: str) -> None:
        """From the runner's worker thread: over to the event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._pipeline_failed, f"{pipeline_id}: {reason}")
        except RuntimeError:  # the loop closed meanwhile (interpreter shutdown)
            pass

    def _pipeline_failed(self, message: str) -> None:
        if self.pipeline_failed is not None or self.closed.is_set():
            return
        self.pipeline_failed = message
        logger.error("%s: pipeline failed, generation stopped: %s", self.name, message)
        if self.on_pipeline_failed is not None:
            self.on_pipeline_failed(self, message)

    # --- telling the client ------------------------------------------------------------------
    def _remember_channel(self, channel: Any) -> None:
        if channel.label == DATA_CHANNEL_LABEL:
            self._channel = channel

    def notify(self, message: dict[str, Any]) -> None:
        """Send a notice (protocol/messages.py: CHANNEL_NOTICES) on the client's channel."""
        if send_message(self._channel, message, logger, self.name):
            self.notices_sent += 1
        else:  # no open channel, or it is closing: counted, never the session's end
            self.notices_unsent += 1

    def reload_failed_for(self, pipeline_id: str, error: str) -> None:
        """``--reload``: the edited source of a pipeline this session runs did not load."""
        self.reload_failed = {"pipeline": pipeline_id, "error": error}
        self.notify(m.pipeline_reload_failed(pipeline_id, error))

    # --- hooks ---------------------------------------------------------------------------
    def on_connected(self) -> None:
        if self.runner is not None:
            self.runner.start()  # once; a failed runner is not started again

    def on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and self.capabilities and self.capabilities.accepts_video:
            self._tasks.spawn(self._consume_input(track))
        elif track.kind == "audio" and self.capabilities and self.capabilities.accepts_audio:
            self._tasks.spawn(self._consume_input_audio(track))
        else:
            self.drain(track)  # never let aiortc's unbounded queue pile up

    def on_parameters(self, raw: str, updates: dict[str, Any]) -> None:
        if self.runner is None:
            return
        for refusal in self.runner.update_params(updates):
            self.notify(m.parameter_refused(refusal.name, refusal.value, refusal.reason))
            self._log_refusal(refusal.reason)

    def _log_refusal(self, reason: str) -> None:
        self._refusal_log.warning("%s: ignored parameter update: %s", self.name, reason)

    def stop_producing(self) -> None:
        if self.runner is not None:
            self.runner.request_stop()  # at once: the worker stops producing

    async def release(self) -> None:
        if self.buffer is not None:
            self.buffer.close()
        if self.runner is not None:
            await asyncio.to_thread(self.runner.stop)

    async def _consume_input(self, track: MediaStreamTrack) -> None:
        first_time: float | None = None
        base = 0.0
        try:
            while True:
                frame = cast(av.VideoFrame, await track.recv())
                if self.runner is None or self.runner.inputs is None or self.buffer is None:
                    continue
                t = float(frame.time or 0.0)
                if first_time is None:
                    first_time, base = t, max(self.buffer.media_now(), 0.0)
                rgb = await asyncio.to_thread(frame.to_ndarray, format="rgb24")
                self.runner.inputs.put(InputFrame(rgb, base + t - first_time))
        except MediaStreamError:
            pass

    async def _consume_input_audio(self, track: MediaStreamTrack) -> None:
        """The microphone: 48 kHz chunks on the media clock into the runner's bounded queue."""
        timeline = self.input_audio = InputAudioTimeline()
        try:
            while True:
                frame = cast(av.AudioFrame, await track.recv())
                runner, buffer = self.runner, self.buffer
                if runner is None or runner.audio_inputs is None or buffer is None:
                    continue
                chunk = timeline.place(frame, buffer.media_now())
                if chunk is not None:
                    runner.audio_inputs.put(chunk)
        except MediaStreamError:
            pass

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        if self.buffer:
            out.update(self.buffer.stats())
        if self.audio_path is not None:
            out["audio_send"] = self.audio_path.stats()
        if self.audio_track:
            out["audio_frames_sent"] = self.audio_track.frames_sent
            out["clipped_samples"] = self.audio_track.clipped_samples
        if self.video_track:
            out["video_frames_sent"] = self.video_track.frames_sent
            out["late_video_frames"] = self.video_track.late_frames
        out["pipeline_failed"] = self.pipeline_failed
        out["video_codec"] = video_codec(self.pc) if self.video_track else None
        if self.runner:
            out.update(self.runner.counts.as_stats())
            out["input_frames_dropped"] = self.runner.inputs.dropped if self.runner.inputs else 0
            audio_in = self.runner.audio_inputs
            out["input_audio_dropped_ms"] = (
                round(audio_in.dropped_samples / SAMPLE_RATE * 1000, 1) if audio_in else 0.0)
            out["nonfinite_samples"] = self.runner.nonfinite_samples
            out.update(self.runner.call_figures())
        out["reload_failed"] = self.reload_failed
        out["notices_sent"] = self.notices_sent
        out["notices_unsent"] = self.notices_unsent
        out["drained_input_frames"] = self.drained_input_frames
        return out
