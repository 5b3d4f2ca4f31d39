"""Release frames on time: aiortc's senders send whatever ``recv()`` returns at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def sleep_until(clock: Callable[[], float], deadline: float) -> None:
    """Wait until ``clock()`` reaches ``deadline``."""
    delay = deadline - clock()
    if delay > 0:
        await asyncio.sleep(delay)
