"""Which video codec each hop uses: ``--video-codec h264|vp8`` on the cloud, and the page
hop following whatever the cloud sends.

- **Cloud hop.** The relay offers both codecs (aiortc offers VP8 and H.264 on every video
  m-line); the cloud's answer puts its ``--video-codec`` first (:func:`answer_with`), or
  the other one when the offer lacks it. The first codec of the answer is what its sender
  sends.
- **Page hop.** :func:`page_video_codec` decides: the cloud's negotiated codec whenever
  the browser offered it, since the page must receive exactly what the cloud sends for the
  relay to forward it unchanged; otherwise the browser's own first choice among the
  codecs the relay can encode, and the relay encodes for the page (decoding the cloud's).

H.264 is sent as constrained baseline (no B-frames, CAVLC), packetization-mode 1 (FU-A and
STAP-A), with aiortc's ``profile-level-id`` 42e01f or 42001f (level 3.1) as offered and
``level-asymmetry-allowed=1``; the bitstream's own level is libx264's for the picture
(rtc/h264_encoder.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .aiortc_internals import offered_codecs, prefer_codec, sending_codec

#: ``--video-codec`` names and their MIME types
VIDEO_CODECS = {"vp8": "video/VP8", "h264": "video/H264"}
DEFAULT_VIDEO_CODEC = "vp8"


def parse_video_codec(name: str) -> str:
    """A ``--video-codec`` value, lower-cased; anything else is a ``ValueError``."""
    codec = name.strip().lower()
    if codec not in VIDEO_CODECS:
        raise ValueError(f"unknown video codec {name!r}: choose one of "
                         f"{', '.join(sorted(VIDEO_CODECS))}")
    return codec


def codec_name(mime_type: str | None) -> str | None:
    """``video/H264`` -> ``h264``; ``None`` (or a codec we do not name) -> ``None``."""
    if mime_type is None:
        return None
    for name, mime in VIDEO_CODECS.items():
        if mime.lower() == mime_type.lower():
            return name
    return None


def video_transceiver(pc: Any) -> Any:
    """The first video m-line's transceiver (the one media is attached to), or ``None``."""
    return next((t for t in pc.getTransceivers() if t.kind == "video"), None)


def video_codec(pc: Any) -> str | None:
    """The codec the first video m-line sends with once negotiated (``None``: no video
    m-line, or not negotiated yet). For an offerer, what the answer put first."""
    transceiver = video_transceiver(pc)
    return None if transceiver is None else codec_name(sending_codec(transceiver))


def answer_with(pc: Any, codec: str) -> str | None:
    """After a remote offer, before the answer: send ``codec`` on the first video m-line,
    else the first other codec of :data:`VIDEO_CODECS` the offer has. Returns the codec
    now in use (``None``: no video m-line)."""
    transceiver = video_transceiver(pc)
    if transceiver is None:
        return None
    for choice in (codec, *(c for c in VIDEO_CODECS if c != codec)):
        if prefer_codec(transceiver, VIDEO_CODECS[choice]):
            return choice
    return codec_name(sending_codec(transceiver))


def page_video_codec(cloud_codec: str | None, browser_offered: Sequence[str]) -> str | None:
    """Which codec the page hop uses: the cloud's (``cloud_codec``, what the cloud's answer
    negotiated) when the browser offered it, so the relay can pass the cloud's frames on
    unchanged; else ``None``, meaning the browser's own first choice among the relay's
    codecs, which the relay encodes itself. ``browser_offered``: codec names in the
    browser's order."""
    return cloud_codec if cloud_codec is not None and cloud_codec in browser_offered else None


def choose_page_codec(page_pc: Any, cloud_pc: Any) -> str | None:
    """Apply :func:`page_video_codec` to the page's peer (offer applied, answer not yet
    made) given the cloud's negotiated peer; returns the codec the page hop will use."""
    transceiver = video_transceiver(page_pc)
    if transceiver is None:
        return None
    offered = [name for name in map(codec_name, offered_codecs(transceiver)) if name]
    chosen = page_video_codec(video_codec(cloud_pc) if cloud_pc is not None else None, offered)
    if chosen is not None:
        prefer_codec(transceiver, VIDEO_CODECS[chosen])
    return codec_name(sending_codec(transceiver))
