"""The aiortc/aioice internals that rtc/aiortc_internals.py relies on, checked against the
installed versions on real objects: an upgrade that moves one fails here, by name."""

from __future__ import annotations

import time

import aioice.ice
import aiortc.codecs
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpCodecParameters, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpreceiver import TimestampMapper
from aiortc.rtp import RtcpPacket, RtcpSenderInfo, RtcpSrPacket, RtpPacket, is_rtcp

from scope_relay.media.audio import s16_frame
from scope_relay.protocol.media import FRAME_SAMPLES
from scope_relay.rtc import aiortc_internals as internals
from scope_relay.rtc.ice import rtc_configuration
from scope_relay.rtc.opus import MusicOpusEncoder, configure_opus
from scope_relay.rtc.sender_reports import ntp_to_unix


async def offered_pair() -> tuple[RTCPeerConnection, RTCPeerConnection]:
    """A real offerer (sendrecv video, recvonly audio) and an answerer holding its offer."""
    offerer, answerer = RTCPeerConnection(rtc_configuration()), RTCPeerConnection(rtc_configuration())
    offerer.addTransceiver("video", direction="sendrecv")
    offerer.addTransceiver("audio", direction="recvonly")
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    return offerer, answerer


def test_host_address_filter_replaces_aioice_function():
    assert callable(internals._original_host_addresses)
    assert aioice.ice.get_host_addresses is not internals._original_host_addresses  # ours


def test_opus_encoder_is_what_aiortc_builds():
    configure_opus(64_000)
    try:
        encoder = aiortc.codecs.get_encoder(
            RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2))
        assert isinstance(encoder, MusicOpusEncoder)
        assert internals.opus_codec_parameters()["maxaveragebitrate"] == 64_000
    finally:
        configure_opus()


def test_sender_encoder_is_a_private_of_the_sender():
    from aiortc import RTCRtpSender
    assert "_RTCRtpSender__encoder" in RTCRtpSender.__init__.__code__.co_names


async def test_offered_direction_is_read_from_a_real_transceiver():
    offerer, answerer = await offered_pair()
    try:
        directions = {t.kind: internals.offered_direction(t) for t in answerer.getTransceivers()}
        assert directions == {"video": "sendrecv", "audio": "recvonly"}
        assert internals.offered_direction(offerer.getTransceivers()[0]) is None  # ours
    finally:
        await offerer.close()
        await answerer.close()


async def test_rtcp_tap_and_rtp_origin_on_a_real_receiver():
    offerer, answerer = await offered_pair()
    receiver = answerer.getTransceivers()[0].receiver
    seen = []
    try:
        internals.tap_rtcp(receiver, seen.append)
        report = RtcpSrPacket(ssrc=1234, sender_info=RtcpSenderInfo(
            ntp_timestamp=1 << 32, rtp_timestamp=90_000, packet_count=1, octet_count=100))
        await receiver._handle_rtcp_packet(report)  # what aiortc calls for each RTCP packet
        assert seen == [report]
        assert internals.rtp_origin(receiver) is None  # no RTP packet yet
        mapper = receiver._RTCRtpReceiver__timestamp_mapper
        assert isinstance(mapper, TimestampMapper)
        mapper.map(5000)  # what aiortc does with the first packet's timestamp
        assert internals.rtp_origin(receiver) == 5000
    finally:
        await offerer.close()
        await answerer.close()


class StandInTransport:
    """What an ``RTCRtpSender`` sends through: keeps every datagram."""

    state = "connected"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def _send_rtp(self, data: bytes) -> None:
        self.sent.append(data)


class ThreeFrames(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self):
        if self.count == 3:
            raise MediaStreamError
        self.count += 1
        return s16_frame(np.zeros((2, FRAME_SAMPLES), np.int16), (self.count - 1) * FRAME_SAMPLES)


#: the Opus codec as negotiated (payload type 111), for a sender or receiver run by hand
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


