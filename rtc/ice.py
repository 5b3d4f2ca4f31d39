"""ICE helpers both sides need: explicit ICE servers and the loopback-only switch.

aioice leaves 127.0.0.1 out of its host candidates, so a "loopback" aiortc connection
really goes over the machine's LAN address. Tests, benchmarks and the embedded demo's
relay <-> cloud hop must stay on 127.0.0.1; a real user's browser hop must not be
restricted. The switch is therefore scoped: it applies to ICE gathering run inside
:func:`loopback_candidates` (a context variable, so concurrent peers are unaffected), or
everywhere when ``SCOPE_RELAY_ICE_LOOPBACK=1`` is set (tests and benchmarks).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from aiortc import RTCConfiguration, RTCIceCandidate, RTCIceServer
from aiortc.sdp import candidate_from_sdp

from scope_relay.protocol.errors import InvalidMessage

from .aiortc_internals import filter_host_addresses

ENV_LOOPBACK = "SCOPE_RELAY_ICE_LOOPBACK"
_loopback_only: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "scope_relay_loopback_only", default=False)


def loopback_forced_by_env() -> bool:
    return os.environ.get(ENV_LOOPBACK, "").strip().lower() in {"1", "true", "yes", "on"}


def _loopback_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str] | None:
    if _loopback_only.get() or loopback_forced_by_env():
        return ["127.0.0.1"] if use_ipv4 else []
    return None  # aioice's own choice


filter_host_addresses(_loopback_addresses)


@contextlib.contextmanager
def loopback_candidates(enabled: bool = True) -> Iterator[None]:
    """Gather only 127.0.0.1 host candidates for ICE started inside this block."""
    token = _loopback_only.set(enabled or _loopback_only.get())
    try:
        yield
    finally:
        _loopback_only.reset(token)


def rtc_configuration(ice_servers: Sequence[Mapping[str, Any]] = ()) -> RTCConfiguration:
    """An explicit configuration: with none, aiortc would add a public STUN server."""
    servers = []
    for entry in ice_servers:
        urls = entry.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not urls:
            continue
        servers.append(RTCIceServer(urls=list(urls), username=entry.get("username"),
                                    credential=entry.get("credential")))
    return RTCConfiguration(iceServers=servers)


def parse_candidate(candidate: Mapping[str, Any]) -> RTCIceCandidate | None:
    """A trickled ``{"candidate", "sdpMid", "sdpMLineIndex"}`` -> aiortc's candidate.

    ``None`` for an end-of-candidates marker (an empty ``candidate``); a malformed one is
    an :class:`InvalidMessage`.
    """
    text = candidate.get("candidate")
    if not isinstance(text, str):
        raise InvalidMessage("a candidate needs a string 'candidate'")
    text = text.removeprefix("candidate:").strip()
    if not text:
        return None
    try:
        parsed = candidate_from_sdp(text)
    except Exception as exc:  # aiortc raises assorted errors on garbage
        raise InvalidMessage(f"bad ICE candidate: {exc}") from None
    mid, index = candidate.get("sdpMid"), candidate.get("sdpMLineIndex")
    if mid is not None and not isinstance(mid, str):
        raise InvalidMessage("'sdpMid' must be a string")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        raise InvalidMessage("'sdpMLineIndex' must be a non-negative integer")
    if mid is None and index is None:
        raise InvalidMessage("a candidate needs 'sdpMid' or 'sdpMLineIndex'")
    parsed.sdpMid, parsed.sdpMLineIndex = mid, index
    return parsed


async def add_remote_candidate(pc: Any, candidate: RTCIceCandidate | None) -> None:
    """Add a parsed remote candidate, or end-of-candidates for ``None`` (ICE can only fail,
    and a dead peer be cleaned up, once it knows no more candidates are coming)."""
    try:
        await pc.addIceCandidate(candidate)
    except ValueError as exc:
        if candidate is None:
            return  # end-of-candidates said twice: nothing more to do
        raise InvalidMessage(f"ICE candidate refused: {exc}") from None
