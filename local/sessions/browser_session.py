"""BrowserSession: one browser peer connection, bridged to the cloud through a CloudHop.

When the cloud's pipeline fails, the browser's peer stays up (a page that restarts
dropped sessions would otherwise loop on a broken model), the output tracks end (the
FrameProcessor is closed: nothing more is coming, so nothing waits or counts underruns),
the stats say ``pipeline_failed`` and the page gets ``{"type": "error", "code":
"PIPELINE_FAILED", "error"}`` on its ``parameters`` channel (once it is open).

The cloud's notices (a refused parameter value, a ``--reload`` edit that did not load) are
passed to the page on the same channel as they come, and kept in the stats; a refusal of a
value OSC sent is logged here too (at most once per :data:`REFUSAL_LOG_INTERVAL`), since
the gear that sent it has no page to show it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiortc import MediaStreamTrack

from scope_relay.local.cloud_link.control_socket import CloudConnectionManager, CloudError
from scope_relay.local.cloud_link.hop import CloudHop
from scope_relay.local.cloud_link.peer import CloudWebRTCClient
from scope_relay.local.inputs.camera_uplink import LatestFrameTrack
from scope_relay.local.inputs.microphone_uplink import AudioForwarder
from scope_relay.local.playout.frame_processor import FrameProcessor
from scope_relay.local.playout.release_tracks import AudioProcessingTrack, CloudTrack
from scope_relay.local.sessions.fanout import CountedSubscription, OutputFanout
from scope_relay.local.sessions.figures import ArrivalFigures
from scope_relay.local.sessions.viewers import MAX_VIEWERS, Audience
from scope_relay.protocol import messages as m
from scope_relay.protocol.capabilities import Capabilities
from scope_relay.protocol.errors import InvalidMessage, LoadFailed, NotLoaded, PipelineFailed
from scope_relay.protocol.parameters import DATA_CHANNEL_LABEL, PAUSED, PIPELINE_IDS
from scope_relay.rtc.aiortc_internals import negotiated_codecs, offered_direction, set_rtp_history
from scope_relay.rtc.keyframe_requests import pass_keyframe_requests
from scope_relay.rtc.peer import PeerSession
from scope_relay.rtc.receive_path import EncodedVideo, ReceivePath, receive_path_of
from scope_relay.rtc.sdp import validate_offer_sdp
from scope_relay.rtc.video_codecs import choose_page_codec, codec_name, video_codec
from scope_relay.util.channels import send_message
from scope_relay.util.throttled_log import ThrottledWarning

logger = logging.getLogger(__name__)

#: a browser that never completes ICE (it went away after its offer) is let go after this
CONNECT_TIMEOUT = 60.0
#: a refusal of a value OSC sent is logged at most this often per session (all counted)
REFUSAL_LOG_INTERVAL = 10.0
#: names OSC set, remembered to say who a refusal concerns; beyond this the oldest go
MAX_OSC_NAMES = 256
#: forward the cloud's encoded video to the page and viewers (False: decode and encode
#: again at the relay, as before forwarding; benchmarks compare the two)
FORWARD_VIDEO = os.environ.get("SCOPE_RELAY_TRANSCODE_VIDEO", "") != "1"
#: RTP packets each sender keeps to answer NACKs: a 1080p keyframe is ~100-150 packets,
#: aiortc keeps 128
RTP_HISTORY = 1024


def forward_camera(pump: LatestFrameTrack, source: MediaStreamTrack, path: ReceivePath,
                   codec: str | None, cloud_codec: str | None, who: str,
                   counted: Callable[[], None] | None = None) -> None:
    """``source``'s frames (received on ``path`` in ``codec``) go into ``pump`` still
    encoded when the cloud hop takes ``cloud_codec`` == ``codec``; any other codec is
    decoded by aiortc and encoded again by the cloud hop's sender (logged once)."""
    forwards = FORWARD_VIDEO and cloud_codec is not None
    why = ("SCOPE_RELAY_TRANSCODE_VIDEO=1" if not FORWARD_VIDEO else
           f"{who} camera arrives in {codec}, the cloud hop takes {cloud_codec}")
    if not forwards or codec != cloud_codec:
        logger.info("the camera is decoded and encoded again at the relay: %s", why)
    sink = pump.encoded_sink(source, path.request_keyframe, lambda: path.rtt)
    if counted is not None:
        def counting_sink(frame: EncodedVideo) -> None:
            counted()
            sink(frame)
    path.forward_video(sink if counted is None else counting_sink,
                       lambda mime: forwards and codec_name(mime) == cloud_codec,
                       fallback=why)


