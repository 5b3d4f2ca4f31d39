"""Plugin modules the discovery and plugin tests write to disk, for a real import to load."""

from __future__ import annotations

TONE_PLUGIN = '''
from scope_relay.cloud.pipelines import ParamSpec, Pipeline
from scope_relay.cloud.builtin_pipelines.signals import TestTone

FREQUENCY = {frequency}


class {class_name}(TestTone):
    pipeline_id = "{pipeline_id}"
    name = "{name}"

    def __call__(self, inputs, params):
        return super().__call__(inputs, {{**params, "frequency": FREQUENCY}})
'''


def tone_plugin(class_name: str, pipeline_id: str, name: str, frequency: float,
                more: str = "") -> str:
    """A module whose ``class_name`` plays the built-in test tone at ``frequency`` (a module
    constant: the edit a ``--reload`` test makes is one line), then ``more`` (its other
    classes)."""
    return TONE_PLUGIN.format(class_name=class_name, pipeline_id=pipeline_id, name=name,
                              frequency=frequency) + more
