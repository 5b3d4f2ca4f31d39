"""Every reach into aiortc's and aioice's internals, in one place.

aiortc offers no public seam for a few things this project needs: ICE host addresses
limited to loopback, an Opus encoder with other settings, the RTP half of received
sender reports, the receiver's RTP origin, the direction a remote offer gave a
transceiver, and the DTLS role of an answer. Each is one small function here;
``tests/unit/test_aiortc_internals.py`` checks every name used below against the
installed aiortc (the DTLS role: ``tests/integration/test_outputs_whep.py``), so an
upgrade that moves one fails a test instead of silently changing behaviour.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aioice.ice
import aiortc.codecs
import aiortc.codecs.h264
import aiortc.codecs.opus
import aiortc.codecs.vpx
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import aiortc.rtp
from aiortc.rtp import RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket
from av.frame import Frame

logger = logging.getLogger(__name__)

#: aiortc's own Opus encoder class (subclass it to change its settings).
OpusEncoderBase: type = aiortc.codecs.opus.OpusEncoder
#: aiortc's own VP8 encoder class (subclass it for its packetisation and ``pack``).
Vp8EncoderBase: type = aiortc.codecs.vpx.Vp8Encoder
#: how many threads aiortc gives libvpx for a picture of so many pixels on so many CPUs
vp8_threads: Callable[[int, int], int] = aiortc.codecs.vpx.number_of_threads
#: the ``fmt`` of an RTCP transport feedback packet that is a NACK (RFC 4585)
NACK_FORMAT: int = aiortc.rtp.RTCP_RTPFB_NACK
_original_host_addresses = aioice.ice.get_host_addresses


def filter_host_addresses(choose: Callable[[bool, bool], list[str] | None]) -> None:
    """Let ``choose(use_ipv4, use_ipv6)`` pick the host addresses ICE gathers from;
    returning ``None`` keeps aioice's own choice. Process-wide (aioice reads a module
    function); installing again replaces the previous filter."""

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = choose(use_ipv4, use_ipv6)
        return _original_host_addresses(use_ipv4, use_ipv6) if chosen is None else chosen

    aioice.ice.get_host_addresses = host_addresses


def install_opus_encoder(encoder: type, parameters: dict[str, Any]) -> None:
    """Make every new audio sender encode with ``encoder`` (aiortc's ``get_encoder``
    builds ``aiortc.codecs.OpusEncoder``) and advertise ``parameters`` in Opus's fmtp."""
    setattr(aiortc.codecs, "OpusEncoder", encoder)  # noqa: B010 (a module attribute we replace)
    for codec in aiortc.codecs.CODECS["audio"]:
        if codec.mimeType.lower() == "audio/opus":
            codec.parameters.update(parameters)


def install_video_encoder(encoder: type) -> None:
    """Make every new VP8 sender encode with ``encoder`` (aiortc's ``get_encoder`` builds
    ``aiortc.codecs.Vp8Encoder``)."""
    setattr(aiortc.codecs, "Vp8Encoder", encoder)  # noqa: B010 (a module attribute we replace)


# --- video codecs: H.264 beside VP8, the codec a transceiver sends ---------------------
#: aiortc's own H.264 encoder class (subclass it for its FU-A/STAP-A packetisation)
H264EncoderBase: type = aiortc.codecs.h264.H264Encoder


def install_h264_encoder(encoder: type) -> None:
    """Make every new H.264 sender encode with ``encoder`` (aiortc's ``get_encoder``
    builds ``aiortc.codecs.H264Encoder``)."""
    setattr(aiortc.codecs, "H264Encoder", encoder)  # noqa: B010 (a module attribute we replace)


def prefer_codec(transceiver: Any, mime_type: str) -> bool:
    """Put ``mime_type`` (e.g. ``video/H264``) first among a transceiver's negotiated
    codecs, the others after it in their order, each RTX right after the codec it repairs.
    False (nothing changed) when the remote side did not offer it.

    aiortc's ``setCodecPreferences`` works only before a remote offer is applied (it
    filters the codecs then); an answerer's transceiver is created by that offer. The
    first codec is what the sender sends and what the answer lists first."""
    codecs = list(transceiver._codecs)
    wanted = [c for c in codecs if c.mimeType.lower() == mime_type.lower()]
    if not wanted:
        return False
    ordered = wanted + [c for c in codecs if c.mimeType.lower() not in (mime_type.lower(),
                                                                        "video/rtx")]
    rtx = {c.parameters.get("apt"): c for c in codecs if c.mimeType.lower() == "video/rtx"}
    transceiver._codecs = [x for c in ordered for x in (c, rtx.get(c.payloadType)) if x]
    return True