def driven_sender(*, encode_on_loop: bool,
                  early_reports: int) -> tuple[StandInTransport, RTCRtpSender]:
    """A real sender of ``ThreeFrames`` into a stand-in transport, driven by our loop."""
    transport = StandInTransport()
    sender = RTCRtpSender(ThreeFrames(), transport)  # type: ignore[arg-type]  # a stand-in
    internals.drive_sender(sender, encode_on_loop=encode_on_loop, early_reports=early_reports)
    return transport, sender


async def test_early_sender_reports_follow_each_first_frame_on_a_real_sender():
    """aiortc's own send loop, with reports early: each right after a frame's packet,
    pairing that packet's RTP time with when its frame left the track."""
    transport, sender = driven_sender(encode_on_loop=False, early_reports=2)
    before = time.time()
    await sender._run_rtp(OPUS)  # returns when the track ends
    kinds = ["rtcp" if is_rtcp(d) else "rtp" for d in transport.sent]
    assert kinds == ["rtp", "rtcp", "rtp", "rtcp", "rtp"]  # two early reports, then aiortc's own
    for k in (1, 3):
        (report,) = RtcpPacket.parse(transport.sent[k])
        assert isinstance(report, RtcpSrPacket) and report.ssrc == sender._ssrc
        rtp = RtpPacket.parse(transport.sent[k - 1])
        assert report.sender_info.rtp_timestamp == rtp.timestamp
        assert report.sender_info.packet_count == (k + 1) // 2
        assert before <= ntp_to_unix(report.sender_info.ntp_timestamp) <= time.time()


async def test_audio_is_encoded_on_the_loop_by_a_real_sender():
    """With ``encode_on_loop`` nothing goes to the thread pool, and the
    packets are what aiortc's own sender makes: RTP time following the frames' pts."""
    import asyncio

    transport, sender = driven_sender(encode_on_loop=True, early_reports=1)
    loop = asyncio.get_running_loop()

    def no_pool(*args: object) -> None:
        raise AssertionError("a frame was handed to the thread pool")

    loop.run_in_executor = no_pool
    try:
        await sender._run_rtp(OPUS)  # returns when the track ends
    finally:
        del loop.run_in_executor
    packets = [RtpPacket.parse(d) for d in transport.sent if not is_rtcp(d)]
    assert [p.timestamp - packets[0].timestamp for p in packets] == [0, 960, 1920]
    assert all(p.payload for p in packets)
    assert not hasattr(sender._next_encoded_frame, "__func__")  # ours, after the reports too


