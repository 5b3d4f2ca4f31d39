"""The HTTP side WHEP and WHIP share (RFC 9725, draft-ietf-wish-whep): an
``application/sdp`` offer in, ``201 Created`` with the answer and the resource's
``Location`` out.

``application/sdp`` is not a CORS-safelisted content type, so no page of another origin
can send such an offer without a preflight, which the relay never grants; tools (OBS,
GStreamer, ffmpeg) send no ``Origin`` and pass the same-origin checks as the page does.
"""

from __future__ import annotations

from aiohttp import web

from scope_relay.protocol.errors import InvalidSdp, UnsupportedMediaType

SDP = "application/sdp"


async def read_offer(request: web.Request) -> str:
    """The request's SDP offer; 415 unless it is declared ``application/sdp``."""
    if request.content_type != SDP:
        raise UnsupportedMediaType(f"send the SDP offer as Content-Type: {SDP}")
    try:
        return (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSdp("the offer is not UTF-8 text") from None


def created(answer: str, location: str) -> web.Response:
    """``201 Created``: the answer, and where the resource lives (DELETE there ends it).
    Our answers carry every candidate (gathering completes first), so there is nothing to
    trickle: PATCH on the resource is ``405`` (the drafts allow that)."""
    return web.Response(status=201, body=answer.encode(), content_type=SDP,
                        headers={"Location": location, "Cache-Control": "no-store"})