def sending_codec(transceiver: Any) -> str | None:
    """The MIME type a negotiated transceiver sends with (its first codec: aiortc's
    sender uses ``codecs[0]``), ``None`` before negotiation."""
    codecs = transceiver._codecs
    return str(codecs[0].mimeType) if codecs else None


def offered_codecs(transceiver: Any) -> list[str]:
    """The MIME types the remote offer and we have in common on this m-line, in the
    offer's order (RTX left out)."""
    return [str(c.mimeType) for c in transceiver._codecs if c.mimeType.lower() != "video/rtx"]


_original_audio_level: Callable[[Any], int] = aiortc.rtp.compute_audio_level_dbov


def install_audio_level(compute: Callable[[Any], int]) -> None:
    """Make every audio sender compute its RTP audio-level extension with ``compute``
    (aiortc's ``rtp.compute_audio_level_dbov``, which it looks up per frame)."""
    setattr(aiortc.rtp, "compute_audio_level_dbov", compute)  # noqa: B010 (a module attribute we replace)


def opus_codec_parameters() -> dict[str, Any]:
    """The fmtp parameters aiortc offers for Opus (what :func:`install_opus_encoder` set)."""
    for codec in aiortc.codecs.CODECS["audio"]:
        if codec.mimeType.lower() == "audio/opus":
            return dict(codec.parameters)
    return {}


def tap_rtcp(receiver: Any, on_packet: Callable[[Any], None]) -> None:
    """Call ``on_packet`` with every RTCP packet an ``RTCRtpReceiver`` handles, before
    aiortc does (it keeps only the NTP half of sender reports)."""
    original: Callable[[Any], Awaitable[None]] = receiver._handle_rtcp_packet

    async def handle_rtcp(packet: Any) -> None:
        on_packet(packet)
        await original(packet)

    receiver._handle_rtcp_packet = handle_rtcp


def tap_sender_rtcp(sender: Any, on_packet: Callable[[Any], None]) -> None:
    """Call ``on_packet`` with every RTCP packet an ``RTCRtpSender`` handles (receiver
    reports, NACK, PLI, FIR, REMB), before aiortc does."""
    original: Callable[[Any], Awaitable[None]] = sender._handle_rtcp_packet

    async def handle_rtcp(packet: Any) -> None:
        on_packet(packet)
        await original(packet)

    sender._handle_rtcp_packet = handle_rtcp


def rtp_origin(receiver: Any) -> int | None:
    """The RTP timestamp aiortc subtracts to make a received track's pts (``None`` until
    the first packet): pts = RTP timestamp - origin."""
    mapper = getattr(receiver, "_RTCRtpReceiver__timestamp_mapper", None)
    return getattr(mapper, "_origin", None)


_REVERSED = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
             "inactive": "inactive"}


def offered_direction(transceiver: Any) -> str | None:
    """The direction of this m-line in the remote offer, as the offerer wrote it
    (``sendonly``: the remote sends), or ``None`` for a transceiver we created.

    aiortc keeps it reversed, from our side, in ``_offerDirection``."""
    ours = getattr(transceiver, "_offerDirection", None)
    return None if ours is None else _REVERSED[ours]


# --- the receive path (rtc/receive_path.py) -------------------------------------------
def replace_jitter_buffer(receiver: Any, intake: Any) -> None:
    """Give every depayloaded RTP packet (RTX unwrapped, ``packet._data`` set) to
    ``intake.add(packet)``, which must return ``(False, None)``: it queues frames itself
    with :func:`queue_for_decoding`. aiortc's NACK generator is switched off (the intake
    asks for lost packets, and again when a retransmission is lost too)."""
    receiver._RTCRtpReceiver__jitter_buffer = intake
    receiver._RTCRtpReceiver__nack_generator = None


def receiver_codec(receiver: Any, payload_type: int) -> Any:
    """The negotiated codec parameters for a payload type (``None`` if unknown)."""
    return receiver._RTCRtpReceiver__codecs.get(payload_type)


