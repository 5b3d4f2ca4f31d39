"""A relay that cannot keep up skips forward instead of going silent (issue 17).

The FrameProcessor is driven on a fake clock the way the relay drives it: the cloud's
audio arrives every 20 ms, and the output track asks for the next cursor before every
frame and takes a frame once it is due. Overload is the output track running at half
speed (an encoder starved of CPU), or the whole loop blocked.
"""

from __future__ import annotations

import numpy as np

from scope_relay.local.playout.frame_processor import MAX_OUTPUT_LAG, FrameProcessor
from scope_relay.protocol.media import FRAME_SAMPLES, OPUS_LOOKAHEAD_SECONDS, SAMPLE_RATE

STEP = FRAME_SAMPLES / SAMPLE_RATE  # 20 ms
TRANSIT = 0.03
LOUD = np.full((2, FRAME_SAMPLES), 10_000, np.int16)


class Relay:
    """The processor, its cloud feed and its output track, on one fake clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.processor = FrameProcessor(clock=lambda: self.now)
        self.next_cloud = self.now - TRANSIT  # cloud time of the next frame to arrive
        self.played: list[tuple[float, float, bool]] = []  # (when, lateness, loud)
        self._credit = 0.0

    def arrive(self) -> None:
        """Every frame the cloud has sent by now (a burst after a blocked loop)."""
        while self.next_cloud <= self.now - TRANSIT + 1e-9:
            self.processor.add_audio(LOUD, self.next_cloud, self.now)
            self.next_cloud += STEP

    async def play(self, speed: float) -> None:
        """The output track: frames due by now, at most ``speed`` frames per 20 ms."""
        self._credit = min(self._credit + speed, 1e9 if speed > 1 else 1.0)
        p = self.processor
        while self._credit >= 1:
            cursor = await p.first_audio()
            release = p.release_time(cursor / SAMPLE_RATE) - OPUS_LOOKAHEAD_SECONDS
            if release > self.now + 1e-9:
                return
            samples = p.take_audio(FRAME_SAMPLES)
            self.played.append((self.now, self.now - release, bool(np.abs(samples).max())))
            self._credit -= 1

    async def run(self, seconds: float, speed: float = 1e9, blocked: bool = False) -> None:
        for _ in range(round(seconds / STEP)):
            self.now += STEP
            if not blocked:
                self.arrive()
                await self.play(speed)


def since(relay: Relay, when: float) -> list[tuple[float, float, bool]]:
    return [p for p in relay.played if p[0] > when]


async def test_a_slow_output_track_keeps_playing_and_recovers_at_once():
    relay = Relay()
    await relay.run(1.0)
    assert all(loud for _, _, loud in relay.played)
    overload = relay.now
    await relay.run(5.0, speed=0.5)  # half speed: 2.5 s behind by the end, more than the ring
    during = since(relay, overload + MAX_OUTPUT_LAG + 0.1)
    assert during and all(loud for _, _, loud in during)  # gaps, never silence
    assert all(late <= MAX_OUTPUT_LAG + STEP for _, late, _ in during)
    load_drops = relay.now
    await relay.run(2.0)
    after = since(relay, load_drops)
    assert after[0][0] <= load_drops + STEP and all(loud for _, _, loud in after)
    assert all(late <= MAX_OUTPUT_LAG + STEP for _, late, _ in after)  # no catch-up burst
    stats = relay.processor.stats()
    assert stats["audio_skips"] >= 1 and stats["audio_skipped_ms"] > 1000, stats
    assert stats["audio_overflow_ms"] == 0, stats


async def test_a_blocked_loop_skips_what_it_missed():
    relay = Relay()
    await relay.run(1.0)
    blocked_at = relay.now
    await relay.run(1.5, blocked=True)  # nothing runs; the cloud's packets wait in the socket
    await relay.run(2.0)
    after = since(relay, blocked_at)
    assert after[0][2] and all(loud for _, _, loud in after)
    in_the_first_instant = [p for p in after if p[0] == after[0][0]]
    assert len(in_the_first_instant) <= 2  # no burst of stale frames
    assert all(late <= MAX_OUTPUT_LAG + STEP for _, late, _ in after)
    stats = relay.processor.stats()
    assert stats["audio_skips"] == 1 and 1300 <= stats["audio_skipped_ms"] <= 1600, stats
