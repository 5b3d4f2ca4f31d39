"""The browser tier's shared fixture: one headless Chromium for each test module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from helpers.chromium import chromium_context


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """A fresh profile per module (a module may define its own ``browser`` instead)."""
    async with chromium_context() as context:
        yield context