def map_timestamp(receiver: Any, timestamp: int) -> int:
    """An RTP timestamp mapped the way aiortc maps it before decoding (so ``pts`` and
    :func:`rtp_origin` agree). Timestamps must come in order."""
    mapped: int = receiver._RTCRtpReceiver__timestamp_mapper.map(timestamp)
    return mapped


def queue_for_decoding(receiver: Any, codec: Any, frame: Any) -> None:
    """Hand one encoded unit to the receiver's decoder thread, its ``timestamp`` first
    mapped (:func:`map_timestamp`). Units must come in timestamp order."""
    frame.timestamp = map_timestamp(receiver, frame.timestamp)
    receiver._RTCRtpReceiver__decoder_queue.put((codec, frame))


def deliver_decoded(receiver: Any, frame: Any) -> None:
    """Put a frame decoded on the event loop where the receiver's track reads, as
    aiortc's decoder thread would (without the thread hop)."""
    receiver._track._queue.put_nowait(frame)


def after_rtp_packet(receiver: Any, hook: Callable[[Any], Awaitable[None]]) -> None:
    """Await ``hook(packet)`` after aiortc has handled each received RTP packet.

    An exception in the hook is logged and counted (``receiver.rtp_hook_errors``), never
    raised: aiortc's DTLS transport ends its receive loop, and so the connection, on any
    exception that reaches it."""
    original: Callable[..., Awaitable[None]] = receiver._handle_rtp_packet
    receiver.rtp_hook_errors = 0

    async def handle_rtp(packet: Any, arrival_time_ms: int) -> None:
        await original(packet, arrival_time_ms)
        try:
            await hook(packet)
        except Exception:
            receiver.rtp_hook_errors += 1
            if receiver.rtp_hook_errors == 1:
                logger.exception("receive path: after-packet hook failed (counted from now)")

    receiver._handle_rtp_packet = handle_rtp


def nack_runs(lost: list[int]) -> list[list[int]]:
    """``lost`` (16-bit sequence numbers, any order, repeats allowed) as runs that each
    ascend without a wrap: aiortc packs a NACK's bitmask from ``p - first - 1`` and fails
    on a repeat or on numbers that wrap past 65535 (a negative shift)."""
    unique = sorted({s & 0xFFFF for s in lost})
    if not unique:
        return []
    # wrap-aware order: start after the largest circular gap between neighbours
    gaps = [(unique[(i + 1) % len(unique)] - s) & 0xFFFF for i, s in enumerate(unique)]
    start = (max(range(len(unique)), key=gaps.__getitem__) + 1) % len(unique)
    ordered = unique[start:] + unique[:start]
    runs: list[list[int]] = [[ordered[0]]]
    for s in ordered[1:]:
        if s < runs[-1][-1]:  # wrapped past 65535: a new packet
            runs.append([])
        runs[-1].append(s)
    return runs


async def send_nack(receiver: Any, media_ssrc: int, lost: list[int]) -> None:
    """NACK ``lost`` (any order, repeats and wraps allowed: see :func:`nack_runs`)."""
    for run in nack_runs(lost):
        await receiver._send_rtcp_nack(media_ssrc, run)


async def send_pli(receiver: Any, media_ssrc: int) -> None:
    await receiver._send_rtcp_pli(media_ssrc)


def sender_encoder(sender: Any) -> Any:
    """The encoder an ``RTCRtpSender`` built for its first frame (``None`` before it)."""
    return getattr(sender, "_RTCRtpSender__encoder", None)


def sender_packet_count(sender: Any) -> int:
    """RTP packets an ``RTCRtpSender`` has sent (what its sender reports count)."""
    count: int = getattr(sender, "_RTCRtpSender__packet_count", 0)
    return count


def sender_rtt(sender: Any) -> float | None:
    """The round trip (s) aiortc measured from receiver reports (``None`` before one)."""
    rtt: float | None = getattr(sender, "_RTCRtpSender__rtt", None)
    return rtt


# --- the delay-based estimate (rtc/congestion/delay_based.py) ---------------------------
#: datagrams stamped but not yet read, per ICE connection, at most (the receive queue is
#: unbounded in aioice; past this the oldest stamps go and those packets get a later one)
MAX_STAMPED = 2048


