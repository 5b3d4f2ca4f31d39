"""Every reach into aiortc's and aioice's internals, in one place.

aiortc offers no public seam for a few things this project needs: ICE host addresses
limited to loopback, an Opus encoder with other settings, the RTP half of received
sender reports, the receiver's RTP origin, and the direction a remote offer gave a
transceiver. Each is one small function here; ``tests/unit/test_aiortc_internals.py``
checks every name used below against the installed aiortc, so an upgrade that moves one
fails that test instead of silently changing behaviour.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aioice.ice
import aiortc.codecs
import aiortc.codecs.opus

#: aiortc's own Opus encoder class (subclass it to change its settings).
OpusEncoderBase: type = aiortc.codecs.opus.OpusEncoder
_original_host_addresses = aioice.ice.get_host_addresses


def filter_host_addresses(choose: Callable[[bool, bool], list[str] | None]) -> None:
    """Let ``choose(use_ipv4, use_ipv6)`` pick the host addresses ICE gathers from;
    returning ``None`` keeps aioice's own choice. Process-wide (aioice reads a module
    function); installing again replaces the previous filter."""

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = choose(use_ipv4, use_ipv6)
        return _original_host_addresses(use_ipv4, use_ipv6) if chosen is None else chosen

    aioice.ice.get_host_addresses = host_addresses


def install_opus_encoder(encoder: type, parameters: dict[str, Any]) -> None:
    """Make every new audio sender encode with ``encoder`` (aiortc's ``get_encoder``
    builds ``aiortc.codecs.OpusEncoder``) and advertise ``parameters`` in Opus's fmtp."""
    setattr(aiortc.codecs, "OpusEncoder", encoder)  # noqa: B010 (a module attribute we replace)
    for codec in aiortc.codecs.CODECS["audio"]:
        if codec.mimeType.lower() == "audio/opus":
            codec.parameters.update(parameters)


def opus_codec_parameters() -> dict[str, Any]:
    """The fmtp parameters aiortc offers for Opus (what :func:`install_opus_encoder` set)."""
    for codec in aiortc.codecs.CODECS["audio"]:
        if codec.mimeType.lower() == "audio/opus":
            return dict(codec.parameters)
    return {}


def tap_rtcp(receiver: Any, on_packet: Callable[[Any], None]) -> None:
    """Call ``on_packet`` with every RTCP packet an ``RTCRtpReceiver`` handles, before
    aiortc does (it keeps only the NTP half of sender reports)."""
    original: Callable[[Any], Awaitable[None]] = receiver._handle_rtcp_packet

    async def handle_rtcp(packet: Any) -> None:
        on_packet(packet)
        await original(packet)

    receiver._handle_rtcp_packet = handle_rtcp


def rtp_origin(receiver: Any) -> int | None:
    """The RTP timestamp aiortc subtracts to make a received track's pts (``None`` until
    the first packet): pts = RTP timestamp - origin."""
    mapper = getattr(receiver, "_RTCRtpReceiver__timestamp_mapper", None)
    return getattr(mapper, "_origin", None)


_REVERSED = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
             "inactive": "inactive"}


def offered_direction(transceiver: Any) -> str | None:
    """The direction of this m-line in the remote offer, as the offerer wrote it
    (``sendonly``: the remote sends), or ``None`` for a transceiver we created.

    aiortc keeps it reversed, from our side, in ``_offerDirection``."""
    ours = getattr(transceiver, "_offerDirection", None)
    return None if ours is None else _REVERSED[ours]


def sender_encoder(sender: Any) -> Any:
    """The encoder an ``RTCRtpSender`` built for its first frame (``None`` before it)."""
    return getattr(sender, "_RTCRtpSender__encoder", None)
