"""Counters as typed records: one dataclass per stats block, reported as one dict.

A component keeps its monotonically increasing counts in a :class:`Counters` dataclass
(``self.counts.underruns += 1``) instead of loose attributes copied by hand into a
``stats()`` dict, so a count cannot be forgotten in the report or misspelt at a call site
(the records use ``slots``). Counts of audio samples are reported as milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def samples_counter(sample_rate: int) -> Any:
    """A count of audio samples at ``sample_rate``, reported as ``<name>_ms`` (the field's
    name without its ``_samples`` suffix), rounded to 0.1 ms."""
    return field(default=0, metadata={"sample_rate": sample_rate})


@dataclass(slots=True)
class Counters:
    """Base of every counter record: ``as_stats()`` is the report, field by field."""

    def as_stats(self) -> dict[str, int | float]:
        report: dict[str, int | float] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            rate = spec.metadata.get("sample_rate")
            if rate:
                report[spec.name.removesuffix("_samples") + "_ms"] = round(value / rate * 1000, 1)
            else:
                report[spec.name] = value
        return report
