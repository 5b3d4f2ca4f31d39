"""voice-fx's DSP without the network: clean at any block size, exact latency, no drift,
and the input-audio plumbing (join_audio, the bounded queue, the runner's hand-over)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scope_relay.cloud.builtin_pipelines.voice_dsp import PitchShifter, RingModulator
from scope_relay.cloud.builtin_pipelines.voice_fx import VoiceFx
from scope_relay.cloud.pipelines import InputAudio, PipelineInputs, join_audio
from scope_relay.cloud.sessions.audio_input import AudioInputQueue

RATE = 48_000


def purity(x: np.ndarray, frequencies: list[float], width: float = 20.0) -> float:
    power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    wanted = np.zeros(len(freqs), bool)
    for f in frequencies:
        wanted |= np.abs(freqs - f) < width
    return float(10 * np.log10(power[wanted].sum() / power[~wanted].sum()))


def run_blocks(process, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, at, k = [], 0, 0
    while at < len(x):
        n = sizes[k % len(sizes)]
        out.append(process(torch.from_numpy(x[None, at:at + n])))
        at, k = at + n, k + 1
    return torch.cat(out, dim=1)[0].numpy()


def sine(freq: float, seconds: float) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


@pytest.mark.parametrize("semitones", [12.0, -12.0, 7.0, -3.5])
def test_pitch_shift_is_a_pure_tone_at_the_new_pitch_whatever_the_block_size(semitones):
    shifter = PitchShifter(1)
    y = run_blocks(lambda b: shifter.process(b, semitones), sine(440, 2.0), [960, 37, 2048, 480])
    steady = y[RATE // 2:]
    target = 440 * 2 ** (semitones / 12)
    assert purity(steady, [target]) > 60  # a click at any block boundary would ruin this
    assert np.sqrt(np.mean(steady ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert shifter.underruns == 0


def test_no_shift_is_the_input_delayed_by_the_latency():
    shifter = PitchShifter(1)
    x = sine(300, 1.0)
    y = run_blocks(lambda b: shifter.process(b, 0.0), x, [960])
    lag = shifter.latency
    assert np.abs(y[lag:] - x[:len(x) - lag]).max() < 1e-3


def test_latency_holds_while_the_pitch_moves():
    """Each stretch is read at the ratio it was made with: parameter changes never let the
    FIFO run dry or grow (no drift, however often the knob moves)."""
    shifter = PitchShifter(1)
    rng = np.random.default_rng(0)
    levels = []
    for _ in range(600):
        block = torch.from_numpy(rng.standard_normal((1, int(rng.integers(20, 3000)))).astype(np.float32))
        shifter.process(block, float(rng.choice([-12.0, 12.0, 0.0, rng.uniform(-12, 12)])))
        levels.append(shifter._fifo.shape[1])
    assert shifter.underruns == 0
    assert max(levels) <= shifter.latency


def test_ring_modulation_is_sum_and_difference_and_phase_continuous():
    ring = RingModulator(RATE)
    y = run_blocks(lambda b: ring.process(b, 250.0), sine(1000, 1.0), [960, 333])
    assert purity(y[4800:], [750, 1250]) > 60


def test_voice_fx_takes_input_audio_through_the_public_api():
    fx = VoiceFx()
    assert fx.accepts_audio and VoiceFx.describe()["accepts_audio"] is True
    assert fx(PipelineInputs(), fx.default_params()) is None  # no audio yet: nothing
    chunk = InputAudio(np.stack([sine(440, 0.02)] * 2), RATE, 0.0)
    out = fx(PipelineInputs([], [chunk]), {"pitch": 12.0, "ring": 0.0, "mix": 1.0})
    assert out is not None and out.sample_rate == RATE and tuple(out.audio.shape) == (1, 960)


def test_join_audio_fills_gaps_and_trims_overlaps():
    a = InputAudio(np.ones((2, 480), np.float32), RATE, 1.0)
    b = InputAudio(np.full((2, 480), 2, np.float32), RATE, 1.0 + 960 / RATE)  # 480 gap
    c = InputAudio(np.full((2, 480), 3, np.float32), RATE, 1.0 + 1200 / RATE)  # 240 overlap
    joined = join_audio([a, b, c])
    assert joined is not None and joined.media_time == 1.0
    assert joined.samples.shape == (2, 1680)
    assert (joined.samples[0, 480:960] == 0).all() and (joined.samples[0, 1440:] == 3).all()
    assert join_audio([]) is None


def test_input_audio_queue_is_bounded_and_counts_drops():
    queue = AudioInputQueue(max_seconds=0.1)
    for k in range(10):
        queue.put(InputAudio(np.zeros((2, 960), np.float32), RATE, k * 0.02))
    chunks = queue.take_all()
    assert len(chunks) == 5 and chunks[0].media_time == pytest.approx(0.1)
    assert queue.dropped_chunks == 5 and queue.dropped_samples == 5 * 960
    assert queue.take_all() == []
