"""The media contract both sides share: audio format, clock rates and timing conventions.

Audio on the wire and inside both apps is 48 kHz stereo in 20 ms (960-sample) frames.
Every session has one media timeline in seconds, starting at 0 with the first output.
Audio pts count 48 kHz samples on it, video pts count 90 kHz ticks on it, so a video
frame and an audio sample with the same media time have ``v / 90000 == a / 48000``.
Wall-clock release times are ``epoch + media_time + playout_delay`` with one epoch and one
delay per session, shared by both tracks (docs/architecture.md, "Timing").
"""

from __future__ import annotations

from fractions import Fraction

SAMPLE_RATE = 48_000
CHANNELS = 2
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
AUDIO_TIME_BASE = Fraction(1, SAMPLE_RATE)
#: The most channels pipeline audio may have (more is refused, not guessed).
MAX_CHANNELS = 8

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)

#: libopus's encoder delay (312 samples at 48 kHz). An encoded packet carries audio that
#: much older than the frame it was sent for, so audio senders release each frame this
#: much early to keep the sender report's (RTP, time) pairs true to the content.
OPUS_LOOKAHEAD_SECONDS = 312 / SAMPLE_RATE


def video_pts(media_seconds: float) -> int:
    """A media time as a 90 kHz video pts."""
    return round(media_seconds * VIDEO_CLOCK_RATE)
