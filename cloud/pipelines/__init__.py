"""The pipeline author's API: subclass :class:`Pipeline`, declare flags and parameters,
return a :class:`PipelineOutput` per call; optionally report load progress from
:meth:`Pipeline.load`. Register it with an entry point in the ``scope_relay.pipelines``
group (``name = "module:Class"``), ``--pipeline`` or ``SCOPE_RELAY_PIPELINES``
(:mod:`scope_relay.cloud.hosting.discovery`).

    from scope_relay.cloud.pipelines import Pipeline, ParamSpec, PipelineOutput, InputFrame
    from scope_relay.cloud.pipelines import InputAudio, PipelineInputs, join_audio  # audio in
"""

from scope_relay.cloud.pipelines.base import (
    InputAudio,
    InputFrame,
    LoadProgress,
    MediaTempo,
    ParamSpec,
    Pipeline,
    PipelineInputs,
    PipelineOutput,
    join_audio,
)

__all__ = ["InputAudio", "InputFrame", "LoadProgress", "MediaTempo", "ParamSpec", "Pipeline",
           "PipelineInputs", "PipelineOutput", "join_audio"]