class _Arrivals:
    """Each datagram's arrival (``time.monotonic()``) as aioice's protocol got it from the
    socket, and the arrival of the datagram aiortc read last."""

    def __init__(self) -> None:
        self.pending: collections.deque[tuple[bytes, float]] = collections.deque(maxlen=MAX_STAMPED)
        self.last: float | None = None
        self.dropped = 0  # stamps pushed out unread (a full receive queue)


def _stamp_arrivals(connection: Any, ice_transport: Any) -> _Arrivals:
    """Stamp every datagram an aioice ``Connection`` queues with the time it came off
    the socket (``data_received``, called from the event loop's read callback), and hand
    the stamp over when aiortc's DTLS transport reads it (``recv``): aiortc's own arrival
    time is taken only after the loop has got round to the datagram and everything
    queued before it, so a busy receiver's stalls look like a queue on the path."""
    arrivals: _Arrivals | None = getattr(connection, "_scope_arrivals", None)
    if arrivals is not None:
        return arrivals
    arrivals = connection._scope_arrivals = _Arrivals()
    pending = arrivals.pending
    data_received: Callable[[bytes, int], None] = connection.data_received
    recv: Callable[[], Awaitable[bytes]] = connection.recv

    def stamped(data: bytes, component: int) -> None:
        if len(pending) == MAX_STAMPED:
            arrivals.dropped += 1
        pending.append((data, time.monotonic()))
        data_received(data, component)

    async def read() -> bytes:
        data = await recv()
        arrivals.last = None
        for index, (queued, at) in enumerate(pending):  # (in order: the head, unless the
            if queued is data:                          # datagram came before the stamps)
                for _ in range(index + 1):
                    pending.popleft()
                arrivals.last = at
                break
            if index >= 8:
                break
        return data

    connection.data_received = stamped
    connection.recv = read
    if getattr(ice_transport, "_recv", None) is not None:  # (started: it bound the original)
        ice_transport._recv = read
    return arrivals


def arrival_stamps_dropped(receiver: Any) -> int:
    """Arrival stamps pushed out unread on ``receiver``'s connection (0: none, or not stamped)."""
    ice = getattr(getattr(receiver, "transport", None), "transport", None)
    arrivals = getattr(getattr(ice, "_connection", None), "_scope_arrivals", None)
    return 0 if arrivals is None else int(arrivals.dropped)


def replace_bandwidth_estimator(receiver: Any, estimate: Callable[[int, float, int], int | None]) -> None:
    """Switch aiortc's REMB estimator off on a video ``RTCRtpReceiver`` and feed ours:
    ``estimate(abs_send_time, arrival, size)`` for every RTP packet carrying abs-send-time
    (media and retransmissions), ``arrival`` taken when its datagram came off the socket
    (``time.monotonic()``; aiortc's read time for the first packets, before the stamps are
    installed). A bitrate it returns goes back as a REMB naming the stream's media SSRC."""
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None
    original: Callable[..., Awaitable[None]] = receiver._handle_rtp_packet
    state: dict[str, Any] = {"arrivals": None, "ssrc": None}

    async def handle_rtp(packet: Any, arrival_time_ms: int) -> None:
        arrivals: _Arrivals | None = state["arrivals"]
        if arrivals is None:
            ice = getattr(getattr(receiver, "transport", None), "transport", None)
            connection = getattr(ice, "_connection", None)
            if connection is not None:
                arrivals = state["arrivals"] = _stamp_arrivals(connection, ice)
        codec = receiver._RTCRtpReceiver__codecs.get(packet.payload_type)
        if codec is not None and not codec.mimeType.lower().endswith("/rtx"):
            state["ssrc"] = packet.ssrc
        abs_send_time = packet.extensions.abs_send_time
        if abs_send_time is not None:
            arrival = arrivals.last if arrivals is not None and arrivals.last is not None \
                else time.monotonic()
            bitrate = estimate(abs_send_time, arrival, len(packet.payload) + packet.padding_size)
            rtcp_ssrc = receiver._RTCRtpReceiver__rtcp_ssrc
            if bitrate is not None and rtcp_ssrc is not None and state["ssrc"] is not None:
                await receiver._send_rtcp(aiortc.rtp.RtcpPsfbPacket(
                    fmt=aiortc.rtp.RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0,
                    fci=aiortc.rtp.pack_remb_fci(bitrate, [state["ssrc"]])))
        await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle_rtp