class SlowEncoder:
    """An encoder that takes 60 ms a frame, like VP8 on a busy pool."""

    def encode(self, frame: object, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        time.sleep(0.06)
        return [b"\xf8\xff\xfe"], int(getattr(frame, "pts", 0) or 0)


async def test_sender_reports_pair_rtp_time_with_release_not_send_time():
    """A frame that took 60 ms to encode is reported at when it left its track, so the
    receiver does not place it 60 ms late (aiortc pairs the time its packets went out)."""
    transport, sender = driven_sender(encode_on_loop=False, early_reports=2)  # as video
    sender._RTCRtpSender__encoder = SlowEncoder()
    released: list[float] = []
    track = sender._RTCRtpSender__track
    original_recv = track.recv

    async def recv() -> object:
        frame = await original_recv()
        released.append(time.time())
        return frame

    track.recv = recv
    await sender._run_rtp(OPUS)
    reports = [RtcpPacket.parse(d)[0] for d in transport.sent if is_rtcp(d)]
    assert len(reports) == 2
    for k, report in enumerate(reports):
        reported = ntp_to_unix(report.sender_info.ntp_timestamp)
        assert abs(reported - released[k]) < 0.01, (reported, released[k])


async def test_receive_path_takes_over_a_real_receivers_jitter_buffer_and_decoder():
    """Packets through aiortc's own ``_handle_rtp_packet``: our buffer releases them at
    once, NACKs the hole, and after its deadline the lost packet is concealed in place
    (pts continuous), decoded on the loop into aiortc's track."""
    import asyncio

    from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
    from aiortc.rtcrtpreceiver import RemoteStreamTrack

    from scope_relay.rtc.libopus import Encoder
    from scope_relay.rtc.opus_decoder import loss_aware_available
    from scope_relay.rtc.receive_path import install_receive_path

    if not loss_aware_available():
        import pytest
        pytest.skip("no libopus")
    pc = RTCPeerConnection(rtc_configuration())
    receiver = pc.addTransceiver("audio", direction="recvonly").receiver
    receiver._track = RemoteStreamTrack(kind="audio")  # what setRemoteDescription makes
    path = install_receive_path(receiver, "audio")
    now = [0.0]
    path.buffer.clock = lambda: now[0]
    nacks: list[list[int]] = []

    async def record_nack(ssrc: int, lost: list[int]) -> None:
        nacks.append(lost)

    receiver._send_rtcp_nack = record_nack
    await receiver.receive(RTCRtpReceiveParameters(codecs=[OPUS]))
    try:
        encoder = Encoder(48000, 2, "audio")
        tone = (np.sin(np.arange(960) / 10) * 8000).astype(np.int16).repeat(2).tobytes()
        for i in (0, 1, 3, 4, 5):  # 2 is lost
            packet = RtpPacket(payload_type=111, sequence_number=100 + i,
                               timestamp=1000 + 960 * i, ssrc=5)
            packet.payload = encoder.encode(tone, 960)
            await receiver._handle_rtp_packet(packet, 0)
            now[0] += 0.05
        assert nacks == [[102]]
        frames = [await asyncio.wait_for(receiver.track.recv(), 5) for _ in range(6)]
        assert [f.pts for f in frames] == [960 * i for i in range(6)]
        assert path.stats()["lost"] == 1 and path.stats()["concealed"] == 1
    finally:
        await pc.close()


def test_audio_level_is_aiortcs_figure_computed_vectorised():
    """Our RTP audio level equals aiortc's own on real frames (silence, quiet, loud, full
    scale), and is what its senders now call."""
    import aiortc.rtp

    from scope_relay.media.audio import audio_level_dbov

    configure_opus()
    assert aiortc.rtp.compute_audio_level_dbov is audio_level_dbov
    rng = np.random.default_rng(1)
    for scale in (0, 3, 300, 8000, 32767):
        samples = (rng.uniform(-1, 1, (2, FRAME_SAMPLES)) * scale).astype(np.int16)
        frame = s16_frame(samples, 0)
        assert audio_level_dbov(frame) == internals._original_audio_level(frame), scale


def test_vp8_encoder_is_what_aiortc_builds_and_keeps_its_packetiser():
    from scope_relay.rtc.video_encoder import RatedVp8Encoder, configure_video

    configure_video(None)
    encoder = aiortc.codecs.get_encoder(RTCRtpCodecParameters(mimeType="video/VP8",
                                                              clockRate=90_000))
    assert isinstance(encoder, RatedVp8Encoder)
    assert issubclass(RatedVp8Encoder, aiortc.codecs.vpx.Vp8Encoder)
    payloads = encoder._packetize(b"x" * 3000, 7)  # aiortc's: 1300-byte payloads
    assert len(payloads) == 3 and all(len(p) <= 1300 for p in payloads)
    assert internals.vp8_threads(1280 * 720, 2) == 1


async def test_sender_rtcp_tap_sees_feedback_before_aiortc():
    import inspect

    from aiortc.rtp import RtcpPsfbPacket

    from scope_relay.rtc.send_feedback import count_feedback

    assert inspect.iscoroutinefunction(RTCRtpSender._handle_rtcp_packet)
    pc = RTCPeerConnection(rtc_configuration())
    try:
        sender = pc.addTransceiver("video", direction="sendonly").sender
        feedback = count_feedback(sender)
        await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=1, ssrc=1, media_ssrc=sender._ssrc))
        assert feedback.stats()["plis"] == 1
        assert sender._RTCRtpSender__force_keyframe  # aiortc handled it too
    finally:
        await pc.close()


