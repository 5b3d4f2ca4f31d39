"""What the TURN tests share: peers that can only use relayed candidates, and reading them."""

from __future__ import annotations

import aioice.ice
import pytest


def forbid_host_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """No usable local address on any peer in this process: only relayed candidates exist."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [])


def candidate_types(sdp: str) -> set[str]:
    """The ``typ`` of every candidate in ``sdp`` (host, srflx, relay)."""
    return {line.split(" typ ")[1].split()[0] for line in sdp.splitlines()
            if line.startswith("a=candidate:")}