# --- the camera forwarded up (local/inputs/camera_uplink.py) --------------------------
def force_keyframe(sender: Any) -> None:
    """Make the next frame an ``RTCRtpSender``'s encoder encodes a keyframe (what aiortc
    does on a PLI): after forwarded packets its references are not the receiver's."""
    sender._RTCRtpSender__force_keyframe = True

# --- our send step (rtc/peer.py) -----------------------------------------------------
def drive_sender(sender: Any, *, encode_on_loop: bool, early_reports: int) -> None:
    """Take over an ``RTCRtpSender``'s per-frame step (aiortc's: read the track, encode in
    the default thread pool, return the payloads), doing the same plus three things:

    - ``encode_on_loop``: encode on the event loop. For a 20 ms Opus frame (~0.1-0.3 ms
      to encode) the pool costs more than the codec (a submit, a self-pipe write and a
      loop wake-up per frame); video keeps the pool, a VP8 frame can take milliseconds.
    - Sender reports pair the last frame's RTP time with when that frame left its track.
      aiortc pairs the time its packets went out, after encoding, which places a frame
      late by its encode time (a VP8 frame: ms, more when the pool is busy), and a
      browser lip-syncs by these pairs. Every report, aiortc's own included, gets it.
    - A sender report right after each of the first ``early_reports`` frames has gone
      out: aiortc's own loop sends its first 0.5-1.5 s after the sender starts, and a
      receiver cannot put media on the sender's clock before one.
    """
    loop = sender._RTCRtpSender__loop
    reports_left = early_reports
    last_release: int | None = None  # NTP time the last frame sent left its track

    async def next_encoded_frame(codec: Any) -> Any:
        nonlocal reports_left, last_release
        # aiortc asks for the next frame right after sending every packet of the last,
        # with nothing awaited between: no report can go out with its send-time pair
        if sender._RTCRtpSender__packet_count:
            if last_release is not None:
                sender._RTCRtpSender__ntp_timestamp = last_release
            if reports_left > 0:
                reports_left -= 1
                await send_sender_report(sender)
        data = await sender._RTCRtpSender__track.recv()
        released = aiortc.rtcrtpsender.clock.current_ntp_time()
        if not sender._enabled:
            return None  # (read anyway, so nothing piles up)
        encoder = sender._RTCRtpSender__encoder
        if encoder is None:
            encoder = sender._RTCRtpSender__encoder = aiortc.rtcrtpsender.get_encoder(codec)
        audio_level: Any = None  # (aiortc's own annotation says int; it passes None too)
        if isinstance(data, Frame):
            if isinstance(data, aiortc.rtcrtpsender.AudioFrame):
                audio_level = aiortc.rtp.compute_audio_level_dbov(data)
            force_keyframe = sender._RTCRtpSender__force_keyframe
            sender._RTCRtpSender__force_keyframe = False
            if encode_on_loop:
                payloads, timestamp = encoder.encode(data, force_keyframe)
            else:
                payloads, timestamp = await loop.run_in_executor(
                    None, encoder.encode, data, force_keyframe)
        else:
            payloads, timestamp = encoder.pack(data)
        if not payloads:
            return None
        last_release = released
        return aiortc.rtcrtpsender.RTCEncodedFrame(payloads, timestamp, audio_level)

    sender._next_encoded_frame = next_encoded_frame


class _PacedTransport:
    """A sender's DTLS transport whose RTP goes to a pacer; everything else (RTCP, the
    transport's own calls) is the transport's."""

    def __init__(self, inner: Any, enqueue: Callable[[bytes], None]) -> None:
        self._inner = inner
        self._enqueue = enqueue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _send_rtp(self, data: bytes) -> None:
        if aiortc.rtp.is_rtcp(data):
            await self._inner._send_rtp(data)
        else:
            self._enqueue(data)


def restamp_send_time(sender: Any, data: bytes) -> bytes:
    """The RTP packet ``data`` with its abs-send-time extension set to now. aiortc stamps
    it when it makes the packet; a paced packet leaves later, and the receiver's
    delay-based estimate (REMB) must see when it really left, or every frame's pacing
    looks like a queue building up."""
    extensions = sender._RTCRtpSender__rtp_header_extensions_map
    packet = aiortc.rtp.RtpPacket.parse(data, extensions)
    if packet.extensions.abs_send_time is None:
        return data
    packet.extensions.abs_send_time = (
        aiortc.rtcrtpsender.clock.current_ntp_time() >> 14) & 0x00FFFFFF
    restamped: bytes = packet.serialize(extensions)
    return restamped


