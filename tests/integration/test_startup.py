"""Start-up: from the page's offer to its first audio and video (issue 17).

Both senders send an RTCP sender report right after their first frames (rtc/peer.py), so
the relay places media on the cloud's clock at once instead of holding it ~1 s for
aiortc's first report. Measured on loopback: ~250 ms median to either track
(benchmarks/latency.py); the bounds leave room for a loaded 2-core box. Each trial records
where its time went on both hops (tests/helpers/startup_phases.py): a failure prints it.

Issue 27 (a CI run: 0.34 s, then ~1.05 s twice): the apps gave freed memory back (a full
``gc.collect()`` on the event loop) the moment their last session closed, so the next
trial's start waited behind it, for as long as the heap took to walk; now that waits
until the apps have been idle a while (util/memory.py).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx
from aioice import ice

from scope_relay.cloud.app import STATE_KEY
from scope_relay.local.server import RELAY_KEY
from scope_relay.util import memory

from helpers.peers import connected
from helpers.startup_phases import PhaseRecorder, line
from helpers.waiting import wait_until

TRIALS = 3
#: median over the trials, and the worst single one. Generous: a fresh-clone CI run once
#: took ~1.05 s in two trials of three (0.34 s in the first) where benchmarks/latency.py
#: reads ~0.25 s; the figure is the benchmark's, the test guards against seconds.
MEDIAN_BOUND = 1.5
WORST_BOUND = 2.0


async def first_media(cloud: Any, relay: Any, recorder: PhaseRecorder,
                      ) -> tuple[float, float, str]:
    """Seconds from starting the offer to the first audio frame and the first video frame,
    and where the time went (each peer's phases, ms)."""
    recorder.clear()
    began = time.monotonic()
    async with connected(relay.url, {"pipeline_ids": ["av-sync"]}) as peer:

        async def first(wait) -> float:
            await wait(1, timeout=10)
            return time.monotonic() - began

        audio, video = await asyncio.gather(first(peer.wait_audio_frames),
                                            first(peer.wait_video_frames))
        async with httpx.AsyncClient(base_url=relay.url) as http:
            stats = (await http.get("/api/v1/stats")).json()["sessions"][0]
        # on the cloud's sender reports from the start: nothing held, nothing timed by arrival
        assert stats["timing"] == {"video": "sender-report", "audio": "sender-report"}
        relay_session = relay.app[RELAY_KEY].sessions[peer.session_id]
        hop = relay_session.cloud
        cloud_sessions = list(cloud.app[STATE_KEY].sessions.values())
        peers = {"page": peer.pc, "relay (page side)": relay_session.pc,
                 "relay (cloud side)": hop.pc if hop else None,
                 "cloud": cloud_sessions[-1].pc if cloud_sessions else None}
        where = "; ".join([f"{name}: {line(recorder.phases(pc, began))}"
                           for name, pc in peers.items()]
                          + [f"loop stalls (at+ms): {recorder.loop_stalls(began)}"])
    return audio, video, where


async def test_first_audio_and_video_well_under_a_second(stack):
    cloud, relay = stack
    audio, video, phases = [], [], []
    with PhaseRecorder() as recorder:
        for _ in range(TRIALS):
            a, v, where = await first_media(cloud, relay, recorder)
            audio.append(a)
            video.append(v)
            phases.append(f"{a * 1000:.0f}/{v * 1000:.0f} ms: {where}")
            # one session at a time: the next trial starts on an idle relay
            await wait_until(lambda: not relay.app[RELAY_KEY].sessions, timeout=10)
    figures = f"audio {audio}, video {video}; phases (ms after the offer):\n" + "\n".join(phases)
    assert statistics.median(audio) < MEDIAN_BOUND, figures
    assert statistics.median(video) < MEDIAN_BOUND, figures
    assert max(audio) < WORST_BOUND and max(video) < WORST_BOUND, figures


async def test_a_start_right_after_a_close_never_waits_behind_the_memory_release(
        stack, monkeypatch):
    """Back-to-back sessions (a page reload; the trials above) run no release between
    them; once both apps are idle, each gives its memory back, after the idle delay."""
    cloud, relay = stack
    released: list[float] = []

    def release() -> bool:  # stands in for the full collection, which holds the loop
        released.append(time.monotonic())
        return True

    monkeypatch.setattr(memory, "release_freed_memory", release)
    with PhaseRecorder() as recorder:
        for _ in range(2):  # the second starts as soon as the relay has closed the first
            await first_media(cloud, relay, recorder)
            await wait_until(lambda: not relay.app[RELAY_KEY].sessions, timeout=10)
            assert not released, "memory released the moment the last session closed"
    closed = time.monotonic()
    await wait_until(lambda: not cloud.app[STATE_KEY].sessions, timeout=10)
    await wait_until(lambda: len(released) == 2, timeout=memory.RELEASE_AFTER_IDLE + 10)
    assert min(released) - closed > memory.RELEASE_AFTER_IDLE - 1.0, (released, closed)
    assert relay.app[RELAY_KEY].memory.releases == cloud.app[STATE_KEY].memory.releases == 1


async def test_the_phases_name_a_lost_dtls_flight(stack, monkeypatch):
    """The first ClientHello to arrive anywhere is dropped: the start waits out OpenSSL's
    1 s retransmit timer, and the phases say so (what a failure message must tell)."""
    cloud, relay = stack
    original = ice.StunProtocol.datagram_received
    dropped: list[bytes] = []

    def lossy(protocol: ice.StunProtocol, data: bytes, addr: tuple) -> None:
        hello = len(data) > 13 and data[0] == 22 and data[13] == 1  # handshake: ClientHello
        if hello and not dropped:
            dropped.append(data)
            return
        original(protocol, data, addr)

    monkeypatch.setattr(ice.StunProtocol, "datagram_received", lossy)
    with PhaseRecorder() as recorder:
        audio, video, where = await first_media(cloud, relay, recorder)
    assert dropped
    assert min(audio, video) > 1.0, where  # the retransmit timer's second
    assert where.count("dtls_timeout 1") == 1, where