async def chain_capabilities(connection: CloudConnectionManager, pipeline_ids: Any
                             ) -> tuple[list[str], Capabilities, float | None]:
    """Ask the cloud (the only authority) for the chain's flags and frame rate, loading it
    if needed."""
    if pipeline_ids is None:
        status, data = await connection.api("GET", "/api/v1/pipeline/status")
    else:
        status, data = await connection.api("POST", "/api/v1/pipeline/load",
                                            {"pipeline_ids": pipeline_ids}, timeout=600)
    if status >= 400:
        raise CloudError(str(data.get("detail", "pipeline load failed")),
                         str(data.get("code", LoadFailed.code)), status)
    if data.get("status") == "error":  # the pipeline raised while loading
        ids = ", ".join(str(p) for p in data.get("pipeline_ids") or [])
        raise PipelineFailed(f"{ids}: failed to load: {data.get('error') or 'unknown error'}")
    if data.get("status") != "loaded":
        raise NotLoaded(f"pipeline not loaded: {data.get('error') or data.get('status')}")
    fps = data.get("fps")
    fps = float(fps) if isinstance(fps, (int, float)) and not isinstance(fps, bool) else None
    return list(data.get("pipeline_ids") or []), Capabilities.from_mapping(data), fps


class BrowserSession(PeerSession):
    """The page's peer: the relay's output tracks by the chain's flags, the browser's
    camera pumped up to the cloud, parameter messages forwarded through the cloud hop."""

    role = "browser session"

    def __init__(self, connection: CloudConnectionManager, *, ice_servers: list[dict[str, Any]],
                 loopback_ice: bool, cloud_loopback_ice: bool, playout_delay: float,
                 max_viewers: int = MAX_VIEWERS):
        super().__init__(ice_servers=ice_servers, loopback_ice=loopback_ice,
                         connect_timeout=CONNECT_TIMEOUT)
        self.connection = connection
        self.cloud_loopback_ice = cloud_loopback_ice
        self.processor = FrameProcessor(playout_delay=playout_delay)
        self.hop: CloudHop | None = None
        self.video_track: CloudTrack | None = None
        self.audio_track: AudioProcessingTrack | None = None
        #: the output tracks are read once and fanned out to this page and its viewers
        self.max_viewers = max_viewers
        self.audience: Audience | None = None
        self._own_tracks: tuple[CountedSubscription | None, CountedSubscription | None] = (
            None, None)
        #: the browser's camera through a bounded pump this session owns: it keeps being
        #: drained while the cloud hop reconnects (aiortc's receive queue is unbounded)
        self.camera: LatestFrameTrack | None = None
        #: the browser's microphone, likewise (local/inputs/microphone_uplink.py), when the chain takes it
        self.microphone: AudioForwarder | None = None
        #: the page's ``parameters`` channel, for telling it that the pipeline failed
        self._channel: Any = None
        self._page_told = False
        self.pc.on("datachannel", self._remember_channel)
        #: fps received and generator speed, as the page computes them (its figures)
        self.figures = ArrivalFigures(None)
        #: the cloud's notices: refusals so far, the latest one, the latest reload failure
        self.parameters_refused = 0
        self.last_parameter_refused: dict[str, Any] | None = None
        self.reload_failed: dict[str, Any] | None = None
        self.notices_unsent = 0  # no open page channel to pass one on
        self._osc_names: dict[str, float] = {}
        self._osc_refusal_log = ThrottledWarning(logger, REFUSAL_LOG_INTERVAL,
                                                 held="more refused since the last report")
        #: the codec the page hop sends video in (None: no video to the page)
        self.video_codec: str | None = None
        #: the codec the page's camera arrives in (None: no camera), and its receive path
        #: while its frames go up still encoded (None: aiortc decodes them)
        self.camera_codec: str | None = None
        self.camera_path: ReceivePath | None = None
        #: the video codec the page's sender negotiated (what can be forwarded as it is)
        self._page_codecs: set[str] = set()
        set_rtp_history(RTP_HISTORY)

    @property
    def cloud(self) -> CloudWebRTCClient | None:
        """The current peer connection to the cloud (a new one after each reconnect)."""
        return self.hop.client if self.hop else None

    @property
    def cloud_reconnects(self) -> int:
        return self.hop.reconnects if self.hop else 0

    @property
    def parameter_state(self) -> dict[str, Any]:
        return self.hop.parameter_state if self.hop else {}

    async def handle_offer(self, sdp: Any, initial_parameters: Mapping[str, Any]) -> str:
        sdp = validate_offer_sdp(sdp)  # before a model load, not after
        if not isinstance(initial_parameters, Mapping):
            raise InvalidMessage("initialParameters must be an object")
        self.pipeline_ids, caps, fps = await chain_capabilities(
            self.connection, initial_parameters.get(PIPELINE_IDS))
        self.capabilities = caps
        self.figures = ArrivalFigures(fps)
        await self.set_offer(sdp)
        if not (caps.produces_audio and self.offers("audio")):
            # no audio to line the video up with: frames pass on arrival (the browser's
            # own jitter buffer smooths them), so a camera loop adds no wait here
            self.processor.playout_delay = 0.0
        browser_sends_video = any(
            t.kind == "video" and offered_direction(t) in ("sendrecv", "sendonly")
            for t in self.pc.getTransceivers())
        send_camera = caps.accepts_video and browser_sends_video
        camera = self.camera if send_camera else None
        send_microphone = caps.accepts_audio and self.microphone is not None
        microphone = self.microphone if send_microphone else None

        def new_client() -> CloudWebRTCClient:
            self.figures.restart()  # a new hop: the outage is not the generator's speed
            return CloudWebRTCClient(self.connection, self.processor, caps, camera=camera,
                                     microphone=microphone,
                                     loopback_ice=self.cloud_loopback_ice,
                                     on_video=self.figures.video_arrived,
                                     forward_video=self.forwards)

        self.hop = CloudHop(new_client, pipeline_ids=self.pipeline_ids,
                            initial_parameters=initial_parameters, name=self.name)
        self.hop.on_pipeline_failed = self._pipeline_failed
        self.hop.on_notice = self._cloud_notice
        if caps.produces_video and self.offers("video"):
            self.video_track = CloudTrack(self.processor)
        if caps.produces_audio and self.offers("audio"):
            self.audio_track = AudioProcessingTrack(self.processor)
        fanout = OutputFanout(self.video_track, self.audio_track)
        if self.video_track is not None:  # a recording decodes through the fan-out's decoder
            self.video_track.decoder = fanout.decoder
        self.audience = Audience(fanout, max_viewers=self.max_viewers)
        # the owner's sender, like any viewer's
        self._own_tracks = fanout.subscribe(name="page")
        self.attach_media(*self._own_tracks, receive_video=send_camera,
                          receive_audio=send_microphone)
        if self.video_send is not None and self._own_tracks[0] is not None:
            own_video = self._own_tracks[0]
            pass_keyframe_requests(self.video_send.sender, own_video.request_keyframe)
        await self.hop.connect()  # returns once the cloud answered (see CloudHop.connect)
        # the page's video in the cloud's negotiated codec where the browser offered it
        # (rtc/video_codecs.py: page_video_codec), so the answer waits for the cloud's.
        # Set before anything awaits again: the cloud's media cannot have arrived yet
        # (its ICE and DTLS start with the answer), so its first frame is already forwarded.
        self.video_codec = choose_page_codec(self.pc, self.cloud.pc if self.cloud else None)
        self._page_codecs = {mime.lower() for t in self.pc.getTransceivers()
                             if t.kind == "video" for mime in negotiated_codecs(t)[:1]}
        if FORWARD_VIDEO and self._page_codecs:
            fanout.forwarded_codec = next(iter(self._page_codecs))
        answer = await self.create_answer()
        if camera is not None:  # before ICE: the camera's first frame is already decided
            self._forward_camera(camera)
        return answer

    def _forward_camera(self, camera: LatestFrameTrack) -> None:
        """The camera goes up still encoded where the cloud hop sends video in the codec
        the page's camera arrives in; otherwise aiortc decodes it and the cloud hop's
        sender encodes it again (logged once)."""
        receiver = next((t.receiver for t in self.pc.getTransceivers()
                         if t.receiver.track is camera.source), None)
        path = None if receiver is None else receive_path_of(receiver)
        if path is None:
            return
        self.camera_codec = video_codec(self.pc)
        self.camera_path = path
        forward_camera(camera, camera.source, path, self.camera_codec, self.cloud_codec(),
                       f"{self.name}'s page")

    def cloud_codec(self) -> str | None:
        """The video codec the cloud hop negotiated (None: no video to the cloud yet)."""
        return video_codec(self.cloud.pc) if self.cloud and self.cloud.pc else None

    def forwards(self, mime: str) -> bool:
        """Whether the cloud's ``mime`` video goes to the page as it is (the page's sender
        negotiated that codec); otherwise it is decoded and encoded again (the way back)."""
        return FORWARD_VIDEO and mime.lower() in self._page_codecs

    # --- hooks ---------------------------------------------------------------------------
    def on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and self.camera is None:
            self.camera = LatestFrameTrack(track)
        elif (track.kind == "audio" and self.microphone is None and self.capabilities
              and self.capabilities.accepts_audio):  # (the chain's flags are known by now)
            self.microphone = AudioForwarder(track)
        else:
            self.drain(track)

    def on_parameters(self, raw: str, updates: dict[str, Any], source: str = "page") -> None:
        """The page's (or, ``source="osc"``, OSC's) updates, on to the cloud."""
        if PAUSED in updates:
            self.figures.restart()  # a held picture is not the generator's speed
        if source == "osc":
            now = time.monotonic()
            for name in updates:
                self._osc_names.pop(name, None)
                self._osc_names[name] = now
            while len(self._osc_names) > MAX_OSC_NAMES:
                del self._osc_names[next(iter(self._osc_names))]
        if self.hop is not None:
            self.hop.forward(raw, updates)

    # --- the cloud's notices ---------------------------------------------------------------
    def _cloud_notice(self, notice: dict[str, Any]) -> None:
        """Kept in the stats, passed to the page; an OSC value's refusal is logged."""
        if notice.get("type") == "parameter_refused":
            self.parameters_refused += 1
            self.last_parameter_refused = {k: notice.get(k) for k in ("name", "value", "reason")}
            if notice.get("name") in self._osc_names:
                self._osc_refusal_log.warning(
                    "%s: the cloud refused OSC /param/%s %s: %s", self.name, notice.get("name"),
                    notice.get("value"), notice.get("reason"))
        elif notice.get("type") == "pipeline_reload_failed":
            self.reload_failed = {k: notice.get(k) for k in ("pipeline", "error")}
            logger.warning("%s: %s was edited but did not load (the session runs the old "
                           "code): %s", self.name, notice.get("pipeline"), notice.get("error"))
        self._send_to_page(notice)

    def _send_to_page(self, message: dict[str, Any]) -> None:
        if not send_message(self._channel, message, logger, self.name):
            self.notices_unsent += 1  # no open page channel, or it is closing

    # --- a failed pipeline -----------------------------------------------------------------
    @property
    def pipeline_failed(self) -> str | None:
        """The cloud's reason, once its pipeline failed (the session then plays nothing)."""
        return self.hop.pipeline_failed if self.hop else None

    def _pipeline_failed(self, message: str) -> None:
        logger.error("%s: pipeline failed: %s", self.name, message)
        self.processor.close()  # the output tracks end: no more media is coming
        self._tell_page()

    def _remember_channel(self, channel: Any) -> None:
        if channel.label == DATA_CHANNEL_LABEL:
            self._channel = channel
            self._tell_page()  # a failure that came before the channel

    def _tell_page(self) -> None:
        channel, message = self._channel, self.pipeline_failed
        if (self._page_told or channel is None or message is None
                or channel.readyState != "open"):
            return  # sent when the channel opens, if it ever does; the stats say it anyway
        self._page_told = True  # a closing channel: the stats still carry the reason
        send_message(channel, m.pipeline_failed(message), logger, self.name,
                     level=logging.WARNING)

    def tell_page(self, message: dict[str, Any]) -> bool:
        """Send the page one message on its ``parameters`` channel (a recording that ended
        by itself); False when the channel is not open (the caller's status says it)."""
        return send_message(self._channel, message, logger, self.name, level=logging.WARNING)

    async def release(self) -> None:
        self.processor.close()
        if self.audience is not None:  # viewers end with the session they watch
            await self.audience.close()
            await self.audience.fanout.close()
        if self.hop is not None:
            await self.hop.close()
        if self.camera is not None:
            self.camera.stop()
        if self.microphone is not None:
            await self.microphone.close()

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out.update(self.processor.stats())
        if self.hop:
            out.update(self.hop.stats())
        caps = self.capabilities
        out.update(self.figures.figures(
            paused=bool(out.get("paused")),
            camera_driven=bool(caps and caps.accepts_video)))
        offset, delay = out.get("offset_ms"), out.get("playout_delay_ms")
        out["relay_latency_ms"] = (None if offset is None or delay is None
                                   else round(offset + delay, 1))
        out["parameters_refused"] = self.parameters_refused
        out["last_parameter_refused"] = self.last_parameter_refused
        out["reload_failed"] = self.reload_failed
        out["notices_unsent"] = self.notices_unsent
        out["pipeline_failed"] = self.pipeline_failed
        out["camera_frames_dropped"] = self.camera.dropped if self.camera else 0
        if self.camera is not None:
            out["camera_uplink"] = {**self.camera.stats(), "codec": self.camera_codec}
        out["microphone_frames_dropped"] = self.microphone.dropped if self.microphone else 0
        out["microphone_frames_forwarded"] = self.microphone.forwarded if self.microphone else 0
        if self.audience:
            out.update(self.audience.stats())
        if self.video_track:
            out["video_frames_sent"] = self.video_track.frames_sent
            out["video_forward"] = {"frames": self.video_track.packets_sent,
                                    "bytes": self.video_track.bytes_sent,
                                    "codec": self.video_track.mime,
                                    "page_codecs": sorted(self._page_codecs)}
        if self.audio_track:
            out["audio_frames_sent"] = self.audio_track.frames_sent
        out["video_codec"] = self.video_codec if self.video_track else None
        out["cloud_video_codec"] = video_codec(self.cloud.pc) if (
            self.cloud and self.cloud.pc and self.video_track) else None
        if self.video_track:
            out.update(self.figures.hop_figures(out))
        return out
