"""Ownership of background work: every task has an owner that cancels it on close, and a
close runs exactly once however many callers (and cancellations) race it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


class OwnedTasks:
    """The background tasks of one object, cancelled and awaited together on close."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel_all(self) -> None:
        """Cancel every task but the caller's own, and wait until they have finished."""
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)


class RunOnce:
    """An async action (a close) run at most once. Every caller waits for that one run, and
    a caller being cancelled does not interrupt it: half-closed peer connections leak."""

    def __init__(self, action: Callable[[], Awaitable[None]]):
        self._action = action
        self._task: asyncio.Task | None = None

    def start(self) -> asyncio.Task:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self._task

    async def _run(self) -> None:
        await self._action()

    async def __call__(self) -> None:
        await asyncio.shield(self.start())
