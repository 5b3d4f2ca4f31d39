"""A disk that fills mid-recording, as the recording's file writer meets it."""

from __future__ import annotations

import errno
import os
import time

import av
import pytest

from scope_relay.local.recording import mp4_file


def fail_video_writes_from(monkeypatch: pytest.MonkeyPatch, frame: int) -> list[float]:
    """From its ``frame``-th video frame on, the file writer raises ENOSPC; the returned
    list gets the time (monotonic) of each raise."""
    raised: list[float] = []
    original = mp4_file.RecordingFile._encode_video

    def encode_video(self: mp4_file.RecordingFile, video: av.VideoFrame, at: float) -> None:
        if self.video_frames >= frame:
            raised.append(time.monotonic())
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(self, video, at)

    monkeypatch.setattr(mp4_file.RecordingFile, "_encode_video", encode_video)
    return raised