async def test_video_codec_internals_on_a_real_transceiver():
    """``_codecs`` (what the sender sends with: the first), aiortc's H.264 packetiser and
    the module attribute ``get_encoder`` builds H.264 senders from."""
    from scope_relay.rtc.h264_encoder import RatedH264Encoder
    from scope_relay.rtc.video_encoder import configure_video

    offerer, answerer = await offered_pair()
    try:
        video = answerer.getTransceivers()[0]
        assert internals.offered_codecs(video) == ["video/VP8", "video/H264", "video/H264"]
        assert internals.sending_codec(video) == "video/VP8"
        assert internals.prefer_codec(video, "video/H264")
        assert internals.sending_codec(video) == "video/H264"
        assert not internals.prefer_codec(video, "video/AV1")
        rtx = [c for c in video._codecs if c.mimeType == "video/rtx"]
        assert [c.parameters["apt"] for c in rtx] == [
            c.payloadType for c in video._codecs if c.mimeType != "video/rtx"]
    finally:
        await offerer.close()
        await answerer.close()
    assert callable(internals.H264EncoderBase._packetize)
    assert callable(internals.H264EncoderBase._split_bitstream)
    configure_video(None)
    assert aiortc.codecs.H264Encoder is RatedH264Encoder


def test_rtp_history_is_a_module_global_the_sender_reads_at_run_time():
    import aiortc.rtcrtpsender
    assert "RTP_HISTORY_SIZE" in RTCRtpSender._retransmit.__code__.co_names  # a global
    before = aiortc.rtcrtpsender.RTP_HISTORY_SIZE
    try:
        internals.set_rtp_history(before * 2)
        assert aiortc.rtcrtpsender.RTP_HISTORY_SIZE == before * 2
        internals.set_rtp_history(16)  # never lowered
        assert aiortc.rtcrtpsender.RTP_HISTORY_SIZE == before * 2
    finally:
        aiortc.rtcrtpsender.RTP_HISTORY_SIZE = before


async def test_negotiated_codecs_are_read_from_a_real_transceiver():
    offerer, answerer = await offered_pair()
    try:
        video = next(t for t in answerer.getTransceivers() if t.kind == "video")
        codecs = internals.negotiated_codecs(video)
        assert codecs and codecs[0].lower() in ("video/vp8", "video/h264")
    finally:
        await offerer.close()
        await answerer.close()


async def test_paced_sender_routes_rtp_and_retransmissions_through_the_pacer():
    """Every RTP packet of a real sender (its frames and a retransmission) goes to the
    pacer's queue; its RTCP goes straight out; the pacer sends through the transport."""
    transport, sender = driven_sender(encode_on_loop=True, early_reports=1)
    queued: list[bytes] = []
    send_now = internals.pace_sender(sender, queued.append)
    await sender._run_rtp(OPUS)  # returns when the track ends
    assert all(is_rtcp(d) for d in transport.sent) and len(transport.sent) == 1  # the report
    assert [is_rtcp(d) for d in queued] == [False, False, False]
    assert isinstance(sender.transport, internals._PacedTransport)
    await sender._retransmit(RtpPacket.parse(queued[0]).sequence_number)
    assert len(queued) == 4 and queued[3] == queued[0]  # (no RTX negotiated: as it was)
    await send_now(queued[0])
    assert transport.sent[-1] == queued[0]
    assert "_RTCRtpSender__transport" in RTCRtpSender.__init__.__code__.co_names


