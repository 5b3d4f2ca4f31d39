"""RTP time follows the audio frames' pts through the Opus encoder the senders use.

Every stall of the cloud's clock (an underflow, a pause, a sender that fell behind; see
cloud/sessions/media_buffer.py) moves the audio track's pts forward without sending the samples in
between. The receiver places audio on the cloud's clock from RTP time and the sender
reports, so RTP time must jump with pts: if the encoder counted samples instead, every
stall would leave the relay's audio that much "late" from then on, and dropped.
"""

from __future__ import annotations

import aiortc.codecs
import numpy as np
from aiortc import RTCRtpCodecParameters

from scope_relay.media.audio import s16_frame
from scope_relay.protocol.media import FRAME_SAMPLES
from scope_relay.rtc.opus import configure_opus


def test_a_pts_jump_reaches_rtp_time():
    configure_opus()
    encoder = aiortc.codecs.get_encoder(
        RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2))
    silence = np.zeros((2, FRAME_SAMPLES), np.int16)
    stall = 50 * FRAME_SAMPLES  # one second
    stamps = [encoder.encode(s16_frame(silence, k * FRAME_SAMPLES + (stall if k >= 3 else 0)))[1]
              for k in range(6)]
    steps = np.diff([s for s in stamps if s is not None])
    # aiortc's own encoder shows a jump one frame late (its resampler's queue): allow that
    assert steps.sum() == 5 * FRAME_SAMPLES + stall, stamps
