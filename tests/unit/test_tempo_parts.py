"""The beat's pieces on their own: the grid and its message, the manual and MIDI clock
sources, and the cloud's side (the grid on the media clock, changes held for a boundary)."""

from __future__ import annotations

import json
import math

import mido
import numpy as np
import pytest

from scope_relay.cloud.builtin_pipelines.beat_flash import BeatFlash
from scope_relay.cloud.hosting.session_tempo import SessionTempo
from scope_relay.cloud.pipelines.base import PipelineInputs
from scope_relay.local.tempo.manager import TempoManager
from scope_relay.local.tempo.midi_clock import MidiClock
from scope_relay.local.tempo.source import ManualSource
from scope_relay.protocol.tempo import TempoGrid, next_boundary, parse_tempo, quantum_beats


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_grid_beats_bars_and_message_round_trip():
    grid = TempoGrid(120.0, 10.0, 4)
    beat = grid.beat_at(13.25)  # 3.25 s at 2 beats a second
    assert beat.beat == pytest.approx(6.5) and beat.phase == pytest.approx(0.5)
    assert (beat.bar, beat.beat_in_bar) == (1, 2)
    assert grid.time_of(8) == pytest.approx(14.0)
    assert parse_tempo(grid.to_message()) == grid
    assert grid.shifted(-4.0).beat_at(9.25).beat == pytest.approx(6.5)
    for bad in ({"bpm": 0, "beat_time_origin": 1}, {"bpm": 120}, "120",
                {"bpm": 120, "beat_time_origin": float("nan")},
                {"bpm": 120, "beat_time_origin": 1, "beats_per_bar": 0}):
        with pytest.raises(ValueError):
            parse_tempo(bad)
    assert [quantum_beats(m, 3) for m in ("off", "beat", "bar", "2bars", "4bars")] == [
        None, 1, 3, 6, 12]
    assert next_boundary(4.0, 4) == 4.0 and next_boundary(4.01, 4) == 8.0


def test_manual_bpm_change_keeps_the_beat_and_taps_set_it():
    clock = Clock()
    source = ManualSource(120.0, clock)
    clock.now += 1.25  # beat 2.5
    source.set_bpm(90.0)
    assert source.grid().beat_at(clock.now).beat == pytest.approx(2.5)
    clock.now += 2.0  # 90 BPM: 3 more beats
    assert source.grid().beat_at(clock.now).beat == pytest.approx(5.5)
    for _ in range(5):
        source.tap()
        clock.now += 0.4  # 150 BPM
    grid = source.grid()
    assert grid.bpm == pytest.approx(150.0)
    assert grid.beat_at(clock.now - 0.4).phase == pytest.approx(0.0, abs=1e-9)  # last tap


def test_midi_clock_smooths_jitter_and_follows_start_stop():
    clock = MidiClock()
    rng = np.random.default_rng(1)
    tick = 60.0 / (128.0 * 24)
    t0 = 50.0
    clock.feed(mido.Message("start").type, t0 - 0.01)
    for k in range(96):  # four beats with 1 ms of jitter on every tick
        clock.feed(mido.Message("clock").type, t0 + k * tick + rng.uniform(-0.001, 0.001))
    grid = clock.grid()
    assert grid is not None and grid.bpm == pytest.approx(128.0, abs=0.3)
    assert abs(grid.origin - t0) < 0.002  # the first tick after start is beat 0
    clock.feed("stop", t0 + 2.0)
    assert not clock.grid().playing
    clock.feed("continue", t0 + 2.1)
    assert clock.grid().playing
    fresh = MidiClock()
    for k in range(3):
        fresh.feed("clock", k * tick)
    assert fresh.grid() is None  # too few ticks to say


class FakeBuffer:
    """A ``MediaBuffer``'s clock: media m is released at monotonic epoch + m + delay."""

    def __init__(self, clock: Clock, epoch: float):
        self.clock, self.epoch, self.stall, self.playout_delay = clock, epoch, 0, 0.1


