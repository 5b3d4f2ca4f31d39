"""The H.264 encoder every H.264 sender uses (rtc/h264_encoder.py): the VP8 rate policy on
real libx264, constrained baseline with SPS/PPS before every IDR, aiortc's FU-A/STAP-A
packets, decoded by aiortc's own H.264 decoder to the right picture."""

from __future__ import annotations

import fractions
from types import SimpleNamespace

import aiortc.codecs
import av
import pytest
from aiortc import RTCRtpCodecParameters
from aiortc.codecs.h264 import PACKET_MAX, h264_depayload
from aiortc.jitterbuffer import JitterFrame

from scope_relay.cloud.builtin_pipelines.hd_test import hd_test_frame, luma
from scope_relay.rtc import video_encoder
from scope_relay.rtc.h264_encoder import NAL_IDR, NAL_PPS, NAL_SPS, RatedH264Encoder, nal_types
from scope_relay.rtc.video_encoder import RatedVp8Encoder, configure_video, default_video_bitrate
from scope_relay.testing.camera import frame_number

H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90_000, parameters={
    "packetization-mode": "1", "profile-level-id": "42e01f"})
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000)


def frame(n: int, width: int, height: int, fps: float) -> av.VideoFrame:
    out = av.VideoFrame.from_ndarray(hd_test_frame(n, width, height, fps), format="yuv420p")
    out.pts, out.time_base = n, fractions.Fraction(1, round(fps))
    return out


def bitstream(payloads: list[bytes]) -> bytes:
    """Annex B again, from aiortc's depayloader (single NAL, STAP-A, FU-A)."""
    return b"".join(h264_depayload(p) for p in payloads)


def sps(data: bytes) -> bytes:
    return next(nal for nal in RatedH264Encoder._split_bitstream(data) if nal[0] & 0x1F == NAL_SPS)


@pytest.fixture
def encoder():
    configure_video(None)
    yield aiortc.codecs.get_encoder(H264)
    configure_video(None)


def test_configure_video_installs_both_codecs(encoder):
    assert isinstance(encoder, RatedH264Encoder)
    assert isinstance(aiortc.codecs.get_encoder(VP8), RatedVp8Encoder)
    assert set(encoder.stats()) == set(aiortc.codecs.get_encoder(VP8).stats())


def test_720p_rate_keyframes_headers_and_packets(encoder):
    """120 frames (4 s) of 1280x720 at 30 fps: about the 2.8 Mb/s default (past aiortc's
    3 Mb/s-capped 1 Mb/s start), keyframes at 0 and 3 s, each an IDR behind its SPS and
    PPS, constrained baseline level 3.1, no RTP payload over aiortc's packet size, and
    every frame decoded by aiortc's decoder with its own number in it."""
    decoder = aiortc.codecs.get_decoder(H264)
    sizes, keys, numbers = [], [], []
    for n in range(120):
        payloads, timestamp = encoder.encode(frame(n, 1280, 720, 30))
        assert timestamp == n * 3000
        assert payloads and max(len(p) for p in payloads) <= PACKET_MAX
        data = bitstream(payloads)
        sizes.append(len(data))
        if NAL_IDR in nal_types(data):
            keys.append(n)
            assert nal_types(data)[:2] == [NAL_SPS, NAL_PPS], nal_types(data)
        decoded = decoder.decode(JitterFrame(data=data, timestamp=timestamp))
        numbers.append(frame_number(luma(decoded[0].to_ndarray(format="yuv420p"))))
    assert numbers == list(range(120))
    assert keys == [0, 90] and encoder.keyframes == 2 and encoder.reopens == 1
    first = sps(bitstream(encoder.encode(frame(120, 1280, 720, 30), force_keyframe=True)[0]))
    profile, constraints, level = first[1], first[2], first[3]
    assert (profile, level) == (66, 31) and constraints & 0x40  # constrained baseline, 3.1
    rate = sum(sizes[30:]) * 8 / 3.0  # after the first second
    assert encoder.target_bitrate == default_video_bitrate(1280, 720, 30)
    assert 2_000_000 < rate < 1.3 * encoder.target_bitrate, rate


def test_a_keyframe_request_is_an_idr_with_headers_without_reopening(encoder):
    for n in range(5):
        encoder.encode(frame(n, 640, 360, 30))
    payloads, _ = encoder.encode(frame(5, 640, 360, 30), force_keyframe=True)
    assert nal_types(bitstream(payloads))[:3] == [NAL_SPS, NAL_PPS, NAL_IDR]
    assert encoder.keyframes == 2 and encoder.reopens == 1


def test_1080p_is_level_4(encoder):
    payloads, _ = encoder.encode(frame(0, 1920, 1080, 30))
    assert sps(bitstream(payloads))[3] == 40


def test_receiver_estimate_backs_off_like_vp8(encoder, monkeypatch):
    clock = iter(n / 30 for n in range(1_000_000))
    monkeypatch.setattr(video_encoder, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    for n in range(10):
        encoder.encode(frame(n, 640, 360, 30))
    sent = encoder.send_rate()
    assert sent and encoder.reopens == 1
    encoder.target_bitrate = round(sent * 1.5)  # a REMB while all is well: nothing moves
    encoder.encode(frame(10, 640, 360, 30))
    assert encoder.reopens == 1
    encoder.fall_interval = 0.0
    encoder.target_bitrate = round(sent * 0.4)  # the estimate falls: an overuse, reopened
    payloads, _ = encoder.encode(frame(11, 640, 360, 30))
    # the receiver's REMB is the target, as for VP8 (tests/unit/test_video_encoder.py)
    assert encoder.target_bitrate == round(sent * 0.4) and encoder.reopens == 2
    assert encoder.codec is not None  # (libx264 keeps its rate in kb/s)
    assert abs(encoder.codec.bit_rate - encoder.target_bitrate) < 1000
    assert NAL_IDR in nal_types(bitstream(payloads))
