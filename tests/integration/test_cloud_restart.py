"""kill -9 of the cloud app and a restart at the same address: media is back at the
receiver within seconds of the new process being ready, not after WebRTC's consent timeout
(the relay rebuilds its cloud hop as soon as its control socket is lost)."""

from __future__ import annotations

import time

import numpy as np

from scope_relay.local.server import RELAY_KEY

from helpers.peers import av_offsets, connected
from helpers.processes import cloud_process
from helpers.servers import relay_server
from helpers.waiting import wait_until

#: the goal (issue 15) is 3 s from "ready" to audio; the test allows a loaded CI machine more
RECOVERY_BOUND = 6.0
#: the goal is 15 ms (click vs flash through the relay's sender reports, as a browser
#: lip-syncs); measured well inside it, the bound leaves a loaded machine some room
LIP_SYNC_BOUND = 0.02


def audible(frames: list[np.ndarray]) -> bool:
    return any(np.abs(f).max() > 1000 for f in frames)


async def test_media_returns_soon_after_a_killed_cloud_app_restarts():
    params = {"pipeline_ids": ["test-tone"], "interval": 0.2, "duration": 0.1}
    async with cloud_process() as first:
        port = first.ws_url.rsplit(":", 1)[1].split("/")[0]
        async with relay_server(first) as relay, connected(relay.url, params, video=False) as peer:
            await wait_until(lambda: audible(peer.received.audio[-20:]), timeout=20)
            (session,) = relay.app[RELAY_KEY].sessions.values()
            first.proc.kill()  # kill -9: no close frame, no DTLS close, the process is gone
            assert await first.wait(timeout=10) == -9
            await wait_until(lambda: session.cloud.failed.is_set(), timeout=5)  # at once
            async with cloud_process("--port", port) as second:  # back at the same address
                ready_at, mark = time.monotonic(), len(peer.received.audio)
                await wait_until(lambda: audible(peer.received.audio[mark:]),
                                 timeout=RECOVERY_BOUND + 10)
                recovered = time.monotonic() - ready_at
                print(f"audio back {recovered:.2f} s after the restarted cloud app was ready")
                assert recovered < RECOVERY_BOUND
                assert session.cloud_reconnects == 1 and second.proc.returncode is None


async def test_lip_sync_after_a_killed_cloud_app_restarts():
    """After the rebuilt hop, flashes and clicks line up at the receiver as before (the
    relay re-places the new cloud session's media on its clock: no lasting offset)."""
    async with cloud_process() as first:
        port = first.ws_url.rsplit(":", 1)[1].split("/")[0]
        async with relay_server(first) as relay, \
                connected(relay.url, {"pipeline_ids": ["av-sync"]}) as peer:
            await peer.wait_video_frames(60, timeout=30)
            (session,) = relay.app[RELAY_KEY].sessions.values()
            first.proc.kill()
            assert await first.wait(timeout=10) == -9
            await wait_until(lambda: session.cloud.failed.is_set(), timeout=5)
            async with cloud_process("--port", port) as second:
                video_mark = len(peer.received.video_brightness)
                audio_mark = len(peer.received.audio)
                # four flashes after the restart (one a second), the first second skipped
                await wait_until(lambda: len(peer.received.video_brightness) > video_mark + 24 * 6,
                                 timeout=RECOVERY_BOUND + 20)
                offsets = av_offsets(peer, video_mark + 24, audio_mark + 50)
                print(f"A/V after the restart: {np.round(np.array(offsets) * 1000, 1)} ms")
                assert len(offsets) >= 3, offsets
                assert abs(float(np.median(offsets))) < LIP_SYNC_BOUND, offsets
                assert session.cloud_reconnects == 1 and second.proc.returncode is None