def test_cloud_grid_on_the_media_clock_and_quantized_changes(monkeypatch):
    mono = Clock(500.0)
    wall = 2000.0  # wall clock = monotonic + 1500
    monkeypatch.setattr("scope_relay.cloud.hosting.session_tempo.time.time",
                        lambda: mono.now + 1500.0)
    buffer = FakeBuffer(mono, epoch=400.0)  # media 0 released at monotonic 400.1
    tempo = SessionTempo()
    # beat 0 heard for what is released at wall 1900.1, i.e. media 0
    tempo.receive({"bpm": 120.0, "beat_time_origin": wall - 99.9, "quantize": "bar",
                   "listen_delay": 0.0})
    grid = tempo.media_grid(buffer, 0.0)
    assert grid is not None and grid.beat_at(0.0).beat == pytest.approx(0.0, abs=1e-6)
    # media now is 99.9 s (beat 199.8): a change waits for bar 200 (media 100.0)
    assert tempo.hold({"x": 1, "paused": False}, buffer) == {"paused": False}
    frame = 1 / 30
    assert tempo.due(grid, 99.9, frame) == {}
    assert tempo.due(grid, 100.0 - frame / 4, frame) == {"x": 1}
    assert tempo.counts.quantized_updates == 1 and tempo.counts.quantized_late == 0
    tempo.receive({"bpm": -1, "beat_time_origin": 0})
    assert tempo.counts.tempo_refused == 1 and tempo.media_grid(buffer, 0.0) == grid
    tempo.receive(None)
    assert tempo.media_grid(buffer, 0.0) is None and tempo.hold({"x": 2}, buffer) == {"x": 2}


def test_video_grid_is_the_audio_grid_later_by_the_video_lead(monkeypatch):
    """The picture of media time m is shown ``video_lead`` before its sound is heard, so
    the beat on screen for m is the beat heard at m - lead: a flash for beat n is drawn
    ``lead`` later in media time than its click."""
    mono = Clock(500.0)
    monkeypatch.setattr("scope_relay.cloud.hosting.session_tempo.time.time",
                        lambda: mono.now + 1500.0)
    buffer = FakeBuffer(mono, epoch=400.0)
    tempo = SessionTempo()
    tempo.receive({"bpm": 120.0, "beat_time_origin": 1900.1, "video_lead": 0.03})
    grid = tempo.media_grid(buffer, 0.0)
    assert grid is not None and grid.video_lead == pytest.approx(0.03)
    inputs = PipelineInputs(media_time=0.0, tempo=grid)
    assert inputs.beat_at(1.0).beat == pytest.approx(2.0)
    assert inputs.video_beat_at(1.03).beat == pytest.approx(2.0)
    assert inputs.video_tempo.time_of(2) - grid.time_of(2) == pytest.approx(0.03)
    # no lead reported (an older relay): the video's grid is the audio's
    tempo.receive({"bpm": 120.0, "beat_time_origin": 1900.1})
    plain = tempo.media_grid(buffer, 0.0)
    assert PipelineInputs(tempo=plain).video_beat_at(1.0).beat == pytest.approx(2.0)
    # a plain TempoGrid (a pipeline called by hand, scope_relay.testing) has no lead
    assert PipelineInputs(tempo=TempoGrid(120.0, 0.0)).video_beat_at(1.0).beat == 2.0
    assert PipelineInputs().video_beat_at(1.0) is None
    for bad in (True, "0.03", 1.5, -2):
        tempo.receive({"bpm": 120.0, "beat_time_origin": 1900.1, "video_lead": bad})
    assert tempo.counts.tempo_refused == 4 and tempo.video_lead == 0.0


@pytest.mark.parametrize("fps", [24, 30, 60])
def test_beat_flash_lights_the_frame_nearest_its_seen_beat(fps):
    """At 24, 30 and 60 fps, each flash starts on the frame nearest its beat on the video's
    grid (within half a frame), and the clicks stay on the audio's."""
    from scope_relay.cloud.pipelines.base import MediaTempo

    grid = MediaTempo(100.0, 0.013, 4, True, video_lead=0.035)
    pipe = BeatFlash()
    params = {**pipe.default_params(), "fps": fps}
    frames: list[tuple[float, float]] = []
    t = 0.0
    while t < 4.0:
        out = pipe(PipelineInputs(media_time=t, tempo=grid), params)
        assert out.fps == fps and out.audio.shape[1] == round(len(out.video) * 48000 / fps)
        frames += [(t + k / fps, float(f[0, 0])) for k, f in enumerate(out.video)]
        t += len(out.video) / fps
    assert len(out.video[0][0]) == (320 if fps <= 30 else 160)
    starts = [m for (m, y), (_, prev) in zip(frames[1:], frames[:-1], strict=True)
              if y > 128 >= prev]
    end = frames[-1][0] + 0.5 / fps  # (the last frame shows a beat up to half a frame on)
    seen = [grid.time_of(b) + 0.035 for b in range(10) if grid.time_of(b) + 0.035 < end]
    assert len(starts) == len(seen)
    assert max(abs(a - b) for a, b in zip(starts, seen, strict=True)) <= 0.5 / fps + 1e-9


