"""PeerSession: one peer connection that answers a remote offer, as both sides need it.

The cloud's MediaSession (answering the relay or Scope) and the relay's BrowserSession
(answering the page) do the same things around their own media: check the offer, put
their tracks on the offer's m-lines by the chain's capability flags, take parameter
updates from the ``parameters`` data channel without letting a bad one reach aiortc,
let go of a peer that never connects, drain incoming tracks nobody consumes, and close
exactly once. This class is that skeleton; subclasses add their media through a few hooks.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from scope_relay.protocol.capabilities import Capabilities, direction
from scope_relay.protocol.errors import InvalidMessage
from scope_relay.protocol.parameters import DATA_CHANNEL_LABEL, parse_parameters_message
from scope_relay.util.tasks import OwnedTasks, RunOnce

from .aiortc_internals import drive_sender
from .congestion.paced import pace_video
from .congestion.pacer import Pacer
from .ice import add_remote_candidate, loopback_candidates, parse_candidate, rtc_configuration
from .opus import adapt_to_loss
from .receive_path import install_receive_path
from .sdp import refusing_bad_sdp, validate_offer_sdp
from .send_feedback import SendFeedback, count_feedback

logger = logging.getLogger(__name__)

#: Sender reports sent right after each of a track's first frames: a receiver can place
#: media on our clock from the first packets on, instead of 0.5-1.5 s later when aiortc's
#: own first report comes (several, so a receiver taking the best one converges at once).
EARLY_SENDER_REPORTS = 5


class PeerSession:
    """Hooks for subclasses: :meth:`on_track`, :meth:`on_parameters`, :meth:`on_connected`,
    :meth:`stop_producing` and :meth:`release` (both run by :meth:`close`)."""

    #: how log lines name this kind of session
    role = "session"
    #: whether the video we send goes through a pacer at the encoder's rate (the cloud's:
    #: its hop crosses the internet; rtc/congestion)
    paced_video = False

    def __init__(self, *, ice_servers: list[dict[str, Any]], loopback_ice: bool = False,
                 connect_timeout: float = 30.0):
        self.session_id = uuid.uuid4().hex
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.loopback_ice = loopback_ice
        self.connect_timeout = connect_timeout
        self.pipeline_ids: list[str] = []
        self.capabilities: Capabilities | None = None
        self.closed = asyncio.Event()
        #: called with the session id when the session starts closing
        self.on_closed: Callable[[str], object] | None = None
        #: keyframe and retransmission requests and the rate of the video we send
        self.video_send: SendFeedback | None = None
        self.video_pacer: Pacer | None = None
        self.bad_parameter_messages = 0
        self.drained_frames = 0
        self._tasks = OwnedTasks()
        self._close = RunOnce(self._close_once)
        self.pc.on("connectionstatechange", self._on_connection_state)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self.on_track)

    @property
    def name(self) -> str:
        return f"{self.role} {self.session_id[:8]}"

    # --- answering -----------------------------------------------------------------------
    async def set_offer(self, sdp: Any) -> None:
        """Check and apply the remote offer (any aiortc failure is ``INVALID_SDP``)."""
        sdp = validate_offer_sdp(sdp)
        with refusing_bad_sdp("remote description"):
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for transceiver in self.pc.getTransceivers():  # before any packet: our loss handling
            install_receive_path(transceiver.receiver, transceiver.kind)

    def attach_media(self, video: MediaStreamTrack | None, audio: MediaStreamTrack | None,
                     *, receive_video: bool, receive_audio: bool = False) -> None:
        """Answer the offer's m-lines: ``video`` on the first video m-line (which also
        receives when ``receive_video``), ``audio`` on the first audio m-line (which also
        receives when ``receive_audio``), every other m-line inactive, so no track exists
        without media behind it."""
        video_done = audio_done = False
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video" and not video_done:
                video_done = True
                if video is not None:
                    transceiver.sender.replaceTrack(video)
                    drive_sender(transceiver.sender, encode_on_loop=False,
                                 early_reports=EARLY_SENDER_REPORTS)
                    self.video_send = count_feedback(transceiver.sender)
                    if self.paced_video:
                        self.video_pacer = pace_video(transceiver.sender, self._tasks)
                transceiver.direction = direction(video is not None, receive_video)
            elif transceiver.kind == "audio" and not audio_done:
                audio_done = True
                if audio is not None:
                    transceiver.sender.replaceTrack(audio)
                    drive_sender(transceiver.sender, encode_on_loop=True,
                                 early_reports=EARLY_SENDER_REPORTS)
                    adapt_to_loss(transceiver.sender)
                transceiver.direction = direction(audio is not None, receive_audio)
            else:
                transceiver.direction = "inactive"

    def offers(self, kind: str) -> bool:
        """Whether the remote offer has a ``kind`` m-line (Scope offers audio only on a hint)."""
        return any(t.kind == kind for t in self.pc.getTransceivers())

    async def create_answer(self) -> str:
        """Set and return the answer; from here the peer has ``connect_timeout`` to connect."""
        with refusing_bad_sdp("answer"), loopback_candidates(self.loopback_ice):
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._tasks.spawn(self._connect_watchdog())
        return self.pc.localDescription.sdp

    async def add_candidate(self, candidate: Mapping[str, Any] | None) -> None:
        """A trickled candidate; ``None`` (or an empty one) is end-of-candidates, which
        lets ICE fail, and the session close, when no pair works."""
        await add_remote_candidate(self.pc, None if candidate is None else parse_candidate(candidate))

    async def add_candidates(self, candidates: Any) -> int:
        """Several trickled candidates: all valid, or none is added. Returns how many
        were candidates (not end-of-candidates markers)."""
        if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
            raise InvalidMessage("'candidates' must be a list of candidate objects")
        parsed = [parse_candidate(c) for c in candidates]
        for candidate in parsed:
            await add_remote_candidate(self.pc, candidate)
        return sum(c is not None for c in parsed)

    # --- hooks ---------------------------------------------------------------------------
    def on_track(self, track: MediaStreamTrack) -> None:
        """An incoming track. By default it is drained: aiortc queues it without bound."""
        self.drain(track)

    def on_parameters(self, raw: str, updates: dict[str, Any]) -> None:
        """A valid ``parameters`` message (``raw`` as received, ``updates`` parsed)."""

    def on_connected(self) -> None:
        """ICE and DTLS are up."""

    def stop_producing(self) -> None:
        """First step of closing, before background tasks are cancelled (must not block)."""

    async def release(self) -> None:
        """Last step of closing, before the peer connection itself is closed."""

    # --- events --------------------------------------------------------------------------
    def drain(self, track: MediaStreamTrack) -> None:
        self._tasks.spawn(self._drain(track))

    async def _drain(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
                self.drained_frames += 1
        except MediaStreamError:
            pass

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        # the terminal gets where a connection ended up, not each step on the way
        logger.log(logging.DEBUG if state in ("new", "connecting") else logging.INFO,
                   "%s: connection %s", self.name, state)
        if state == "connected":
            self.on_connected()
        elif state in ("failed", "closed"):
            self.close_soon()

    async def _connect_watchdog(self) -> None:
        await asyncio.sleep(self.connect_timeout)
        if self.pc.connectionState != "connected":
            logger.warning("%s: the peer did not connect in %.0f s", self.name,
                           self.connect_timeout)
            self.close_soon()

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != DATA_CHANNEL_LABEL:
            return

        @channel.on("message")
        def on_message(message: Any) -> None:
            # An exception escaping here would travel up into aiortc's SCTP transport and
            # close the whole peer connection: bad messages are refused and counted.
            try:
                updates = parse_parameters_message(message)
            except InvalidMessage as exc:
                self.bad_parameter_messages += 1
                logger.warning("%s: bad parameters message: %s", self.name, exc)
                return
            self.on_parameters(message, updates)

    # --- figures and closing -------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sessionId": self.session_id, "pipeline_ids": self.pipeline_ids,
                               "connection": self.pc.connectionState}
        if self.capabilities:
            out.update(self.capabilities.as_dict())
        out["bad_parameter_messages"] = self.bad_parameter_messages
        if self.video_send is not None:
            out["video_send"] = self.video_send.stats()
        return out

    def close_soon(self) -> None:
        """Start closing without waiting (from event handlers and watchdogs)."""
        self._close.start()

    async def close(self) -> None:
        await self._close()

    async def _close_once(self) -> None:
        self.closed.set()
        if self.on_closed is not None:
            self.on_closed(self.session_id)
        self.stop_producing()
        await self._tasks.cancel_all()
        await self.release()
        await self.pc.close()
