"""The loss-aware jitter buffers and Opus decoding (rtc/jitter.py, rtc/opus_decoder.py),
packet by packet on a fake clock."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from scope_relay.rtc.jitter import AudioJitterBuffer, VideoJitterBuffer, seq_diff
from scope_relay.rtc.opus_decoder import (
    DecodeStats,
    LossAwareOpusDecoder,
    carries_fec,
    loss_aware_available,
)
from scope_relay.rtc.receive_path import is_keyframe


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def audio_buffer(clock: Clock) -> AudioJitterBuffer:
    return AudioJitterBuffer(clock=clock, min_wait=0.03, max_wait=0.12, initial_rtt=0.03)


def feed(buf: AudioJitterBuffer, clock: Clock, seqs: list[int], *, step: float = 0.02,
         first_ts: int = 5000, first_seq: int = 10) -> list:
    out = []
    for seq in seqs:
        out += buf.add(seq % 65536, first_ts + (seq - first_seq) * 960, bytes([seq % 256]))
        clock.now += step
    return out


def test_seq_diff_wraps():
    assert seq_diff(2, 65534) == 4
    assert seq_diff(65534, 2) == -4


def test_audio_in_order_is_released_at_once_without_prefetch():
    clock = Clock()
    buf = audio_buffer(clock)
    assert len(buf.add(10, 5000, b"a")) == 1  # aiortc's buffer would hold 4 packets first
    assert len(buf.add(11, 5960, b"b")) == 1


def test_audio_hole_is_nacked_and_filled_by_a_retransmission():
    clock = Clock()
    buf = audio_buffer(clock)
    out = feed(buf, clock, [10, 11, 13, 14])
    assert [u.payload for u in out] == [bytes([10]), bytes([11])]
    assert buf.take_nacks() == [12]
    out = buf.add(12, 5000 + 2 * 960, bytes([12]))  # the retransmission, in time
    assert [u.payload for u in out] == [bytes([12]), bytes([13]), bytes([14])]
    assert buf.lost == 0 and buf.nacks.recovered == 1


def test_audio_hole_given_up_after_the_deadline_becomes_a_lost_unit():
    clock = Clock()
    buf = audio_buffer(clock)
    feed(buf, clock, [10, 11, 13])
    assert buf.take_nacks() == [12]
    clock.now += buf.nacks.deadline
    out = buf.add(14, 5000 + 4 * 960, bytes([14]))
    assert [u.payload for u in out] == [None, bytes([13]), bytes([14])]
    lost = out[0]
    assert lost.timestamp == 5000 + 2 * 960 and lost.duration == 960
    assert lost.next_payload == bytes([13])  # its in-band FEC source
    assert buf.lost == 1
    assert buf.add(12, 5000 + 2 * 960, bytes([12])) == []  # too late now: counted
    assert buf.late == 1


def test_audio_missing_packet_is_asked_again_a_round_trip_later_at_most_three_times():
    clock = Clock()
    buf = AudioJitterBuffer(clock=clock, min_wait=1.0, max_wait=1.0, initial_rtt=0.03)
    feed(buf, clock, [10, 12], step=0.0)
    assert buf.take_nacks() == [11]
    asked = 1
    for _ in range(10):
        clock.now += 0.06
        feed(buf, clock, [], step=0.0)
        buf.add(20 + _, 0, b"x")  # later packets keep arriving
        asked += buf.take_nacks().count(11)
    assert asked == 3


def test_audio_wraps_and_resets_on_a_new_stream():
    clock = Clock()
    buf = audio_buffer(clock)
    out = feed(buf, clock, [65534, 65535, 65536, 65537], first_seq=65534)
    assert len(out) == 4 and buf.lost == 0
    assert len(buf.add(30000, 1, b"new")) == 1  # a sender restart: start over
    assert buf.resets == 1


def test_audio_overflow_gives_holes_up_without_waiting():
    clock = Clock()
    buf = AudioJitterBuffer(clock=clock, capacity=4, min_wait=10, max_wait=10)
    out = feed(buf, clock, [10, 12, 13, 14, 15, 16], step=0.0)
    assert [u.payload is None for u in out] == [False, True] + [False] * 5


class VideoStream:
    """Packets of a fake video stream: (seq, timestamp, payload, marker)."""

    KEY = b"\x10\x02\x00\x9d\x01\x2a" + b"k" * 10
    DELTA = b"\x11" + b"d" * 10

    def __init__(self) -> None:
        self.seq = 100
        self.ts = 9000

    def frame(self, packets: int, key: bool) -> list[tuple[int, int, bytes, bool]]:
        out = []
        for i in range(packets):
            payload = (self.KEY if key else self.DELTA) if i == 0 else b"p"
            out.append((self.seq, self.ts, payload, i == packets - 1))
            self.seq += 1
        self.ts += 3750
        return out


def vp8(data: bytes) -> bool:
    return is_keyframe("video/VP8", data)


def video_buffer(clock: Clock) -> VideoJitterBuffer:
    return VideoJitterBuffer(is_keyframe=vp8, clock=clock, min_wait=0.04, max_wait=0.15)


def test_video_frame_released_on_its_marker_packet():
    clock, stream = Clock(), VideoStream()
    buf = video_buffer(clock)
    key = stream.frame(3, key=True)
    assert buf.add(*key[0]) == [] and buf.add(*key[1]) == []
    out = buf.add(*key[2])  # aiortc's buffer would wait for the next frame's first packet
    assert len(out) == 1 and out[0].keyframe and out[0].data.startswith(VideoStream.KEY)


def test_video_unsent_tail_is_not_a_hole():
    clock, stream = Clock(), VideoStream()
    buf = video_buffer(clock)
    key = stream.frame(3, key=True)
    buf.add(*key[0])
    clock.now += 1.0  # the rest is slow to come, but nothing is missing
    buf.add(*key[1])
    assert buf.take_nacks() == [] and buf.frames_skipped == 0
    assert len(buf.add(*key[2])) == 1


def test_video_lost_packet_skips_to_the_next_keyframe_and_asks_for_it():
    clock, stream = Clock(), VideoStream()
    buf = video_buffer(clock)
    released = []
    for packet in stream.frame(2, key=True):
        released += buf.add(*packet)
    broken = stream.frame(3, key=False)
    released += buf.add(*broken[0]) + buf.add(*broken[2])  # broken[1] lost
    assert buf.take_nacks() == [broken[1][0]]
    clock.now += 0.2  # past the deadline: give the frame up
    for packet in stream.frame(2, key=False):  # undecodable without the lost frame
        released += buf.add(*packet)
    assert buf.take_keyframe_request()
    for packet in stream.frame(2, key=True):
        released += buf.add(*packet)
    assert [f.keyframe for f in released] == [True, True]
    assert buf.frames_skipped >= 2 and buf.keyframe_requests == 1


def test_vp8_keyframes_are_told_from_real_encoded_frames():
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = 64, 48, "yuv420p"
    codec.time_base = fractions.Fraction(1, 30)
    kinds = []
    for i in range(3):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        for packet in codec.encode(frame):
            kinds.append(vp8(bytes(packet)))
    for packet in codec.encode(None):
        kinds.append(vp8(bytes(packet)))
    assert kinds[0] is True and not any(kinds[1:])


needs_libopus = pytest.mark.skipif(not loss_aware_available(), reason="no libopus")


def opus_packets(seconds: float, *, loss_percent: int) -> list[bytes]:
    from scope_relay.rtc.libopus import Encoder

    encoder = Encoder(48000, 2, "audio")
    encoder.configure(bitrate=128000, inband_fec=True, packet_loss_percent=loss_percent)
    t = np.arange(int(seconds * 48000)) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    stereo = np.repeat(tone[:, None], 2, axis=1)
    return [encoder.encode(stereo[i:i + 960].tobytes(), 960)
            for i in range(0, len(t) - 959, 960)]


@needs_libopus
def test_single_loss_is_recovered_from_the_next_packets_fec():
    from scope_relay.rtc.jitter import AudioUnit

    packets = opus_packets(1.0, loss_percent=10)
    assert carries_fec(packets[20])  # hybrid mode: LBRR data present
    stats = DecodeStats()
    decoder = LossAwareOpusDecoder(stats)
    out = []
    for i, payload in enumerate(packets):
        unit = AudioUnit(i * 960, None if i == 25 else payload,
                         packets[i + 1] if i == 25 else None)
        out += decoder.decode(unit)
    assert stats.fec_recovered == 1 and stats.concealed == 0
    pcm = np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0] for f in out]).astype(float)
    assert len(pcm) == len(packets) * 960  # no hole: the lost 20 ms was rebuilt
    assert [f.pts for f in out] == [i * 960 for i in range(len(packets))]
    rebuilt = pcm[25 * 960:26 * 960]
    assert np.sqrt(np.mean(rebuilt ** 2)) > 0.5 * np.sqrt(np.mean(pcm[:24 * 960] ** 2))


@needs_libopus
def test_loss_without_fec_is_concealed_not_silent():
    from scope_relay.rtc.jitter import AudioUnit

    packets = opus_packets(0.6, loss_percent=0)
    assert not carries_fec(packets[10])  # CELT at 128 kbps with no loss expected
    stats = DecodeStats()
    decoder = LossAwareOpusDecoder(stats)
    out = []
    for i, payload in enumerate(packets):
        out += decoder.decode(AudioUnit(i * 960, None if i == 15 else payload))
    out += decoder.decode(AudioUnit(len(packets) * 960, b"\xff\xfe garbage"))
    assert stats.concealed >= 1 and stats.errors <= 1
    pcm = np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0] for f in out]).astype(float)
    concealed = pcm[15 * 960:16 * 960]
    assert np.abs(concealed).max() > 1000  # libopus extrapolates the tone, not silence


# --- holes decided against the playout's budget (a hop with a round trip) -------------


def test_hole_no_retransmission_can_make_is_given_up_early_with_the_next_packets_fec():
    """Round trip 80 ms, 50 ms of budget: waiting for the retransmission would only make
    everything behind the hole late, so once a merely reordered packet would have come
    (30 ms) the hole becomes a lost unit carrying the next packet (its FEC); it is still
    NACKed once."""
    from scope_relay.rtc.jitter import REORDER_GRACE

    clock = Clock()
    buf = AudioJitterBuffer(clock=clock, initial_rtt=0.08, budget=lambda: 0.05)
    out = feed(buf, clock, [10, 11, 13], step=0.015)
    assert [u.payload for u in out] == [bytes([10]), bytes([11])]
    assert buf.take_nacks() == [12]
    clock.now += REORDER_GRACE - 0.015  # 13 has waited the grace
    out = buf.add(14, 5000 + 4 * 960, bytes([14]))
    assert [u.payload for u in out] == [None, bytes([13]), bytes([14])]
    assert out[0].next_payload == bytes([13])
    assert buf.given_up_early == 1 and buf.lost == 1
    assert buf.take_nacks() == []  # asked once, not again
    # its retransmission comes a round trip later: too late to play, but it is measured
    clock.now += 0.2
    assert buf.add(12, 5000 + 2 * 960, bytes([12])) == []
    assert buf.late == 1
    assert buf.nacks.rtt > 0.08  # ~0.22 s since the NACK went


def test_hole_a_retransmission_can_make_waits_for_it_but_not_past_its_deadline():
    clock = Clock()
    buf = AudioJitterBuffer(clock=clock, initial_rtt=0.03, budget=lambda: 0.1)
    out = feed(buf, clock, [10, 11, 13, 14])  # 12 missing, seen at 13's arrival
    assert [u.payload for u in out] == [bytes([10]), bytes([11])]
    assert buf.take_nacks() == [12]
    clock.now += 0.01
    out = buf.add(12, 5000 + 2 * 960, bytes([12]))  # the retransmission, in time
    assert [u.payload for u in out] == [bytes([12]), bytes([13]), bytes([14])]
    assert buf.given_up_early == 0 and buf.nacks.recovered == 1
    # another hole that never comes back: given up when 17 (behind it) has waited
    # budget - one packet = 80 ms, not the round-trip deadline's 55 ms
    out = feed(buf, clock, [15, 17])
    arrived_17 = clock.now - 0.02
    waited = []
    while not any(u.payload is None for u in out):
        clock.now += 0.005
        out += buf.add(18 + len(waited), 5000 + (8 + len(waited)) * 960, b"x")
        waited.append(clock.now - arrived_17)
    assert 0.075 <= waited[-1] <= 0.09


def test_a_reordered_packet_is_not_given_up_before_it_comes():
    clock = Clock()
    buf = AudioJitterBuffer(clock=clock, initial_rtt=0.08, budget=lambda: 0.05)
    feed(buf, clock, [10, 11, 13], step=0.01)
    clock.now += 0.005
    out = buf.add(12, 5000 + 2 * 960, bytes([12]))  # 15 ms behind its place
    assert [u.payload for u in out] == [bytes([12]), bytes([13])]
    assert buf.lost == 0 and buf.given_up_early == 0


def test_recent_holes_count_packets_found_missing():
    clock = Clock()
    buf = AudioJitterBuffer(clock=clock, budget=lambda: 0.0)
    feed(buf, clock, [10, 12, 13, 16])  # 11, 14 and 15 missing
    assert buf.recent_holes(10.0) == 3
    assert buf.longest_recent_burst(10.0) == 2  # 14-15
    clock.now += 11
    assert buf.recent_holes(10.0) == 0 and buf.longest_recent_burst(10.0) == 0
