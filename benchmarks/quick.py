"""``--quick`` for every benchmark: the smallest run that still goes through each of its
parts and prints all of its figures, so the suite can run it as a smoke test
(tests/benchmarks) and a benchmark cannot break unnoticed. Its figures are not meant to
be read: the windows are too short to measure anything."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

HELP = ("the smallest run through every part of this benchmark, all its figures printed "
        "(the suite's smoke test); flags given still win")


def parse_args(parser: argparse.ArgumentParser, quick: dict[str, Any],
               argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` with ``--quick`` added; under it ``quick`` (argument dest -> value)
    replaces the defaults."""
    parser.add_argument("--quick", action="store_true", help=HELP)
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**quick)
        args = parser.parse_args(argv)
    return args
