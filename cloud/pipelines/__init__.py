"""The pipeline author's API: subclass :class:`Pipeline`, declare flags and parameters,
return a :class:`PipelineOutput` per call.

    from scope_relay.cloud.pipelines import Pipeline, ParamSpec, PipelineOutput, InputFrame
"""

from .base import InputFrame, ParamSpec, Pipeline, PipelineOutput

__all__ = ["InputFrame", "ParamSpec", "Pipeline", "PipelineOutput"]
