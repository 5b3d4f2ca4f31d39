"""Many open/close cycles leave nothing behind: sessions, runner threads, tasks."""

from __future__ import annotations

import asyncio
import threading

import httpx

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.server import RELAY_KEY

from helpers.peers import BrowserPeer
from helpers.servers import cloud_server, relay_server


async def wait_until(predicate, timeout: float = 10.0) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.05)
    await asyncio.wait_for(poll(), timeout)


def runner_threads() -> int:
    return sum(t.name == "pipeline-runner" and t.is_alive() for t in threading.enumerate())


async def test_open_close_cycles_release_everything():
    async with cloud_server() as cloud, relay_server(cloud) as relay:
        cloud_state, local = cloud.app[STATE_KEY], relay.app[RELAY_KEY]
        tasks_after_first = None
        for cycle in range(6):
            peer = BrowserPeer(video=True, audio=True)
            pipeline = ("av-sync", "test-tone")[cycle % 2]
            response = await peer.connect_relay(relay.url, {"pipeline_ids": [pipeline]})
            assert response.status_code == 200
            await peer.wait_audio_frames(5)
            async with httpx.AsyncClient(base_url=relay.url) as http:
                assert (await http.delete(f"/api/v1/webrtc/offer/{peer.session_id}")).status_code == 200
            await peer.close()
            await wait_until(lambda: not local.sessions and not cloud_state.sessions)
            await wait_until(lambda: runner_threads() == 0)
            if tasks_after_first is None:  # long-lived tasks (control socket, logs) exist now
                tasks_after_first = len(asyncio.all_tasks())
        # nothing accumulates per cycle
        try:
            # (+1: wait_until's own polling task)
            await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_after_first + 1)
        except TimeoutError:
            import collections
            names = collections.Counter(t.get_coro().__qualname__ for t in asyncio.all_tasks())
            raise AssertionError(f"{tasks_after_first} tasks after one cycle, now: {names}")
