"""The OSC packet walker: timetags, nesting cap, malformed packets (no sockets)."""

from __future__ import annotations

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY as BUILDER_IMMEDIATELY
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from scope_relay.local.inputs.osc_packets import (
    BUNDLE,
    MAX_DEPTH,
    MAX_MESSAGES,
    MalformedPacket,
    PacketTooDeep,
    parse_packet,
    timetag_time,
)


def message(address: str, *values: str | bytes | bool | int | float) -> bytes:
    builder = OscMessageBuilder(address)
    for value in values:
        builder.add_arg(value)
    return builder.build().dgram


def bundle(tag: int, *elements: bytes) -> bytes:
    return BUNDLE + tag.to_bytes(8, "big") + b"".join(
        len(e).to_bytes(4, "big") + e for e in elements)


def test_a_bare_message_is_due_at_once():
    (m,) = parse_packet(message("/param/x", 0.5))
    assert (m.at, m.address, m.args) == (None, "/param/x", (0.5,))


def test_timetags_as_unix_time():
    assert timetag_time(1) is None  # "immediately"
    assert timetag_time(2_208_988_800 << 32) == 0.0
    assert timetag_time((2_208_988_801 << 32) | (1 << 31)) == 1.5
    assert timetag_time(0xFFFFFFFF << 32) == pytest.approx(2085978495.0)  # 2036


def test_bundles_as_python_osc_builds_them():
    builder = OscBundleBuilder(BUILDER_IMMEDIATELY)
    builder.add_content(OscMessageBuilder("/param/a").build())
    inner = OscBundleBuilder(1_000_000_000.25)
    inner.add_content(OscMessageBuilder("/param/b").build())
    builder.add_content(inner.build())
    a, b = parse_packet(builder.build().dgram)
    assert (a.address, a.at) == ("/param/a", None)
    assert b.address == "/param/b" and b.at == pytest.approx(1_000_000_000.25, abs=1e-6)


def test_nesting_is_capped():
    packet = message("/param/x", 1.0)
    for _ in range(MAX_DEPTH):
        packet = bundle(1, packet)
    assert [m.args for m in parse_packet(packet)] == [(1.0,)]
    with pytest.raises(PacketTooDeep):
        parse_packet(bundle(1, packet))
    for _ in range(3000):  # far beyond Python's recursion limit: still one quick error
        packet = bundle(1, packet)
    with pytest.raises(PacketTooDeep):
        parse_packet(packet)


@pytest.mark.parametrize("data", [
    b"", b"\x00\x00\x00\x00", b"hello", BUNDLE, BUNDLE + b"\x00" * 8 + b"\x00\x00\x00",
    BUNDLE + b"\x00" * 8 + b"\x00\x00\x00\x00",  # an empty element
    BUNDLE + b"\x00" * 8 + b"\x00\x00\x00\x08/a\x00\x00",  # longer than what follows
    BUNDLE + b"\x00" * 8 + b"\x00\x00\x00\x04junk",  # neither message nor bundle
    b"/param/frequency\x00\x00\x00\x00,f\x00",  # a float tag, no float
])
def test_malformed_packets(data):
    with pytest.raises(MalformedPacket):
        parse_packet(data)


def test_too_many_messages():
    one = message("/param/x", 1)
    assert len(parse_packet(bundle(1, *[one] * MAX_MESSAGES))) == MAX_MESSAGES
    with pytest.raises(MalformedPacket):
        parse_packet(bundle(1, *[one] * (MAX_MESSAGES + 1)))