def test_beat_flash_clicks_on_the_grid_across_chunks():
    grid = TempoGrid(100.0, 0.013, 4)  # a beat every 0.6 s, beat 0 at 13 ms
    pipe = BeatFlash()
    audio = []
    for k in range(16):  # 4 s in quarter-second chunks
        out = pipe(PipelineInputs(media_time=k * 0.25, tempo=grid), pipe.default_params())
        audio.append(out.audio[0])
    left = np.concatenate(audio)
    loud = np.abs(left) > 0.05
    onsets = np.flatnonzero(loud[1:] & ~np.convolve(loud, np.ones(240), "full")[:len(loud) - 1]
                            .astype(bool)) + 1
    expected = [round(grid.time_of(b) * 48000) for b in range(7)]
    assert len(onsets) == len(expected)
    # a threshold crossing: a few samples into the sine and its 0.5 ms ramp
    assert np.max(np.abs(onsets - np.array(expected))) <= 8


async def test_manager_sends_each_session_its_own_grid():
    class Peer:
        def __init__(self):
            self.sent: list[dict] = []

        def send_parameters(self, message: str) -> None:
            self.sent.append(json.loads(message))

    class Processor:
        offset, playout_delay, extra_delay, loss_room, queue_room = 0.05, 0.07, 0.0, 0.0, 0.0

    class Session:
        def __init__(self):
            self.processor, self.cloud = Processor(), Peer()

    session = Session()
    manager = TempoManager(lambda: [session])
    await manager.update({"source": "manual", "bpm": 100, "quantize": "beat"})
    (first,) = session.cloud.sent
    grid = manager.grid()
    assert first["tempo"]["bpm"] == 100 and first["tempo"]["quantize"] == "beat"
    assert first["tempo"]["beat_time_origin"] == pytest.approx(grid.origin - 0.12)
    manager.push()  # nothing changed: nothing sent
    assert len(session.cloud.sent) == 1
    session.processor.extra_delay = 0.03  # the relay's path grew: the grid moves with it
    manager.push()
    assert session.cloud.sent[-1]["tempo"]["beat_time_origin"] == pytest.approx(grid.origin - 0.15)
    session.processor.loss_room = 0.02  # room for losses: part of the release time too
    manager.push()
    assert session.cloud.sent[-1]["tempo"]["beat_time_origin"] == pytest.approx(grid.origin - 0.17)
    await manager.update({"page_latency": 0.04})  # the page's own output and jitter buffer
    manager.push()
    assert session.cloud.sent[-1]["tempo"]["beat_time_origin"] == pytest.approx(grid.origin - 0.21)
    assert session.cloud.sent[-1]["tempo"]["video_lead"] == 0.0
    await manager.update({"page_video_lead": 0.03})  # the picture leads the sound
    assert session.cloud.sent[-1]["tempo"]["video_lead"] == pytest.approx(0.03)
    assert session.cloud.sent[-1]["tempo"]["beat_time_origin"] == pytest.approx(grid.origin - 0.21)
    with pytest.raises(ValueError, match="page_video_lead"):
        await manager.update({"page_video_lead": 2})
    session.cloud = Peer()  # a rebuilt cloud hop: the new one is sent the grid at once
    manager.push()
    assert session.cloud.sent[-1]["tempo"]["bpm"] == 100
    with pytest.raises(ValueError):
        await manager.update({"quantize": "3bars"})
    with pytest.raises(ValueError):
        await manager.update({"source": "midi", "bpm": 5})
    assert manager.snapshot()["source"] == "manual" and manager.quantize == "beat"
    await manager.update({"source": "off"})
    assert session.cloud.sent[-1] == {"tempo": None}
    await manager.close()


