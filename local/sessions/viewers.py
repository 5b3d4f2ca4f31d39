"""Extra viewers of one browser session: receive-only peers fed from the owner's fan-out.

The owner's session gets a share token (unguessable, and not its session id: that id is a
secret that lets its holder end the session). Whoever has the token may join as a viewer:
a peer that receives the session's output and nothing else. No second cloud session and
no second generation: viewers subscribe to the owner's :class:`~.fanout.OutputFanout`,
so all of them play the same frames at the same moment. A viewer cannot change
parameters (its messages are refused and counted), never sends media up, and ends when
the owner's session ends. Each session admits at most ``max_viewers``.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any

from aiortc import MediaStreamTrack

from scope_relay.local.sessions.fanout import CountedSubscription, OutputFanout
from scope_relay.protocol.capabilities import Capabilities
from scope_relay.protocol.errors import TooManyViewers, UnknownShare
from scope_relay.rtc.aiortc_internals import negotiated_codecs, prefer_codec
from scope_relay.rtc.keyframe_requests import pass_keyframe_requests
from scope_relay.rtc.peer import PeerSession
from scope_relay.rtc.sdp import validate_offer_sdp
from scope_relay.rtc.video_codecs import video_transceiver

logger = logging.getLogger(__name__)

#: viewers per session unless the relay is told otherwise
MAX_VIEWERS = 8
#: a viewer that has not connected this long after its offer was answered is let go, and
#: its slot with it: offers that never connect ("ghosts") cannot hold a share link's slots
#: for long. Generous for a real viewer: on a LAN, ICE and DTLS take well under a second.
CONNECT_TIMEOUT = 10.0


class ViewerSession(PeerSession):
    """A receive-only peer: the owner's output through the fan-out, nothing up."""

    role = "viewer"

    def __init__(self, fanout: OutputFanout, capabilities: Capabilities, pipeline_ids: list[str],
                 *, ice_servers: list[dict[str, Any]], loopback_ice: bool):
        super().__init__(ice_servers=ice_servers, loopback_ice=loopback_ice,
                         connect_timeout=CONNECT_TIMEOUT)
        self.fanout = fanout
        self.capabilities = capabilities
        self.pipeline_ids = list(pipeline_ids)
        self.video: CountedSubscription | None = None
        self.audio: CountedSubscription | None = None
        #: ``parameters`` messages a viewer sent: never forwarded
        self.parameters_refused = 0
        #: its offer was answered / ICE and DTLS came up: answered and closed before
        #: connecting, it held a slot for nothing (a "ghost")
        self.answered = False
        self.ever_connected = False

    async def handle_offer(self, sdp: Any) -> str:
        await self.set_offer(validate_offer_sdp(sdp))
        caps = self.capabilities
        assert caps is not None
        # the forwarded codec first where the viewer offered it, so it too gets the
        # cloud's packets as they are (rtc/video_codecs.py says the same for the page)
        transceiver = video_transceiver(self.pc)
        if self.fanout.forwarded_codec is not None and transceiver is not None:
            prefer_codec(transceiver, self.fanout.forwarded_codec)
        self.video, self.audio = self.fanout.subscribe(
            video=caps.produces_video and self.offers("video"),
            audio=caps.produces_audio and self.offers("audio"),
            # a viewer that negotiated another codec than the one forwarded gets pixels,
            # which its own sender encodes (the way back, for it alone)
            decoded=not self.fanout.can_forward_to(self.video_codecs()),
            name=self.role.lower().replace(" ", "_"))  # (a /metrics name: "whep_viewer")
        self.attach_media(self.video, self.audio, receive_video=False)
        if self.video_send is not None and self.video is not None:
            pass_keyframe_requests(self.video_send.sender, self.video.request_keyframe)
        answer = await self.create_answer()
        self.answered = True
        return answer

    def video_codecs(self) -> list[str]:
        """The video codecs this viewer's answer negotiates, its sender's first."""
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video":
                return negotiated_codecs(transceiver)
        return []

    # --- hooks ---------------------------------------------------------------------------
    def on_track(self, track: MediaStreamTrack) -> None:
        self.drain(track)  # (answered inactive; anything arriving anyway is read and dropped)

    def on_connected(self) -> None:
        self.ever_connected = True

    def on_parameters(self, raw: str, updates: dict[str, Any]) -> None:
        self.parameters_refused += 1
        logger.warning("%s: a viewer cannot change parameters (refused)", self.name)

    async def release(self) -> None:
        self.fanout.unsubscribe(self.video, self.audio)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["parameters_refused"] = self.parameters_refused
        for kind, sub in (("video", self.video), ("audio", self.audio)):
            if sub is not None:
                out[f"{kind}_frames_sent"] = sub.frames
                out[f"{kind}_frames_skipped"] = sub.skipped
        return out


class Audience:
    """The viewers of one owner session: its share token, the cap, and their end with it."""

    def __init__(self, fanout: OutputFanout, *, max_viewers: int = MAX_VIEWERS):
        self.fanout = fanout
        self.max_viewers = max_viewers
        #: what a share link carries; 192 random bits
        self.token = secrets.token_urlsafe(24)
        self.viewers: dict[str, ViewerSession] = {}
        #: joins refused because the session had its maximum of viewers
        self.refused = 0
        #: viewers whose offer was answered but who never connected (their slot freed
        #: after CONNECT_TIMEOUT at most)
        self.never_connected = 0
        self.closed = False

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(self.token.encode(), token.encode())

    def admit(self, viewer: ViewerSession) -> None:
        """Count ``viewer`` in (before its offer is answered, so racing joins see the cap);
        it leaves the audience when it closes."""
        if self.closed:
            raise UnknownShare("the shared session has ended")
        if len(self.viewers) >= self.max_viewers:
            self.refused += 1
            raise TooManyViewers(f"this session already has its {self.max_viewers} viewers")
        self.viewers[viewer.session_id] = viewer
        viewer.on_closed = self._left

    def _left(self, viewer_id: str) -> None:
        viewer = self.viewers.pop(viewer_id, None)
        if viewer is not None and viewer.answered and not viewer.ever_connected \
                and not self.closed:
            self.never_connected += 1

    async def close(self) -> None:
        """The owner's session ended: so does every viewer's."""
        self.closed = True
        for viewer in list(self.viewers.values()):
            await viewer.close()

    def stats(self) -> dict[str, Any]:
        return {"viewers": len(self.viewers), "viewers_refused": self.refused,
                "viewers_never_connected": self.never_connected,
                **self.fanout.stats()}
