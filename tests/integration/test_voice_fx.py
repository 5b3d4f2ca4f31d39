"""The microphone into a pipeline and back: a test peer sends a sine as its microphone,
``voice-fx`` processes it in the cloud, and the peer hears the result through cloud and
relay (both WebRTC hops, Opus both ways), at the frequencies the parameters imply and
clean (no clicks at chunk boundaries: a click is broadband and would ruin the purity)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from scope_relay.local.server import RELAY_KEY
from scope_relay.testing import dominant_frequency

from helpers.peers import BrowserPeer, ToneMicrophone, connected, tone_purity

RATE = 48_000
TONE = 440.0
WINDOW_FRAMES = 50  # 1 s of 20 ms frames: many pipeline chunks and both hops' packets
MIN_PURITY_DB = 35.0


async def window_until(peer: BrowserPeer, check: Callable[[np.ndarray], bool],
                       timeout: float = 20.0) -> np.ndarray:
    """The newest second of received (left-channel) audio once ``check`` accepts it: the
    start (first sender report, buffers filling, the previous parameters draining) is
    waited out, never asserted on."""
    deadline = time.monotonic() + timeout
    while True:
        await peer.wait_audio_frames(WINDOW_FRAMES // 5, timeout=max(0.1, deadline - time.monotonic()))
        frames = peer.received.audio[-WINDOW_FRAMES:]
        if len(frames) == WINDOW_FRAMES:
            window = np.concatenate(frames, axis=1)[0].astype(np.float64)
            if check(window):
                return window
        if time.monotonic() > deadline:
            raise TimeoutError("the expected tone never came through")


def is_tone(expected: list[float], purity: float = MIN_PURITY_DB) -> Callable[[np.ndarray], bool]:
    """Audible, its strongest component at one of ``expected`` (within 1%), and already
    clean: the start settles first (the path filling, the previous parameters draining,
    the cloud's clock giving itself slack after early jitter)."""
    def check(window: np.ndarray) -> bool:
        if np.sqrt(np.mean(window ** 2)) < 500:  # silence while the path fills
            return False
        peak = dominant_frequency(window, RATE)
        return (any(abs(peak - f) < 0.01 * f for f in expected)
                and tone_purity(window, RATE, expected) > purity)
    return check


def figures(window: np.ndarray, expected: list[float]) -> str:
    return (f"peak {dominant_frequency(window, RATE):.1f} Hz, "
            f"purity {tone_purity(window, RATE, expected):.1f} dB")


async def test_voice_fx_shifts_and_ring_modulates_the_microphone(stack):
    """Each setting must give a whole clean second (50 pipeline chunks, so 50 chunk
    boundaries, and both hops' packets) within the timeout. A click at chunk boundaries
    would be in every second; what this box's load does to the transport now and then
    (a late packet is an underrun, heard as a gap) is waited out, as a listener would."""
    _, relay = stack
    params = {"pipeline_ids": ["voice-fx"], "pitch": 12.0, "ring": 0.0, "mix": 1.0}
    async with connected(relay.url, params, video=False, audio=True,
                         microphone=ToneMicrophone(TONE)) as peer:
        # an octave up: twice the frequency
        octave = await window_until(peer, is_tone([2 * TONE]), timeout=30)
        print("octave:", figures(octave, [2 * TONE]))

        # live: no shift, a 250 Hz ring modulator: the sum and the difference, equally loud
        await peer.send_parameters({"pitch": 0.0, "ring": 250.0})
        ring = [TONE - 250.0, TONE + 250.0]
        modulated = await window_until(peer, is_tone(ring), timeout=30)
        low, high = (tone_purity(modulated, RATE, [f]) for f in ring)
        print("ring:", figures(modulated, ring), f"(each side {low:.1f} / {high:.1f} dB)")
        assert abs(low - high) < 6.0  # each about half the power: about 0 dB vs the rest

        # a fifth down, half dry: both the microphone and the shifted voice
        await peer.send_parameters({"pitch": -7.0, "ring": 0.0, "mix": 0.5})
        fifth = TONE * 2 ** (-7 / 12)
        mixed = await window_until(
            peer, lambda w: is_tone([TONE, fifth])(w) and tone_purity(w, RATE, [fifth]) > -6,
            timeout=30)
        print("mix:", figures(mixed, [TONE, fifth]))

        (session,) = relay.app[RELAY_KEY].sessions.values()
        assert session.microphone is not None and session.microphone.forwarded > 0
