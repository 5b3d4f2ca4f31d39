"""util/video_frames: the frames it builds are the ones PyAV's ``from_ndarray`` builds."""

from __future__ import annotations

import av
import numpy as np
import pytest

from scope_relay.util.video_frames import video_frame


@pytest.mark.parametrize("shape", [(360, 320), (363, 322), (1080, 1280), (3, 2), (360, 318),
                                   (240, 320, 3), (7, 321, 3), (1, 1, 3)])
def test_same_frame_as_from_ndarray(shape: tuple[int, ...]) -> None:
    picture = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    fmt = "yuv420p" if picture.ndim == 2 else "rgb24"
    want = av.VideoFrame.from_ndarray(picture, format=fmt)
    got = video_frame(picture)
    assert (got.width, got.height, got.format.name) == (want.width, want.height, fmt)
    assert np.array_equal(got.to_ndarray(), want.to_ndarray())
    assert np.array_equal(got.to_ndarray(), picture)  # (and it is the picture)


def test_a_non_contiguous_picture() -> None:
    picture = np.random.default_rng(3).integers(0, 256, (360, 640), dtype=np.uint8)[:, ::2]
    assert np.array_equal(video_frame(picture).to_ndarray(), picture)


@pytest.mark.parametrize("picture", [np.zeros((361, 320), np.uint8),  # rows not I420's
                                     np.zeros((360, 321), np.uint8),  # odd width
                                     np.zeros((360, 320), np.float32),
                                     np.zeros((240, 320, 4), np.uint8)])
def test_what_pyav_refuses_is_refused_as_pyav_does(picture: np.ndarray) -> None:
    with pytest.raises(ValueError):
        video_frame(picture)
