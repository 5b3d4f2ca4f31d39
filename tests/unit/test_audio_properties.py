"""Property-based checks of the audio path over formats, layouts, sizes and bad values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from scope_relay.media.audio import array_to_frame, as_channels_first, float_to_s16, frame_to_array
from scope_relay.media.resample import AudioFramer, StreamResampler
from scope_relay.media.ring import AudioRing
from scope_relay.protocol.errors import InvalidAudio

FORMATS = ["s16", "s16p", "s32", "s32p", "flt", "fltp", "dbl", "dblp"]
TOLERANCE = {"s16": 1 / 32768, "s32": 1e-7, "flt": 0.0, "dbl": 0.0}
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

samples = (st.floats(-1.0, 0.999969482421875, width=32)
           | st.sampled_from([np.nan, np.inf, -np.inf, 4.0, -4.0]))


@st.composite
def audio(draw, max_channels: int = 8, max_samples: int = 1500, min_samples: int = 1):
    channels = draw(st.integers(1, max_channels))
    n = draw(st.integers(min_samples, max_samples))
    return draw(hnp.arrays(np.float32, (channels, n), elements=samples))


@SETTINGS
@given(x=audio(min_samples=0), fmt=st.sampled_from(FORMATS))
def test_any_format_round_trips(x, fmt):
    if x.shape[1] == 0:  # an empty frame is refused with a clear error
        with pytest.raises(InvalidAudio, match="at least one sample"):
            array_to_frame(x, fmt)
        return
    frame = array_to_frame(x, fmt)
    assert frame.format.name == fmt and frame.samples == x.shape[1]
    y = frame_to_array(frame)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isfinite(y).all()  # NaN/inf became 0
    expected = np.where(np.isfinite(x), x, 0)
    base = fmt.rstrip("p") if fmt != "dblp" else "dbl"
    if base in ("s16", "s32"):
        expected = np.clip(expected, -1.0, 1.0 - 1 / 32768 if base == "s16" else 1.0)
    np.testing.assert_allclose(y, expected, atol=TOLERANCE[base] + 1e-7)


@SETTINGS
@given(x=audio())
def test_float_to_s16_never_wraps(x):
    out, clipped = float_to_s16(x)
    finite = np.where(np.isfinite(x), x, 0)
    assert clipped == int(np.count_nonzero((finite * 32768 > 32767) | (finite * 32768 < -32768)))
    # sign is kept: a value beyond full scale ends at the rail of its own sign
    assert (out[finite >= 1.0] == 32767).all() and (out[finite <= -1.0] == -32768).all()


@SETTINGS
@given(chunks=st.lists(st.tuples(audio(max_channels=8, max_samples=3000, min_samples=0),
                                 st.sampled_from([16000, 22050, 24000, 44100, 48000])),
                       min_size=1, max_size=8))
def test_framer_takes_any_chunk_sequence(chunks):
    framer = AudioFramer()
    for x, rate in chunks:
        framer.push(x, rate)
        while (frame := framer.pop_frame()) is not None:
            assert frame.shape == (2, 960)
            assert np.isfinite(frame).all()
            assert np.abs(frame).max() < 8.0  # soxr may ring past the input's peak, never explode


def accepted_shape(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The shape ``as_channels_first`` must give, or None where it must refuse: 1-D is mono;
    2-D is channels-first with 1-8 channels and no fewer samples than channels (or none)."""
    if len(shape) == 1:
        return (1, shape[0])
    channels, n = shape
    if 1 <= channels <= 8 and (n == 0 or n >= channels):
        return (channels, n)
    return None


@SETTINGS
@given(shape=st.tuples(st.integers(0, 12), st.integers(0, 12)) | st.tuples(st.integers(0, 3000)),
       dtype=st.sampled_from([np.float32, np.float64, np.int16, np.int32, np.uint8]))
def test_pipeline_audio_is_accepted_or_refused_clearly(shape, dtype):
    data = np.zeros(shape, dtype)
    expected = accepted_shape(shape)
    if expected is None:
        with pytest.raises(InvalidAudio) as refused:
            as_channels_first(data)
        assert str(refused.value)
        if len(shape) == 2 and shape[0] > 8 and 1 <= shape[1] <= 8:  # (samples, channels)
            assert "(channels, samples)" in str(refused.value)
        return
    out = as_channels_first(data)
    assert out.shape == expected and out.dtype == np.float32
    # zero is silence, except unsigned, whose silence is mid-scale (zero is full negative)
    np.testing.assert_array_equal(out, -1.0 if dtype == np.uint8 else 0.0)


@pytest.mark.parametrize("rate", [0, -48000, 44100.5, None])
def test_bad_rates_are_refused(rate):
    with pytest.raises(ValueError, match="sample rate"):
        StreamResampler().process(np.zeros((1, 10), np.float32), rate)


@SETTINGS
@given(writes=st.lists(st.integers(0, 700), min_size=1, max_size=40),
       reads=st.lists(st.integers(0, 700), min_size=1, max_size=40))
def test_ring_is_a_fifo_with_counted_drops(writes, reads):
    ring = AudioRing(2, capacity=1000)
    model: list[float] = []
    counter = 0
    dropped = 0
    for w, r in zip(writes, reads, strict=False):  # as many rounds as the shorter list
        block = np.arange(counter, counter + w, dtype=np.float32)
        counter += w
        dropped += ring.write(np.stack([block, -block]))
        model.extend(block.tolist())
        dropped_model = max(0, len(model) - 1000)
        del model[:dropped_model]
        r = min(r, len(ring))
        out = ring.read(r)
        np.testing.assert_array_equal(out[0], model[:r])
        np.testing.assert_array_equal(out[1], [-v for v in model[:r]])
        del model[:r]
    assert len(ring) == len(model)
    assert ring.dropped_samples == dropped
