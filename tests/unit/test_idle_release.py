"""util/memory.py's IdleRelease: freed memory goes back once the app has been idle a
while, never the moment the last session closes (a start right after waited behind it)."""

from __future__ import annotations

import pytest

from scope_relay.util import memory

from helpers.waiting import wait_until


@pytest.fixture
def released(monkeypatch) -> list[bool]:
    """The releases that ran (the real one collects the whole heap: not needed here)."""
    calls: list[bool] = []

    def release() -> bool:
        calls.append(True)
        return True

    monkeypatch.setattr(memory, "release_freed_memory", release)
    monkeypatch.setattr(memory, "RELEASE_AFTER_IDLE", 0.05)
    return calls


async def test_released_once_after_the_idle_delay(released):
    idle = memory.IdleRelease()
    idle.idle()
    assert idle.pending and not released  # not at once: after the delay
    await wait_until(lambda: released, timeout=5)
    assert idle.releases == 1 and not idle.pending


async def test_a_session_starting_calls_the_pending_release_off(released):
    idle = memory.IdleRelease()
    idle.idle()
    idle.busy()
    assert not idle.pending
    idle.idle()  # idle again: one release, counted from now
    idle.idle()
    await wait_until(lambda: released, timeout=5)
    assert idle.releases == 1 and not idle.pending


async def test_close_leaves_nothing_scheduled(released):
    idle = memory.IdleRelease()
    idle.idle()
    idle.close()
    assert not idle.pending and idle.releases == 0