def pace_sender(sender: Any, enqueue: Callable[[bytes], None]) -> Callable[[bytes], Awaitable[None]]:
    """Route an ``RTCRtpSender``'s RTP packets (media and retransmissions, already
    serialised) to ``enqueue`` instead of its transport; its RTCP goes straight out.
    Returns the function that really sends one (the pacer's), which stamps its
    abs-send-time (:func:`restamp_send_time`).

    aiortc's ``_run_rtp`` and ``_retransmit`` send through ``sender.transport``, which
    aiortc may replace (bundling) after the sender exists, so the transport is wrapped
    again before each frame if it was replaced. Call after :func:`drive_sender`."""
    drive = sender._next_encoded_frame

    async def next_encoded_frame(codec: Any) -> Any:
        transport = sender._RTCRtpSender__transport
        if transport is not None and not isinstance(transport, _PacedTransport):
            sender._RTCRtpSender__transport = _PacedTransport(transport, enqueue)
        return await drive(codec)

    async def send_now(data: bytes) -> None:
        transport = sender._RTCRtpSender__transport
        if isinstance(transport, _PacedTransport):
            transport = transport._inner
        if transport is None:
            raise ConnectionError("the sender has no transport")
        await transport._send_rtp(restamp_send_time(sender, data))

    sender._next_encoded_frame = next_encoded_frame
    return send_now


async def send_sender_report(sender: Any) -> None:
    """Send the sender report (and CNAME) aiortc's ``_run_rtcp`` would send now."""
    ntp = sender._RTCRtpSender__ntp_timestamp
    packets: list[Any] = [RtcpSrPacket(ssrc=sender._ssrc, sender_info=RtcpSenderInfo(
        ntp_timestamp=ntp, rtp_timestamp=sender._RTCRtpSender__rtp_timestamp,
        packet_count=sender._RTCRtpSender__packet_count & 0xFFFFFFFF,
        octet_count=sender._RTCRtpSender__octet_count & 0xFFFFFFFF))]
    # what receiver reports echo back (aiortc computes the round-trip time from it)
    sender._RTCRtpSender__lsr = (ntp >> 16) & 0xFFFFFFFF
    sender._RTCRtpSender__lsr_time = time.time()
    cname = sender._RTCRtpSender__cname
    if cname is not None:
        packets.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(
            ssrc=sender._ssrc, items=[(1, cname.encode("utf8"))])]))
    await sender._send_rtcp(packets)


# --- forwarding encoded video (local/playout, local/sessions) -----------------------------
def set_rtp_history(packets: int) -> None:
    """Keep the last ``packets`` RTP packets per sender for retransmission (aiortc: 128,
    fewer than one 1080p keyframe has; a forwarding relay answers the local hop's NACKs
    from it). Process-wide; only ever raised."""
    current: int = aiortc.rtcrtpsender.RTP_HISTORY_SIZE
    if packets > current:
        setattr(aiortc.rtcrtpsender, "RTP_HISTORY_SIZE", packets)  # noqa: B010 (a module attribute we replace)


def negotiated_codecs(transceiver: Any) -> list[str]:
    """The mime types a transceiver negotiated, in preference order (its sender sends the
    first); empty before the remote description."""
    return [codec.mimeType for codec in getattr(transceiver, "_codecs", [])]


def answer_as_dtls_server(pc: Any) -> int:
    """After a remote offer that says ``a=setup:actpass``: take the DTLS server role, so the
    answer says ``a=setup:passive`` and the remote side opens the handshake.

    aiortc answers ``actpass`` as the DTLS client (``active``), offering only ECDSA cipher
    suites; a WHEP/WHIP client that signs with an RSA certificate (GStreamer 1.22's
    webrtcbin) then fails with "no shared cipher". As the server, our ECDSA certificate
    picks the suites and the client's certificate type no longer matters. aiortc keeps the
    role in ``RTCDtlsTransport._role`` ("auto" until an offer or answer fixes it) and writes
    the answer's ``setup`` from it. Returns how many transports it changed (an offer that
    said ``active`` already made ours the server; one that said ``passive`` keeps ours the
    client)."""
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    changed = 0
    for transport in {id(t): t for t in transports}.values():  # bundled: one, shared
        if transport._role == "auto":
            transport._set_role("server")
            changed += 1
    return changed
