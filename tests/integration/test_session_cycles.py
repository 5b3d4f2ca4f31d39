"""Many open/close cycles leave nothing behind: sessions, runner threads, tasks."""

from __future__ import annotations

import asyncio
import collections
import threading

import httpx

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.server import RELAY_KEY

from helpers.peers import connected
from helpers.waiting import wait_until


def runner_threads() -> int:
    return sum(t.name == "pipeline-runner" and t.is_alive() for t in threading.enumerate())


async def test_open_close_cycles_release_everything(stack):
    cloud, relay = stack
    cloud_state, local = cloud.app[STATE_KEY], relay.app[RELAY_KEY]
    tasks_after_first = None
    for cycle in range(6):
        pipeline = ("av-sync", "test-tone")[cycle % 2]
        async with connected(relay.url, {"pipeline_ids": [pipeline]},
                             video=True, audio=True) as peer:
            await peer.wait_audio_frames(5)
            async with httpx.AsyncClient(base_url=relay.url) as http:
                response = await http.delete(f"/api/v1/webrtc/offer/{peer.session_id}")
                assert response.status_code == 200
        await wait_until(lambda: not local.sessions and not cloud_state.sessions)
        await wait_until(lambda: runner_threads() == 0)
        if tasks_after_first is None:  # long-lived tasks (control socket, logs) exist now
            tasks_after_first = len(asyncio.all_tasks())
    # nothing accumulates per cycle
    try:
        # (+1: wait_until's own polling task)
        await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_after_first + 1)
    except TimeoutError:
        names = collections.Counter(t.get_coro().__qualname__ for t in asyncio.all_tasks())
        raise AssertionError(
            f"{tasks_after_first} tasks after one cycle, now: {names}") from None
