"""``ParamSpec(label=...)``: the author's own words for a parameter reach the page through
the schema; without one the schema is as before and the page derives a title."""

from __future__ import annotations

import pytest

from scope_relay.cloud.hosting.registry import PipelineRegistry
from scope_relay.cloud.pipelines import ParamSpec, Pipeline


class Labelled(Pipeline):
    pipeline_id = "labelled"
    name = "Labelled"
    produces_audio = True
    params = {
        "root_hz": ParamSpec("number", 220.0, "the drone's root", 20.0, 2000.0,
                             label="Root (Hz)"),
        "detune": ParamSpec("number", 0.0, "cents", -50.0, 50.0),
    }

    def __call__(self, inputs, params):
        return None


def test_a_label_is_in_the_schema_the_page_receives():
    registry = PipelineRegistry([Labelled])
    (described,) = registry.describe()
    assert described["params"]["root_hz"]["label"] == "Root (Hz)"
    assert registry.schemas()["labelled"]["params"]["root_hz"]["label"] == "Root (Hz)"


def test_without_a_label_the_schema_is_unchanged():
    assert "label" not in Labelled.params["detune"].schema()
    assert ParamSpec("number", 0.0, "cents", -50.0, 50.0).schema() == {
        "type": "number", "default": 0.0, "description": "cents", "minimum": -50.0,
        "maximum": 50.0}


@pytest.mark.parametrize("label", ["", "   ", 3])
def test_an_empty_or_non_text_label_is_refused_when_the_class_is_defined(label):
    with pytest.raises(ValueError, match="label must be a non-empty string"):
        ParamSpec("number", 0.0, label=label)
