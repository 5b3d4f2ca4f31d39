"""The pipeline contract: capability flags, parameter schema, and one call per chunk."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from scope_relay.protocol.parameters import coerce_parameter
from scope_relay.protocol.tempo import Beat, TempoGrid


@dataclass(frozen=True)
class ParamSpec:
    """One live-adjustable parameter; ``kind`` is number, integer, boolean, string or prompts.

    ``label``: what the page shows for it (``"Root (Hz)"``); without one the page derives a
    title from the parameter's name (``root_hz`` -> "Root Hz"), which cannot spell units.
    """

    kind: str
    default: Any
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if self.label is not None and (not isinstance(self.label, str) or not self.label.strip()):
            raise ValueError(f"ParamSpec label must be a non-empty string, got {self.label!r}")

    def coerce(self, name: str, value: Any) -> Any:
        """Validate ``value``; raises ``ValueError`` with a message naming ``name``."""
        return coerce_parameter(name, value, self.schema())

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "default": self.default,
                               "description": self.description}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.label is not None:
            out["label"] = self.label
        return out


#: ``progress(phase, fraction)``: what a loading pipeline reports (see :meth:`Pipeline.load`)
LoadProgress = Callable[[str, float | None], None]


@dataclass
class InputFrame:
    """A camera frame handed to a pipeline: RGB ``(H, W, 3)`` uint8 and its media time."""

    rgb: np.ndarray
    media_time: float


@dataclass
class InputAudio:
    """A chunk of input audio (the microphone) handed to a pipeline: float32 ``(channels,
    samples)`` in [-1, 1] at ``sample_rate`` (48 kHz), its first sample at ``media_time``
    on the same media clock as camera frames and output."""

    samples: np.ndarray
    sample_rate: int
    media_time: float

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / self.sample_rate


#: ``(name, media_time, default) -> value``: a parameter at a media time (PipelineInputs)
ParameterAt = Callable[[str, float, Any], Any]


@dataclass(frozen=True)
class MediaTempo(TempoGrid):
    """A beat grid on a session's media clock (the audio's: media time ``t`` is *heard* on
    ``beat_at(t)``) that also knows ``video_lead``: how many seconds before its sound the
    picture of a media time is shown at the page (docs/tempo.md)."""

    video_lead: float = 0.0

    def for_video(self) -> TempoGrid:
        """The grid pictures are drawn on: a frame shown ``video_lead`` before its sound
        falls on the beat of that earlier moment, so the grid moves later by the lead."""
        return TempoGrid(self.bpm, self.origin + self.video_lead, self.beats_per_bar,
                         self.playing)


class PipelineInputs(list[InputFrame]):
    """What a call receives as ``inputs``: the camera frames since the last call (it *is*
    that list, so camera pipelines need not know about audio; empty, and so false, for a
    generator), and in :attr:`audio` the input audio chunks since the last call, in order
    (empty unless the pipeline ``accepts_audio``).

    :attr:`media_time`: where the chunk this call makes starts on the session's media
    clock (its first frame's time unless the pipeline sets ``video_times``).
    :attr:`tempo`: the relay's beat grid on that same media clock (``None`` while the relay
    has no tempo source), so ``inputs.tempo.beat_at(t)`` is the beat the audience hears
    media time ``t`` on: what a call draws for beat *n* plays on beat *n* (docs/tempo.md).
    :meth:`parameter_at`: a parameter's value at any media time, following its beat
    modulation frame by frame within a chunk (``params`` holds the chunk start's values).
    :attr:`video_tempo` / :meth:`video_beat_at`: the beat the audience *sees* media time
    ``t`` on: the browser shows a media time's picture before its sound is heard (its lip
    sync does not count the audio output's latency), so flashes are drawn on this grid and
    clicks on :attr:`tempo`.
    """

    def __init__(self, frames: Sequence[InputFrame] = (), audio: Sequence[InputAudio] = (), *,
                 media_time: float = 0.0, tempo: TempoGrid | None = None,
                 parameters: ParameterAt | None = None):
        super().__init__(frames)
        self.audio: list[InputAudio] = list(audio)
        self.media_time = media_time
        self.tempo = tempo
        #: set by the runner: ``(name, media_time, default) -> value``
        self.parameters = parameters

    def beat_at(self, media_time: float) -> Beat | None:
        """The beat heard at ``media_time``, or ``None`` without a tempo."""
        return None if self.tempo is None else self.tempo.beat_at(media_time)

    @property
    def video_tempo(self) -> TempoGrid | None:
        """The grid for pictures: :attr:`tempo` moved later by the video's lead (the same
        grid when the relay reports no lead)."""
        if isinstance(self.tempo, MediaTempo):
            return self.tempo.for_video()
        return self.tempo

    def video_beat_at(self, media_time: float) -> Beat | None:
        """The beat on screen when media time ``media_time``'s frame is shown, or ``None``
        without a tempo."""
        grid = self.video_tempo
        return None if grid is None else grid.beat_at(media_time)

    def parameter_at(self, name: str, media_time: float, default: Any = None) -> Any:
        """Parameter ``name``'s value for media time ``media_time``: moved by its modulation
        for the beat heard then (docs/tempo.md, Modulation), else the value set. ``default``
        when there is no such parameter, or outside the runner (a pipeline called by hand)."""
        if self.parameters is None:
            return default
        return self.parameters(name, media_time, default)


def join_audio(chunks: Sequence[InputAudio]) -> InputAudio | None:
    """Chunks end to end as one (a gap between them is filled with silence, an overlap
    trimmed), or ``None`` for no chunks: most effects want one block per call."""
    if not chunks:
        return None
    rate = chunks[0].sample_rate
    start = chunks[0].media_time
    parts: list[np.ndarray] = []
    at = 0  # samples written so far, counted from ``start``
    for chunk in chunks:
        offset = round((chunk.media_time - start) * rate)
        data = chunk.samples
        if offset > at:
            parts.append(np.zeros((data.shape[0], offset - at), np.float32))
            at = offset
        elif offset < at:
            data = data[:, at - offset:]
        parts.append(data)
        at += data.shape[1]
    return InputAudio(np.concatenate(parts, axis=1), rate, start)


@dataclass
class PipelineOutput:
    """One chunk of output. Tensors may be torch or numpy.

    ``video``: ``(T, H, W, 3)``, uint8 or float in [0, 1]. ``audio``: ``(channels, samples)``
    or ``(samples,)``, float in [-1, 1] or integer PCM. ``video_times``: media seconds per
    frame when the pipeline knows them (e.g. from its input); otherwise the runner stamps
    frames from the chunk start at ``fps``. A chunk's audio starts with its first frame.

    ``video_format="yuv420p"``: ``video`` is ``(T, H * 3 // 2, W)`` uint8, each frame's Y
    plane then its U and V planes (I420, BT.601 limited range), H and W even. It is what
    the VP8 encoder takes, so the frame is sent with no colour conversion at all (an RGB
    frame costs one: 0.3 ms at 320x240, 2.7 ms at 1280x720). A pipeline that has its
    picture on a GPU can convert there. A stage feeding another stage gets RGB back.
    """

    video: Any = None
    audio: Any = None
    sample_rate: int | None = None
    fps: float | None = None
    video_times: Sequence[float] | None = None
    video_format: str = "rgb24"


class Pipeline:
    """Base class. Subclasses set the class attributes and implement :meth:`__call__`.

    A pipeline is called repeatedly from the runner's worker thread (under
    ``torch.inference_mode()``), never on the event loop; returning ``None`` means "nothing yet".
    """

    pipeline_id: ClassVar[str]
    name: ClassVar[str]
    produces_video: ClassVar[bool] = False
    produces_audio: ClassVar[bool] = False
    accepts_video: ClassVar[bool] = False
    #: called with the microphone's audio in ``inputs.audio`` (see :class:`PipelineInputs`)
    accepts_audio: ClassVar[bool] = False
    fps: ClassVar[float | None] = None
    sample_rate: ClassVar[int | None] = None
    params: ClassVar[Mapping[str, ParamSpec]] = {}

    def __init__(self, device: str = "cpu"):
        self.device = device

    def load(self, progress: LoadProgress) -> None:
        """Optional: slow set-up (weights, kernels), called once per instance in a worker
        thread after construction and before the first call. Call ``progress(phase,
        fraction)`` (fraction 0..1, or None when unknown) as it goes: the status API shows
        it while the chain loads. Each session gets its own instance, so keep what is
        expensive to load in a class- or module-level cache."""

    def __call__(self, inputs: Sequence[InputFrame] | None,
                 params: Mapping[str, Any]) -> PipelineOutput | Mapping[str, Any] | None:
        """One chunk: a :class:`PipelineOutput`, a Scope-style dict (``{"video": (T, H, W, 3),
        "audio": (channels, samples), "audio_sample_rate": int}``, torch or numpy), or
        ``None`` for "nothing yet". Raising ends generation for the session
        (``PIPELINE_FAILED`` reaches its client)."""
        raise NotImplementedError

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "id": cls.pipeline_id,
            "name": getattr(cls, "name", None) or cls.pipeline_id,
            "produces_video": cls.produces_video,
            "produces_audio": cls.produces_audio,
            "accepts_video": cls.accepts_video,
            "accepts_audio": cls.accepts_audio,
            "fps": cls.fps,
            "sample_rate": cls.sample_rate,
            "params": {k: spec.schema() for k, spec in cls.params.items()},
        }

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {k: spec.default for k, spec in cls.params.items()}
