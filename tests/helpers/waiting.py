"""Waiting for a condition that something else (a server, a thread) makes true."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
                     interval: float = 0.05) -> None:
    """Poll ``predicate`` every ``interval`` s until it is true; ``TimeoutError`` after
    ``timeout`` s. (It polls in a task of its own: count it when counting tasks.)"""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(interval)
    await asyncio.wait_for(poll(), timeout)
