"""What a pipeline call may return, normalised in one place.

A :class:`PipelineOutput`, ``None`` ("nothing yet"), or a Daydream Scope style dict, so a
Scope pipeline's ``__call__`` ports with its body unchanged::

    {"video": (T, H, W, 3) in [0, 1] or uint8,
     "audio": (channels, samples) or (samples,),
     "audio_sample_rate": int}

Arrays may be torch tensors or numpy arrays; keys other than these are ignored (Scope
pipelines return more, e.g. for their own UI). The arrays themselves are checked where
they are converted (the runner's ``video_to_numpy``, ``media.audio.as_channels_first``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from scope_relay.cloud.pipelines.base import PipelineOutput

#: the keys of a Scope-style dict that mean something here
VIDEO_KEY, AUDIO_KEY, RATE_KEY = "video", "audio", "audio_sample_rate"


def pipeline_name(pipeline: object) -> str:
    """The id a pipeline is known by, for messages (its class name if it has none)."""
    pipeline_id = getattr(pipeline, "pipeline_id", None)
    return pipeline_id if isinstance(pipeline_id, str) else type(pipeline).__name__


def _sample_rate(value: Any, pipeline: object) -> int | None:
    """A positive whole number of samples a second (any int or integral float type)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"pipeline {pipeline_name(pipeline)!r} returned {RATE_KEY}="
                        f"{value!r}: expected an int")
    rate = float(value)
    if not math.isfinite(rate) or rate <= 0 or rate != int(rate):
        raise ValueError(f"pipeline {pipeline_name(pipeline)!r} returned {RATE_KEY}={value!r}: "
                         "expected a positive whole number of samples a second")
    return int(rate)


def as_pipeline_output(result: Any, pipeline: object) -> PipelineOutput | None:
    """``result`` of one call of ``pipeline`` as a :class:`PipelineOutput`, or ``None`` for
    "nothing yet" (``None``, or a dict with neither video nor audio).

    Anything else is refused with a ``TypeError`` naming the pipeline: a wrong return type
    is a bug in the pipeline, and guessing would only move the failure somewhere vaguer.
    """
    if result is None or isinstance(result, PipelineOutput):
        return result
    if isinstance(result, Mapping):
        video, audio = result.get(VIDEO_KEY), result.get(AUDIO_KEY)
        rate = _sample_rate(result.get(RATE_KEY), pipeline)
        if video is None and audio is None:
            return None
        return PipelineOutput(video=video, audio=audio, sample_rate=rate)
    raise TypeError(f"pipeline {pipeline_name(pipeline)!r} returned {type(result).__name__}: "
                    "expected a PipelineOutput, a dict with 'video'/'audio'/"
                    "'audio_sample_rate', or None")
