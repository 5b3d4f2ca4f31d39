"""Shared fixtures, and a marker per tier: ``pytest -m unit`` runs the fast tier.

The folders are the tiers: ``unit`` (no sockets), ``integration`` (the real cloud app and
relay on 127.0.0.1), ``browser`` (Chromium), ``compat`` (a Scope-like client), ``turn``
(coturn). ``helpers/`` is a package the tests import as ``helpers.*``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Every test stays on 127.0.0.1: aioice otherwise uses the LAN address (rtc/ice.py; the
# loopback-only hop in docs/architecture.md, The three processes).
os.environ.setdefault("SCOPE_RELAY_ICE_LOOPBACK", "1")

from helpers.control import control_socket  # (after the environment is set)
from helpers.servers import cloud_server, relay_server

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "browser", "compat", "turn")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with the tier its folder names."""
    for item in items:
        try:
            tier = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:  # collected from outside tests/
            continue
        if tier in TIERS and item.get_closest_marker(tier) is None:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
async def stack():
    """The real cloud app and a relay connected to it: ``(cloud, relay)``, both ``Served``."""
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        yield cloud, relay


@pytest.fixture
async def control():
    """A control socket to a fresh cloud app, past its ``ready``."""
    async with cloud_server() as cloud, control_socket(cloud) as ws:
        yield ws
