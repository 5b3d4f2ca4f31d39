"""The recording timeline: live alignment kept, gaps filled, never backwards, wall time kept."""

from __future__ import annotations

import pytest

from scope_relay.local.recording.timeline import CFR_GAP, SPARSE_STEP, RecordingTimeline

V, A = 90_000, 48_000


def test_both_tracks_share_one_origin_and_keep_their_offset():
    t = RecordingTimeline()
    assert t.place_audio(10 * A, 960).silence == 0  # the first frame is the file's 0
    held, at = t.place_video(10 * V + 900) or ([], -1.0)  # 10 ms later, shown from 0
    assert (held, at) == ([], 0.0)
    assert t.place_audio(10 * A + 960, 960).silence == 0  # contiguous audio: no gap
    held, at = t.place_video(10 * V + 900 + 3750) or ([], -1.0)
    assert at == pytest.approx(0.01 + 1 / 24)  # on the audio's timeline, not re-based


def test_a_pause_in_the_picture_is_a_held_frame_at_the_frame_rate():
    t = RecordingTimeline(audio=False)
    for k in range(10):
        t.place_video(round(k * V / 24))
    held, at = t.place_video(round(20 * V / 24)) or ([], -1.0)
    assert len(held) == 10 and at == pytest.approx(20 / 24)
    assert held == pytest.approx([k / 24 for k in range(10, 20)])


def test_a_long_pause_is_held_sparsely_after_a_while():
    t = RecordingTimeline(audio=False)
    t.place_video(0)
    t.place_video(V // 24)
    held, _ = t.place_video(40 * V) or ([], -1.0)
    dense = int(CFR_GAP * 24)
    assert len(held) < dense + (40 - CFR_GAP) / SPARSE_STEP + 2
    assert held[-1] - held[-2] == pytest.approx(SPARSE_STEP)


def test_missing_audio_is_silence_and_overlap_is_trimmed():
    t = RecordingTimeline()
    t.place_audio(0, 960)
    assert t.place_audio(1920, 960).silence == 960  # one frame lost
    p = t.place_audio(2400, 960)  # half overlaps what was written
    assert (p.silence, p.skip) == (0, 480)
    assert t.audio_written == 3360


def test_video_never_goes_backwards():
    t = RecordingTimeline(audio=False)
    t.place_video(0)
    t.place_video(3750)
    assert t.place_video(3000) is None and t.behind_frames == 1
    assert (t.place_video(7500) or ([], -1.0))[1] == pytest.approx(7500 / V)


def test_a_rise_of_the_output_delay_moves_both_tracks_later_together():
    t = RecordingTimeline()
    t.place_audio(0, 960, delay=0.1)
    t.place_video(0, delay=0.1)
    t.place_video(3750, delay=0.15)  # the delay rose while this frame was out: no step yet
    p = t.place_audio(960, 960, delay=0.15)  # audio makes the step, past what was placed
    assert p.silence == 0  # the step starts after the video placed at 41.7 ms
    assert t.place_audio(1920, 960, delay=0.15).silence == 0
    assert t.place_audio(2880, 960, delay=0.15).silence == round(0.05 * A)
    held, at = t.place_video(7500, delay=0.15) or ([], -1.0)
    assert at == pytest.approx(7500 / V + 0.05)


def test_a_fall_of_the_output_delay_drops_the_overlap_to_keep_wall_time():
    t = RecordingTimeline()
    for k in range(5):
        t.place_audio(k * 960, 960, delay=0.2)
    p = t.place_audio(5 * 960, 960, delay=0.18)
    assert p.skip == round(0.02 * A) and t.audio_written == 5 * 960


def test_a_jump_to_a_new_timeline_continues_from_the_end():
    t = RecordingTimeline()
    t.place_audio(0, 960)
    p = t.place_audio(3600 * A, 960)
    assert (p.silence, p.skip) == (0, 0) and t.timeline_jumps == 1
