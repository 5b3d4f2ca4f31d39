"""OSC packets from the network, taken apart without trusting them.

python-osc parses bundles recursively (a deeply nested one ends in ``RecursionError``) and
its server sleeps on the caller's thread until a bundle's timetag. Here a packet is walked
with an explicit stack, nesting is capped, and each message comes back with its bundle's
timetag as a Unix time (or ``None``: "immediately"); when to apply it is the caller's
business. Messages themselves are parsed by python-osc's ``OscMessage`` (flat, no nesting
but its own argument arrays).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pythonosc.osc_message import OscMessage

BUNDLE = b"#bundle\x00"
#: bundle header: "#bundle\0" and an 8-byte timetag
BUNDLE_HEADER = 16
#: seconds from the NTP epoch (1900) to the Unix epoch (1970)
NTP_TO_UNIX = 2_208_988_800
#: the timetag that means "immediately" (63 zero bits and a one)
IMMEDIATELY = 1
#: bundles inside bundles: beyond this a packet is dropped whole
MAX_DEPTH = 4
#: messages in one packet: beyond this a packet is dropped whole (parsing is bounded)
MAX_MESSAGES = 256


class MalformedPacket(ValueError):
    """Not an OSC packet (or more than :data:`MAX_MESSAGES` messages)."""


class PacketTooDeep(ValueError):
    """Bundles nested deeper than :data:`MAX_DEPTH`."""


@dataclass(frozen=True)
class TimedMessage:
    #: Unix time the sender wants it applied at; ``None``: at once (a bare message or
    #: a bundle timetagged "immediately")
    at: float | None
    address: str
    args: tuple[Any, ...]


def timetag_time(tag: int) -> float | None:
    """An OSC (NTP) timetag as Unix time; ``None`` for "immediately"."""
    if tag == IMMEDIATELY:
        return None
    return (tag >> 32) - NTP_TO_UNIX + (tag & 0xFFFFFFFF) / 2**32


def _bundle_elements(bundle: bytes) -> list[bytes]:
    """The size-prefixed elements after a bundle's header."""
    if len(bundle) < BUNDLE_HEADER:
        raise MalformedPacket("bundle shorter than its header")
    elements, pos = [], BUNDLE_HEADER
    while pos < len(bundle):
        if pos + 4 > len(bundle):
            raise MalformedPacket("bundle element size cut short")
        size = int.from_bytes(bundle[pos:pos + 4], "big")
        if size == 0 or size % 4 or pos + 4 + size > len(bundle):
            raise MalformedPacket(f"bundle element of {size} bytes does not fit")
        elements.append(bundle[pos + 4:pos + 4 + size])
        pos += 4 + size
    return elements


def parse_packet(data: bytes, *, max_depth: int = MAX_DEPTH,
                 max_messages: int = MAX_MESSAGES) -> list[TimedMessage]:
    """Every message of a packet, in packet order; raises :class:`MalformedPacket` or
    :class:`PacketTooDeep` (nothing of such a packet is used).

    A message takes the timetag of the bundle that holds it directly."""
    out: list[TimedMessage] = []
    stack: list[tuple[bytes, float | None, int]] = [(data, None, 0)]  # element, time, depth
    while stack:
        element, at, depth = stack.pop()
        if element.startswith(BUNDLE):
            if depth >= max_depth:
                raise PacketTooDeep(f"bundles nested more than {max_depth} deep")
            tag = int.from_bytes(element[8:BUNDLE_HEADER], "big")
            children = _bundle_elements(element)
            own = timetag_time(tag)
            stack.extend((child, own, depth + 1) for child in reversed(children))
        elif element.startswith(b"/"):
            if len(out) >= max_messages:
                raise MalformedPacket(f"more than {max_messages} messages in one packet")
            try:
                message = OscMessage(element)
            except Exception as exc:  # python-osc's ParseError and whatever garbage causes
                raise MalformedPacket(f"bad message: {type(exc).__name__}") from None
            out.append(TimedMessage(at, message.address, tuple(message.params)))
        else:
            raise MalformedPacket("neither an OSC message nor a bundle")
    return out
