"""The hd-test picture (cloud/builtin_pipelines/hd_test.py): the sizes asked for, the same
frame from the same number, a number that survives the codec, and motion between frames."""

from __future__ import annotations

import numpy as np
import pytest

from scope_relay.cloud.builtin_pipelines.hd_test import HdTest, frame_size, hd_test_frame, luma
from scope_relay.testing import frame_number


@pytest.mark.parametrize(("height", "size"), [(720, (1280, 720)), (1080, (1920, 1080)),
                                              (360, (640, 360)), (100, (284, 160))])
def test_frame_size_is_16_by_9_and_fits_i420(height, size):
    assert frame_size(height) == size
    width, lines = size
    assert hd_test_frame(0, width, lines).shape == (lines * 3 // 2, width)


def test_frames_are_remade_exactly_from_their_number_and_move():
    a, b = hd_test_frame(41, 1280, 720), hd_test_frame(41, 1280, 720)
    assert np.array_equal(a, b)
    assert frame_number(luma(a)) == 41
    moved = np.abs(luma(hd_test_frame(42, 1280, 720)).astype(int) - luma(a))[200:, 200:]
    assert 0.5 < moved.mean() < 20  # smooth motion: every frame differs, a little


def test_pipeline_makes_i420_chunks_at_its_frame_rate_counting_on():
    pipeline = HdTest("cpu")
    params = {"height": 360, "frame_rate": 20.0}
    first, second = pipeline(None, params), pipeline(None, params)
    assert first.video_format == "yuv420p" and first.fps == 20.0
    assert tuple(first.video.shape) == (2, 540, 640)
    assert [frame_number(luma(f.numpy())) for f in (*first.video, *second.video)] == [0, 1, 2, 3]