async def test_a_paced_packet_is_stamped_with_when_it_leaves():
    """abs-send-time (what the receiver's REMB is computed from) is set again when the
    pacer sends the packet; the rest of the packet is unchanged."""
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtcrtpsender import clock

    _, sender = driven_sender(encode_on_loop=True, early_reports=0)
    extensions = sender._RTCRtpSender__rtp_header_extensions_map
    extensions.configure(RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(
        id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")]))
    packet = RtpPacket(payload_type=96, sequence_number=7, timestamp=1234, ssrc=5)
    packet.payload = b"payload"
    packet.extensions.abs_send_time = 0
    out = RtpPacket.parse(internals.restamp_send_time(sender, packet.serialize(extensions)),
                          extensions)
    now = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
    assert out.extensions.abs_send_time is not None
    assert abs(out.extensions.abs_send_time - now) < 1 << 14  # within a quarter second
    assert (out.sequence_number, out.timestamp, out.payload) == (7, 1234, b"payload")
    plain = RtpPacket(payload_type=96, sequence_number=8, timestamp=0, ssrc=5).serialize()
    assert internals.restamp_send_time(sender, plain) == plain  # no extension: as it was


async def test_our_bandwidth_estimator_replaces_aiortcs_on_a_real_receiver():
    """Two real peers over loopback, VP8 video: the receiver's REMB now comes from our
    estimator (aiortc's is off), with arrival times stamped by aioice's ``data_received``
    before aiortc reads the datagram, and reaches the sender naming the media SSRC."""
    import asyncio

    from aiortc import VideoStreamTrack
    from aiortc.rtcrtpreceiver import RTCRtpReceiver
    from aiortc.rtp import RtcpPsfbPacket

    from scope_relay.rtc.ice import loopback_candidates
    from scope_relay.rtc.receive_path import install_receive_path

    assert "_RTCRtpReceiver__remote_bitrate_estimator" in RTCRtpReceiver.__init__.__code__.co_names
    assert {"data_received", "recv"} <= set(dir(aioice.ice.Connection))
    sender_pc = RTCPeerConnection(rtc_configuration())
    receiver_pc = RTCPeerConnection(rtc_configuration())
    sender = sender_pc.addTrack(VideoStreamTrack())
    paths = []
    receiver_pc.on("track", lambda track: paths.append(
        install_receive_path(receiver_pc.getTransceivers()[0].receiver, "video")))
    rembs: list[tuple[int, list[int]]] = []

    def on_feedback(packet) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == 15:
            rembs.append(aiortc.rtp.unpack_remb_fci(packet.fci))

    internals.tap_sender_rtcp(sender, on_feedback)
    try:
        with loopback_candidates():
            await sender_pc.setLocalDescription(await sender_pc.createOffer())
            await receiver_pc.setRemoteDescription(sender_pc.localDescription)
            await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
            await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        deadline = time.monotonic() + 20
        while not rembs and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # polling for the first REMB, bounded
        receiver = receiver_pc.getTransceivers()[0].receiver
        assert receiver._RTCRtpReceiver__remote_bitrate_estimator is None
        assert rembs and rembs[0][1] == [sender._ssrc] and rembs[0][0] > 0
        connection = receiver.transport.transport._connection
        assert connection._scope_arrivals.last is not None  # stamped off the socket
        assert internals.arrival_stamps_dropped(receiver) == 0
        assert paths[0].stats()["rembs_sent"] >= len(rembs)
    finally:
        await sender_pc.close()
        await receiver_pc.close()


def test_nack_runs_pack_repeats_and_a_wrap_that_aiortc_cannot():
    from aiortc.rtp import RtcpRtpfbPacket

    lost = [65534, 65535, 0, 1, 65535, 3]  # a wrap and a repeat
    try:
        bytes(RtcpRtpfbPacket(fmt=1, ssrc=1, media_ssrc=2, lost=lost))
        raise AssertionError("aiortc packed it: nack_runs may be dropped")
    except ValueError:  # negative shift count: the packet that ended a hop
        pass
    runs = internals.nack_runs(lost)
    assert runs == [[65534, 65535], [0, 1, 3]]
    parsed = []
    for run in runs:
        data = bytes(RtcpRtpfbPacket(fmt=1, ssrc=1, media_ssrc=2, lost=run))
        parsed += RtcpPacket.parse(data)[0].lost
    assert parsed == [65534, 65535, 0, 1, 3]
    assert internals.nack_runs([]) == []
    assert internals.nack_runs([7, 5, 7, 40]) == [[5, 7, 40]]


async def test_a_failing_after_packet_hook_is_counted_not_raised():
    class Receiver:
        handled = 0

        async def _handle_rtp_packet(self, packet, arrival_time_ms):
            self.handled += 1

    async def hook(packet):
        raise ValueError("a bug in the hook")

    receiver = Receiver()
    internals.after_rtp_packet(receiver, hook)
    await receiver._handle_rtp_packet(object(), 0)
    await receiver._handle_rtp_packet(object(), 0)
    assert receiver.handled == 2 and receiver.rtp_hook_errors == 2
