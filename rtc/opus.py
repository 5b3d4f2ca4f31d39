"""Opus settings for music, for every aiortc sender in this process.

aiortc's encoder is hard-wired to 96 kbps with ``application=voip`` (speech tuning) and
ignores SDP fmtp. :func:`configure_opus` installs a subclass that sets full-band
``audio`` at the chosen bitrate (128 kbps stereo by default) and advertises the same in
the SDP (``stereo``/``sprop-stereo``/``maxaveragebitrate``) so browsers decode stereo.
It is process-wide, as aiortc's codec table is; call it before creating peers.
"""

from __future__ import annotations

from .aiortc_internals import OpusEncoderBase, install_opus_encoder

DEFAULT_BITRATE = 128_000
APPLICATIONS = ("audio", "voip", "lowdelay")


class MusicOpusEncoder(OpusEncoderBase):
    """aiortc's Opus encoder, tuned by :func:`configure_opus`."""

    bitrate = DEFAULT_BITRATE
    application = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.codec.bit_rate = self.bitrate
        self.codec.options = {"application": self.application}


def configure_opus(bitrate: int = DEFAULT_BITRATE, application: str = "audio") -> None:
    if not 6_000 <= bitrate <= 510_000:
        raise ValueError(f"Opus bitrate must be 6000..510000 bit/s, got {bitrate}")
    if application not in APPLICATIONS:
        raise ValueError(f"Opus application must be one of {APPLICATIONS}, got {application!r}")
    MusicOpusEncoder.bitrate = bitrate
    MusicOpusEncoder.application = application
    install_opus_encoder(MusicOpusEncoder,
                         {"stereo": 1, "sprop-stereo": 1, "maxaveragebitrate": bitrate})
