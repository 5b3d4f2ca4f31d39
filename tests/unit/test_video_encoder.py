"""The VP8 encoder every video sender uses (rtc/video_encoder.py): a rate that fits the
picture, no 1.5 Mb/s cap, the receiver's estimate followed without a keyframe storm, and
a keyframe every few seconds; on real libvpx with the hd-test picture."""

from __future__ import annotations

import fractions
from types import SimpleNamespace

import aiortc.codecs
import av
import pytest
from aiortc import RTCRtpCodecParameters

from scope_relay.cloud.builtin_pipelines.hd_test import hd_test_frame
from scope_relay.rtc import video_encoder
from scope_relay.rtc.video_encoder import (
    MIN_BITRATE,
    RatedVp8Encoder,
    configure_video,
    default_video_bitrate,
)

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000)


def frame(n: int, width: int, height: int, fps: float) -> av.VideoFrame:
    out = av.VideoFrame.from_ndarray(hd_test_frame(n, width, height, fps), format="yuv420p")
    out.pts, out.time_base = n, fractions.Fraction(1, round(fps))
    return out


@pytest.fixture
def encoder():
    configure_video(None)
    yield aiortc.codecs.get_encoder(VP8)
    configure_video(None)


def test_default_rate_scales_with_the_picture():
    hd, full_hd = default_video_bitrate(1280, 720, 30), default_video_bitrate(1920, 1080, 30)
    assert 2_500_000 < hd < 3_000_000 and 6_000_000 < full_hd < 6_500_000
    assert full_hd / hd == pytest.approx(2.25, rel=0.01)  # by pixels
    assert default_video_bitrate(1280, 720, 15) < hd < default_video_bitrate(1280, 720, 60)
    assert default_video_bitrate(1280, 720, 15) > hd / 2  # slower pictures: more per frame
    assert default_video_bitrate(64, 64, 1) == MIN_BITRATE


def test_configure_video_is_what_aiortc_builds_and_refuses_a_useless_rate(encoder):
    assert isinstance(encoder, RatedVp8Encoder)
    with pytest.raises(ValueError, match="cannot carry a picture"):
        configure_video(10_000)


def test_720p_goes_past_aiortcs_cap_and_keyframes_every_3_s(encoder):
    """120 frames (4 s) of 1280x720 at 30 fps: about the 2.8 Mb/s default, more than
    aiortc's 1.5 Mb/s could ever send, in one codec, with keyframes at 0 and 3 s."""
    sizes, keys = [], []
    for n in range(120):
        payloads, timestamp = encoder.encode(frame(n, 1280, 720, 30))
        assert timestamp == n * 3000
        data = b"".join(p[4:] if p[0] & 0x80 else p[1:] for p in payloads)  # VP8 descriptor
        sizes.append(len(data))
        if encoder.keyframes > len(keys):
            keys.append(n)
    rate = sum(sizes[30:]) * 8 / 3.0  # after the first second
    assert encoder.target_bitrate == default_video_bitrate(1280, 720, 30)
    assert rate > 2_000_000, rate
    assert encoder.reopens == 1
    assert keys == [0, 90]