def test_modulation_waves_bounds_and_refusals():
    from scope_relay.cloud.hosting.modulation import modulated, parse_modulations

    mods = parse_modulations({"a": {"shape": "sine", "rate": 4, "depth": 1.0},
                              "b": {"shape": "square", "rate": 1, "depth": 10, "max": 12},
                              "c": {"shape": "decay", "rate": 2, "depth": 4},
                              "d": {"shape": "saw", "rate": 1, "depth": 1},
                              "e": {"shape": "triangle", "rate": 1, "depth": 1}})
    grid = TempoGrid(60.0, 0.0)  # a beat a second: media time = beats
    bounds = {"a": (-0.5, None, False), "b": (0, 100, True), "c": (None, None, False),
              "d": (None, None, False), "e": (None, None, False)}
    params = {"a": 0.0, "b": 5, "c": 1.0, "d": 0.0, "e": 0.0, "text": "x"}
    at = {t: modulated(params, mods, grid, t, bounds) for t in (0.0, 1.0, 2.5, 3.0, 0.25)}
    assert at[1.0]["a"] == pytest.approx(1.0) and at[3.0]["a"] == pytest.approx(-0.5)  # min
    assert at[0.0]["b"] == 12 and at[2.5]["b"] == 0  # square, clipped by its own max / spec
    assert at[0.0]["c"] == pytest.approx(5.0)  # decay: the whole depth on the first beat
    assert at[3.0]["c"] == pytest.approx(1.0 + 4 * math.exp(-2.3))  # half a cycle on
    assert at[0.25]["d"] == pytest.approx(0.5) and at[0.25]["e"] == pytest.approx(1.0)
    assert at[0.0]["text"] == "x" and params["a"] == 0.0  # the base is left alone
    assert modulated(params, mods, None, 1.0, bounds) == params  # no beat: no modulation
    for bad in ({"a": {"shape": "noise"}}, {"a": {"rate": 0}}, {"a": {"depth": "big"}},
                {"a": 1}, [1]):
        with pytest.raises(ValueError):
            parse_modulations(bad)
    assert parse_modulations(None) == {}


async def test_page_source_places_the_pages_beat_on_arrival():
    from scope_relay.local.tempo.source import PageSource

    clock = Clock(3000.0)
    manager = TempoManager(lambda: [], clock=clock, make_source=lambda name, bpm: (
        PageSource(bpm, clock) if name == "page" else ManualSource(bpm, clock)))
    await manager.update({"source": "page", "bpm": 120, "beat": 7.25})
    state = manager.snapshot()
    assert state["source"] == "page" and state["beat"] == pytest.approx(7.25)
    assert state["beat_in_bar"] == 3 and state["phase"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="with bpm"):
        await manager.update({"beat": 1.0})
    await manager.update({"source": "manual"})
    with pytest.raises(ValueError, match="page source"):
        await manager.update({"bpm": 100, "beat": 1.0})
    await manager.close()


async def test_midi_port_is_checked_and_a_port_that_cannot_open_changes_nothing():
    opened: list[str | None] = []

    class Refusing:
        name = "midi"

        def __init__(self, port):
            self.port = port

        async def start(self):
            if self.port == "gone":
                raise OSError("no such port")
            opened.append(self.port)

        async def close(self):
            return None

        def grid(self):
            return None

        peers = 0

    manager = TempoManager(lambda: [], make_source=lambda name, bpm: (
        Refusing(manager.midi_port) if name == "midi" else ManualSource(bpm)))
    await manager.update({"source": "midi", "midi_port": "Clock In"})
    assert opened == ["Clock In"] and manager.snapshot()["midi_port"] == "Clock In"
    with pytest.raises(ValueError, match="could not start"):
        await manager.update({"midi_port": "gone"})
    assert manager.midi_port == "Clock In" and manager.source.port == "Clock In"
    with pytest.raises(ValueError, match="midi_port"):
        await manager.update({"midi_port": 7})
    await manager.close()
