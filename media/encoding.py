"""The H.264 and AAC streams the relay encodes into files and streams (an MP4 recording,
MPEG-TS out): the media clock's time bases, what every player takes."""

from __future__ import annotations

from collections.abc import Mapping

import av
from av.container import OutputContainer

from scope_relay.protocol.media import AUDIO_TIME_BASE, SAMPLE_RATE, VIDEO_TIME_BASE


def add_h264_stream(container: OutputContainer, size: tuple[int, int],
                    options: Mapping[str, str], *, gop_size: int | None = None,
                    thread_count: int | None = None) -> av.VideoStream:
    """libx264 in yuv420p at ``size`` on the 90 kHz video clock; ``options`` are x264's
    (a preset, a tune); a ``gop_size`` or ``thread_count`` given is set on the encoder."""
    stream = container.add_stream("libx264", options=dict(options))
    assert isinstance(stream, av.VideoStream)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = VIDEO_TIME_BASE
    stream.codec_context.time_base = VIDEO_TIME_BASE
    if gop_size is not None:
        stream.codec_context.gop_size = gop_size
    if thread_count is not None:
        stream.codec_context.thread_count = thread_count
    return stream


def add_aac_stream(container: OutputContainer, bit_rate: int) -> av.AudioStream:
    """Stereo AAC at the media sample rate, on the sample clock."""
    stream = container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
    assert isinstance(stream, av.AudioStream)
    stream.bit_rate = bit_rate
    stream.time_base = AUDIO_TIME_BASE
    return stream