def test_receiver_estimate_backs_off_and_recovers_without_a_keyframe_storm(encoder, monkeypatch):
    """The receiver's estimate runs up to 1.5x what arrives: above what we send it is no
    reason to slow down; when it falls the rate follows (the codec reopened once a
    fall_interval at most), and climbs back."""
    # the send rate is measured on the wall clock: a frame every 1/30 s of it, however slow
    # the box (a loaded one let the one-second window empty between two asserts)
    clock = iter(n / 30 for n in range(1_000_000))
    monkeypatch.setattr(video_encoder, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    for n in range(10):
        encoder.encode(frame(n, 640, 360, 30))
    ceiling = default_video_bitrate(640, 360, 30)
    sent = encoder.send_rate()
    assert encoder.target_bitrate == ceiling and encoder.reopens == 1 and sent
    encoder.target_bitrate = round(sent * 1.5)  # all is well: the ceiling stays
    encoder.encode(frame(10, 640, 360, 30))
    assert encoder.target_bitrate == ceiling and encoder.reopens == 1
    encoder.fall_interval = 30.0  # (instance attributes, for this test)
    encoder.target_bitrate = round(sent * 0.4)  # the receiver's estimate falls (an overuse)...
    encoder.encode(frame(11, 640, 360, 30))
    # ...and is the target (our receiver's REMB, rtc.congestion.delay_based, at its word)
    assert encoder.target_bitrate == round(sent * 0.4)
    assert encoder.reopens == 1  # ...but the codec was reopened less than 30 s ago
    encoder.fall_interval = 0.0
    encoder.encode(frame(12, 640, 360, 30))
    assert encoder.reopens == 2 and encoder.stats()["keyframes"] == 2
    encoder.raise_interval = 0.0
    encoder.target_bitrate = 50_000_000  # recovered: back up, never over the ceiling
    encoder.encode(frame(13, 640, 360, 30))
    assert encoder.target_bitrate == ceiling and encoder.reopens == 3


def test_an_explicit_ceiling_wins_over_the_default():
    configure_video(5_000_000)
    try:
        encoder = aiortc.codecs.get_encoder(VP8)
        encoder.encode(frame(0, 640, 360, 30))
        assert encoder.target_bitrate == 5_000_000
        encoder.target_bitrate = 9_000_000  # a receiver's estimate never lifts it
        assert encoder.target_bitrate == 5_000_000
    finally:
        configure_video(None)


def test_a_keyframe_request_is_answered_by_the_next_frame_without_reopening(encoder):
    for n in range(5):
        encoder.encode(frame(n, 640, 360, 30))
    assert encoder.keyframes == 1
    payloads, _ = encoder.encode(frame(5, 640, 360, 30), force_keyframe=True)
    assert encoder.keyframes == 2 and encoder.reopens == 1
    assert not payloads[0][4] & 1  # the VP8 frame tag after the 4-byte descriptor: key


def test_a_low_estimate_lowers_the_frame_rate_then_the_size_and_a_high_one_restores_them(
        encoder, monkeypatch):
    """Under a ceiling far below the picture's rate: bitrate first, then 30 -> 15 -> 10 fps
    (frames skipped at the encoder), then half the size (a keyframe at the new size); a
    rate that fits again climbs back, a step at a time."""
    now = [0.0]
    monkeypatch.setattr(video_encoder, "time", SimpleNamespace(monotonic=lambda: now[0]))
    encoder.fall_interval = encoder.raise_interval = 0.0
    sizes: list[tuple[int, int]] = []
    n = 0

    def run(seconds: float) -> int:
        nonlocal n
        kept = 0
        for _ in range(round(seconds * 30)):
            now[0] += 1 / 30
            payloads, _ = encoder.encode(frame(n, 640, 360, 30))
            n += 1
            if payloads:
                kept += 1
                sizes.append((encoder.codec.width, encoder.codec.height))
        return kept

    assert run(1.0) == 30
    kept = 0
    for _ in range(5):  # a ceiling: the receiver reports lose half the packets
        encoder.on_receiver_report(0.5, None)
        kept += run(1.3)
        if encoder.stats()["ladder_step"] == 0:
            assert encoder.target_bitrate <= 691_200  # bitrate first
    assert encoder.target_bitrate < 0.4 * default_video_bitrate(640, 360, 10)
    assert kept < 30 * 6.5 * 0.9  # fewer frames a second already
    run(5.0)
    assert encoder.stats()["ladder_step"] == 3 and sizes[-1] == (320, 180)
    assert encoder.stats()["ladder_moves"] == 3  # 30 -> 15 -> 10 fps -> half size
    assert 9 <= run(1.0) <= 11
    assert encoder.stats()["frames_skipped"] > 0
    # the ceiling lifts: the estimate grows back, and the picture with it
    for _ in range(20):
        encoder.on_receiver_report(0.0, None)
        encoder.target_bitrate = 10_000_000
        run(2.0)
        if encoder.stats()["ladder_step"] == 0:
            break
    assert encoder.stats()["ladder_step"] == 0 and sizes[-1] == (640, 360)
    assert run(1.0) == 30


def test_a_requested_keyframe_is_timed_from_the_request_to_its_packets(encoder):
    """A PLI (``on_keyframe_request``) and the forced keyframe that answers it are kept
    on the monotonic clock, with the keyframe's size (benchmarks/keyframe_latency.py)."""
    for n in range(3):
        encoder.encode(frame(n, 640, 360, 30))
    assert encoder.stats()["forced_keyframes_monotonic"] == []
    encoder.on_keyframe_request()
    encoder.on_keyframe_request()  # (a second ask before the keyframe: timed from the first)
    payloads, _ = encoder.encode(frame(3, 640, 360, 30), force_keyframe=True)
    (asked, started, encoded, size, packets), = encoder.stats()["forced_keyframes_monotonic"]
    assert asked <= started <= encoded and packets == len(payloads) and size > 1000
    assert encoder.keyframes == 2


def test_a_requested_keyframe_bursts_only_on_a_calm_path(encoder, monkeypatch):
    """Loss (or a delay overuse) in the last BURST_CALM_S: the keyframe is paced like any
    frame; a burst into a full bottleneck is dropped there and asks for another."""
    clock = [100.0]
    monkeypatch.setattr(video_encoder, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    announced: list[tuple[int, bool]] = []
    encoder.pacer = SimpleNamespace(
        expect_requested_keyframe=lambda n, burst: announced.append((n, burst)),
        backlog=lambda: 0.0, stats=lambda: {})
    encoder.encode(frame(0, 640, 360, 30))
    encoder.encode(frame(1, 640, 360, 30), force_keyframe=True)
    assert announced[-1][1] is True  # no loss seen: it may run ahead
    encoder.on_receiver_report(0.03, None)
    clock[0] += 1.0
    encoder.encode(frame(2, 640, 360, 30), force_keyframe=True)
    assert announced[-1][1] is False and encoder.stats()["requested_keyframes_paced"] == 1
    clock[0] += video_encoder.BURST_CALM_S
    encoder.encode(frame(3, 640, 360, 30), force_keyframe=True)
    assert announced[-1][1] is True and len(announced) == 3
