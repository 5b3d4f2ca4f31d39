"""WHEP egress (draft-ietf-wish-whep): a tool pulls a session over WebRTC with its share
token, as a share-link viewer does.

A WHEP viewer *is* a share-link viewer (:class:`~scope_relay.local.sessions.viewers.ViewerSession`):
the same fan-out, the same cap, a viewer's rights only. Two things differ: the signalling
(an ``application/sdp`` body, ``201`` + ``Location``, ``DELETE`` to leave; see
``sdp_http.py``), and the DTLS role. WHEP clients offer ``a=setup:actpass``; aiortc would
answer as the DTLS client with ECDSA-only suites, which an RSA-signing client (GStreamer
1.22's webrtcbin) cannot complete, so the relay takes the server role
(:func:`~scope_relay.rtc.aiortc_internals.answer_as_dtls_server`).
"""

from __future__ import annotations

from typing import Any

from scope_relay.local.sessions.viewers import ViewerSession
from scope_relay.rtc.aiortc_internals import answer_as_dtls_server


class WhepViewer(ViewerSession):
    """A share-link viewer signalled by WHEP, answering as the DTLS server."""

    role = "WHEP viewer"
    kind = "whep"

    async def set_offer(self, sdp: Any) -> None:
        await super().set_offer(sdp)
        answer_as_dtls_server(self.pc)
