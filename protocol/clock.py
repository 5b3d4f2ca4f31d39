"""Media-clock conventions shared by both sides.

Every session has one media timeline in seconds, starting at 0 with the first output.
Audio pts count 48 kHz samples on it, video pts count 90 kHz ticks on it, so a video
frame and an audio sample with the same media time have ``v / 90000 == a / 48000``.
Wall-clock release times are ``epoch + media_time + playout_delay`` with one epoch and one
delay per session, shared by both tracks (ARCHITECTURE.md, "Timing").
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Callable

from .audio import SAMPLE_RATE

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)


def video_pts(media_seconds: float) -> int:
    return round(media_seconds * VIDEO_CLOCK_RATE)

#: libopus's encoder delay (312 samples at 48 kHz). An encoded packet carries audio that
#: much older than the frame it was sent for, so audio senders release each frame this
#: much early to keep the sender report's (RTP, time) pairs true to the content.
OPUS_LOOKAHEAD_SECONDS = 312 / SAMPLE_RATE


async def sleep_until(clock: Callable[[], float], deadline: float) -> None:
    """Wait until ``clock()`` reaches ``deadline`` (aiortc's senders do no pacing)."""
    delay = deadline - clock()
    if delay > 0:
        await asyncio.sleep(delay)
