"""A relay frozen for a moment (the worst overload: its process gets no CPU at all) plays
current audio again within 2 s once it runs again, skipping what it missed instead of
playing a backlog (issue 17; ``MAX_OUTPUT_LAG`` in local/playout/frame_processor.py).

The cloud app and the relay are separate processes, as a user runs them, so the relay
alone can be frozen (SIGSTOP) and thawed (SIGCONT); the receiver is an aiortc peer here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass

import httpx
import numpy as np
from aiortc.mediastreams import MediaStreamError

from scope_relay.local.playout.frame_processor import MAX_OUTPUT_LAG
from scope_relay.media.audio import frame_to_s16

from helpers.peers import BrowserPeer
from helpers.processes import cloud_process, relay_process
from helpers.waiting import wait_until

#: how long the relay gets no CPU at all: the forced overload
HOLD = 1.5
#: the goal (issue 17): audio back within 2 s of the load dropping
RECOVERY_BOUND = 2.0
#: test-tone at volume 0.5 has an RMS near 11 600; silence (an underrun) is 0
LOUD_RMS = 3000.0
#: "steady": this many loud frames (20 ms each) in a row, contiguous on the media timeline
STEADY_FRAMES = 5
FRAME = 960  # samples per 20 ms frame at 48 kHz, as the relay sends them
RATE = 48_000
#: frames from before the freeze that may reach the receiver after it: what the relay may
#: still send (it skips once more than MAX_OUTPUT_LAG behind) and the 4 packets aiortc's
#: audio jitter buffer holds back (its prefetch) at the receiver
STALE_FRAMES = round(MAX_OUTPUT_LAG * RATE / FRAME) + 4
#: one continuous tone for the whole test (a beep of 60 s every 60 s)
PARAMS = {"pipeline_ids": ["test-tone"], "interval": 60.0, "duration": 60.0}


@dataclass
class Heard:
    arrival: float  # time.monotonic() when the frame came out of the receiver
    pts: int  # RTP time (48 kHz): the relay's media timeline
    rms: float


class TimedPeer(BrowserPeer):
    """The page's stand-in, recv-only audio, noting when each audio frame arrived."""

    def __init__(self) -> None:
        super().__init__(video=False)
        self.heard: list[Heard] = []

    async def _consume(self, track) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                samples = frame_to_s16(frame).astype(np.float64)
                self.heard.append(Heard(time.monotonic(), int(frame.pts),
                                        float(np.sqrt(np.mean(samples ** 2)))))


def pts_step(a: Heard, b: Heard) -> int:
    return (b.pts - a.pts) % 2**32  # RTP time wraps


def jump_at(heard: list[Heard], start: int) -> int | None:
    """The index of the first frame at or after ``start`` that does not follow the one
    before it on the media timeline."""
    for k in range(max(start, 1), len(heard)):
        if pts_step(heard[k - 1], heard[k]) != FRAME:
            return k
    return None


def steady_from(heard: list[Heard], start: int) -> int | None:
    """The index of the first frame at or after ``start`` that begins ``STEADY_FRAMES``
    loud frames, each following the one before on the media timeline (no jump)."""
    for i in range(start, len(heard) - STEADY_FRAMES + 1):
        run = heard[i:i + STEADY_FRAMES]
        if all(h.rms > LOUD_RMS for h in run) and all(
                pts_step(a, b) == FRAME for a, b in zip(run, run[1:], strict=False)):
            return i
    return None


async def session_stats(http: httpx.AsyncClient) -> dict:
    (session,) = (await http.get("/api/v1/stats")).json()["sessions"]
    return session


async def test_audio_returns_within_2_s_of_a_frozen_relay_running_again():
    async with cloud_process("--log-level", "WARNING") as cloud, relay_process(cloud) as relay, \
            httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
        peer = TimedPeer()
        try:
            response = await peer.connect_relay(relay.url, PARAMS)
            assert response.status_code == 200, response.text
            await wait_until(lambda: steady_from(peer.heard, 0) is not None, timeout=30)
            before = await session_stats(http)
            last_before = len(peer.heard) - 1

            os.kill(relay.proc.pid, signal.SIGSTOP)
            try:
                # The overload itself, not a wait for anything: the relay gets no CPU for
                # HOLD s while the cloud keeps sending (its packets queue in the kernel).
                await asyncio.sleep(HOLD)
            finally:
                os.kill(relay.proc.pid, signal.SIGCONT)
            thawed = time.monotonic()
            during = [h for h in peer.heard[last_before + 1:] if h.arrival < thawed]
            after = next((i for i, h in enumerate(peer.heard) if h.arrival >= thawed),
                         len(peer.heard))

            def recovery() -> tuple[int | None, int | None]:
                """(where the media timeline jumped, where steady audio began after that)"""
                j = jump_at(peer.heard, after)
                return j, None if j is None else steady_from(peer.heard, j)

            give_up = thawed + RECOVERY_BOUND + 5  # (then fail, showing what came instead)
            await wait_until(lambda: recovery()[1] is not None or time.monotonic() > give_up,
                             timeout=RECOVERY_BOUND + 10)
            j, i = recovery()
            shown = peer.heard[after:after + 60 if i is None else i + STEADY_FRAMES]
            print("\nafter SIGCONT (ms, rms, pts step): " + ", ".join(
                f"({(h.arrival - thawed) * 1000:.0f}, {h.rms:.0f}, {pts_step(prev, h)})"
                for prev, h in zip(peer.heard[after - 1:], shown, strict=False)))
            assert j is not None, "the media timeline never jumped: a backlog played late"
            assert i is not None, "no steady audio after the skip"
            recovered = peer.heard[i].arrival - thawed
            stale = j - after  # frames from before the freeze that came after it
            jump = pts_step(peer.heard[j - 1], peer.heard[j]) / RATE
            print(f"audio steady again {recovered * 1000:.0f} ms after SIGCONT "
                  f"({len(during)} frames during the {HOLD} s freeze, then {stale} from "
                  f"before it; media time jumped {jump:.3f} s)")

            stats = await session_stats(http)
            figures = ("audio_skips", "audio_skipped_ms", "audio_late_ms", "audio_underruns",
                       "audio_overflow_ms", "delay_raises", "extra_delay_ms",
                       "cloud_reconnects", "media_timeouts")
            print("relay, change over the freeze: " + ", ".join(
                f"{k} {stats[k] - before[k]:+g}" for k in figures))

            assert recovered < RECOVERY_BOUND
            # skipped forward to what is due, not a backlog played late: the output skipped
            # about the frozen time, the receiver's media time jumped as far, and only a few
            # frames from before the freeze came after it (a backlog would be ~HOLD / 20 ms)
            assert stats["audio_skips"] > before["audio_skips"], stats
            skipped = stats["audio_skipped_ms"] - before["audio_skipped_ms"]
            assert skipped > (HOLD - 0.5) * 1000, skipped
            assert HOLD - 0.5 < jump < HOLD + 1, jump
            assert stale <= STALE_FRAMES, stale
            # and the session rode it out: still there, connected, its cloud hop not rebuilt
            assert peer.session_id and stats["session"] == peer.session_id[:8]
            assert stats["connection"] == "connected" and not stats["pipeline_failed"]
            assert stats["cloud_reconnects"] == before["cloud_reconnects"]
            assert stats["media_timeouts"] == before["media_timeouts"]
            assert relay.proc.returncode is None and cloud.proc.returncode is None
        finally:
            await peer.close()
