"""WHIP ingest (RFC 9725): a tool (OBS: Settings -> Stream -> WHIP) sends the session its
camera and/or microphone instead of the browser's.

``POST /whip/{sessionId}`` with the owner's full session id (the capability that also
ends the session) and an ``application/sdp`` offer of sendonly video and/or audio. The
session's camera pump (``LatestFrameTrack``) and microphone forwarder (``AudioForwarder``)
then read the WHIP tracks instead of the browser's; everything after them (the cloud hop,
its reconnects) is unchanged, so the cloud sees one uninterrupted camera. ``DELETE`` on
the resource, or the WHIP peer failing or closing, hands the inputs back to the browser.
While WHIP feeds the session the browser's own tracks are drained (aiortc would queue
them without bound). A new WHIP offer for the same session replaces the old sender.

Only inputs the session already sends up can be replaced: the cloud hop's m-lines are
fixed when the session starts, so a session started without a camera (or microphone)
takes no WHIP video (audio): that m-line is answered inactive, and an offer with nothing
the session takes is refused with a clear error. Like WHEP, the relay answers an
``actpass`` offer as the DTLS server.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from scope_relay.local.inputs.camera_uplink import LatestFrameTrack
from scope_relay.local.sessions.browser_session import BrowserSession, forward_camera
from scope_relay.protocol.errors import InvalidSdp
from scope_relay.rtc.aiortc_internals import answer_as_dtls_server, offered_direction
from scope_relay.rtc.peer import PeerSession
from scope_relay.rtc.receive_path import receive_path_of
from scope_relay.rtc.sdp import validate_offer_sdp
from scope_relay.rtc.video_codecs import video_codec

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
KINDS = ("video", "audio")


class HeldSource(MediaStreamTrack):
    """A WHIP track as the session's pumps see it: when the sender goes, it waits instead
    of ending, so the session's camera never ends before the browser's is handed back."""

    def __init__(self, source: MediaStreamTrack):
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.frames = 0

    async def recv(self) -> Any:
        try:
            frame = await self.source.recv()
        except MediaStreamError:
            await asyncio.Event().wait()  # until the pump is handed back (and cancels this)
            raise
        self.frames += 1
        return frame

    def count(self) -> None:
        """One frame came still encoded (forwarded past :meth:`recv`)."""
        self.frames += 1


class WhipSession(PeerSession):
    """A receive-only peer whose tracks become the owner session's camera and microphone."""

    role = "WHIP sender"

    def __init__(self, owner: BrowserSession, *, ice_servers: list[dict[str, Any]],
                 loopback_ice: bool):
        super().__init__(ice_servers=ice_servers, loopback_ice=loopback_ice,
                         connect_timeout=CONNECT_TIMEOUT)
        self.owner = owner
        self.pipeline_ids = list(owner.pipeline_ids)
        self._incoming: dict[str, MediaStreamTrack] = {}
        self.held: dict[str, HeldSource] = {}
        #: the browser's tracks while WHIP stands in for them, by kind, and their drains
        self._browser: dict[str, MediaStreamTrack] = {}
        self._drains: dict[str, asyncio.Task] = {}

    def on_track(self, track: MediaStreamTrack) -> None:
        if track.kind in KINDS and track.kind not in self._incoming:
            self._incoming[track.kind] = track
        else:
            self.drain(track)

    def takes(self, kind: str) -> bool:
        """Whether the owner session sends this input up (so WHIP can replace it)."""
        return (self.owner.camera if kind == "video" else self.owner.microphone) is not None

    async def handle_offer(self, sdp: Any) -> str:
        await self.set_offer(validate_offer_sdp(sdp))
        answer_as_dtls_server(self.pc)
        sent = {t.kind for t in self.pc.getTransceivers()
                if offered_direction(t) in ("sendonly", "sendrecv")}
        if not sent:
            raise InvalidSdp("a WHIP offer sends video and/or audio (sendonly m-lines)")
        taken = {k for k in sent if self.takes(k)}
        if not taken:
            names = " or ".join("camera" if k == "video" else "microphone" for k in sorted(sent))
            raise InvalidSdp(
                f"this session takes no {names} from its page, so WHIP has nothing to "
                "replace: start the session with its camera (microphone) on")
        # what the session does not take (OBS always sends both) is answered inactive
        self.attach_media(None, None, receive_video="video" in taken,
                          receive_audio="audio" in taken)
        answer = await self.create_answer()
        for kind in KINDS:
            track = self._incoming.pop(kind, None)
            if track is not None and kind in taken:
                self._take_over(kind, track)
        for track in self._incoming.values():
            self.drain(track)
        self._incoming.clear()
        return answer

    def _take_over(self, kind: str, track: MediaStreamTrack) -> None:
        held = self.held[kind] = HeldSource(track)
        pump = self.owner.camera if kind == "video" else self.owner.microphone
        assert pump is not None
        if isinstance(pump, LatestFrameTrack):  # still encoded where the codecs match
            receiver = next((t.receiver for t in self.pc.getTransceivers()
                             if t.receiver.track is track), None)
            path = None if receiver is None else receive_path_of(receiver)
            if path is not None:
                forward_camera(pump, held, path, video_codec(self.pc),
                               self.owner.cloud_codec(), self.name, held.count)
        browser = self._browser[kind] = pump.replace_source(held)
        self._drains[kind] = self._tasks.spawn(self._drain(browser))
        logger.info("%s: feeds %s's %s", self.name, self.owner.name,
                    "camera" if kind == "video" else "microphone")

    def hand_back(self) -> None:
        """The browser's inputs feed the session again (idempotent)."""
        for kind, browser in list(self._browser.items()):
            self._drains.pop(kind).cancel()  # the pump reads it again, alone
            pump = self.owner.camera if kind == "video" else self.owner.microphone
            if pump is not None and not self.owner.closed.is_set():
                pump.replace_source(browser)
            del self._browser[kind]
            logger.info("%s: %s's %s handed back to its page", self.name, self.owner.name,
                        "camera" if kind == "video" else "microphone")

    def stop_producing(self) -> None:
        self.hand_back()  # before the drains of the browser's tracks are cancelled

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        for kind, held in self.held.items():
            out[f"{kind}_frames_received"] = held.frames
        return out
