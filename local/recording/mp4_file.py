"""One recording's file: H.264 + AAC in MP4, written with PyAV by the recorder's worker thread.

MP4 with H.264 and AAC because every video editor and player opens it (Premiere, Final Cut,
Resolve, QuickTime, browsers); WebM with VP8/VP9 and Opus is the web's format but several
editors do not import it. Encoder choices keep the relay's CPU free for live playback:
x264 ``veryfast`` with ``zerolatency`` (no lookahead, no B-frames: every frame is encoded
as it comes, so nothing piles up inside the encoder) on one thread. ``+faststart`` moves
the index to the front when the file is closed, so a browser plays the download at once.

The file's streams must all exist before the first packet is written, and a video stream
needs its size, so audio that comes before the first video frame is held (as samples,
bounded by the recorder) until the picture's size is known.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from scope_relay.media.encoding import add_aac_stream, add_h264_stream
from scope_relay.protocol.media import CHANNELS, SAMPLE_RATE, VIDEO_CLOCK_RATE

CONTENT_TYPE = "video/mp4"
SUFFIX = ".mp4"
VIDEO_OPTIONS = {"preset": "veryfast", "tune": "zerolatency", "crf": "20"}
AUDIO_BITRATE = 192_000
AAC_FRAME = 1024  # samples per AAC-LC frame
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_TIME_BASE = Fraction(1, SAMPLE_RATE)


def _even(n: int) -> int:
    """H.264 in 4:2:0 needs even sides."""
    return max(2, n - n % 2)


class RecordingFile:
    """An MP4 being written; not thread-safe (one worker thread owns it)."""

    def __init__(self, path: Path, *, video: bool, audio: bool):
        self.path = path
        self.has_video = video
        self.has_audio = audio
        self._container: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._audio: av.AudioStream | None = None
        self.size: tuple[int, int] | None = None  # (width, height) once known
        self._held = np.zeros((CHANNELS, 0), np.int16)  # audio not yet encoded
        self._audio_pts = 0
        self._last_frame: av.VideoFrame | None = None  # our own copy, for held frames
        self.video_frames = 0
        self.audio_samples = 0

    # --- opening ---------------------------------------------------------------------
    def _open(self, size: tuple[int, int] | None) -> av.container.OutputContainer:
        container = av.open(str(self.path), "w", format="mp4",
                            options={"movflags": "+faststart"})
        if size is not None:
            self._video = add_h264_stream(container, size, VIDEO_OPTIONS, thread_count=1)
            self.size = size
        if self.has_audio:
            self._audio = add_aac_stream(container, AUDIO_BITRATE)
        self._container = container
        return container

    @property
    def opened(self) -> bool:
        return self._container is not None

    def open_without_video(self) -> None:
        """Give up waiting for a picture: the file is audio only from here on."""
        if self._container is None:
            self.has_video = False
            self._open(None)
            self._encode_audio(final=False)

    # --- video -------------------------------------------------------------------------
    def write_video(self, frame: av.VideoFrame, at: float) -> bool:
        """Encode ``frame`` (not changed: it is also being sent) at file time ``at`` (s).
        False when the file has no video stream (it gave up waiting for one)."""
        if self._container is None:
            self._open((_even(frame.width), _even(frame.height)))
            self._encode_audio(final=False)
        if self._video is None:
            return False
        width, height = self.size or (0, 0)
        own = frame.reformat(width=width, height=height, format="yuv420p")
        if own is frame:  # same size and format: PyAV hands back the shared frame
            own = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
        self._last_frame = own
        self._encode_video(own, at)
        return True

    def repeat_video(self, at: float) -> None:
        """The last frame again at ``at``: a held picture through a gap."""
        if self._last_frame is not None:
            self._encode_video(self._last_frame, at)

    def _encode_video(self, frame: av.VideoFrame, at: float) -> None:
        assert self._video is not None and self._container is not None
        frame.pts = round(at * VIDEO_CLOCK_RATE)
        frame.time_base = VIDEO_TIME_BASE
        self._container.mux(self._video.encode(frame))
        self.video_frames += 1

    # --- audio -------------------------------------------------------------------------
    def write_audio(self, samples: np.ndarray) -> None:
        """int16 ``(2, n)`` at 48 kHz, continuing the audio already written."""
        if samples.shape[1] == 0:
            return
        self._held = np.concatenate((self._held, samples), axis=1)
        self.audio_samples += samples.shape[1]
        if self._container is None and not self.has_video:
            self._open(None)
        if self._container is not None:
            self._encode_audio(final=False)

    def write_silence(self, samples: int) -> None:
        if samples > 0:
            self.write_audio(np.zeros((CHANNELS, samples), np.int16))

    @property
    def held_audio_seconds(self) -> float:
        """Audio waiting for the file to open (for the first video frame)."""
        return self._held.shape[1] / SAMPLE_RATE if self._container is None else 0.0

    def _encode_audio(self, *, final: bool) -> None:
        if self._audio is None or self._container is None:
            return
        held = self._held
        whole = held.shape[1] - held.shape[1] % AAC_FRAME
        end = held.shape[1] if final else whole
        # one float conversion for the lot, then AAC-sized planar frames
        planar = held[:, :end].astype(np.float32) / 32768.0
        for start in range(0, end, AAC_FRAME):
            chunk = np.ascontiguousarray(planar[:, start:start + AAC_FRAME])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = self._audio_pts
            frame.time_base = AUDIO_TIME_BASE
            self._audio_pts += chunk.shape[1]
            self._container.mux(self._audio.encode(frame))
        self._held = held[:, end:]

    # --- closing -----------------------------------------------------------------------
    def close(self) -> None:
        """Flush both encoders and write the index. A file with no media is not made."""
        if self._container is None:
            if not self._held.shape[1]:
                return
            self.open_without_video()
        container = self._container
        assert container is not None
        self._encode_audio(final=True)
        if self._video is not None:
            container.mux(self._video.encode(None))
        if self._audio is not None:
            container.mux(self._audio.encode(None))
        container.close()

    def abort(self) -> None:
        """Stop without finishing the file (the relay is shutting down; it is deleted)."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # an unfinished file: it is removed anyway
                pass

    @property
    def streams(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        if self._video is not None and self.size is not None:
            out.append({"kind": "video", "codec": "h264", "width": self.size[0],
                        "height": self.size[1], "frames": self.video_frames})
        if self._audio is not None:
            out.append({"kind": "audio", "codec": "aac", "sampleRate": SAMPLE_RATE,
                        "channels": CHANNELS})
        return out
