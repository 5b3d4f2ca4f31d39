"""The loss lab's path models (tests/helpers/losslab.py), without a network: Gilbert-Elliott
bursts and the bottleneck's drop-tail queue, as the NFQUEUE daemon applies them."""

from __future__ import annotations

import random

import pytest

from helpers.losslab import Bottleneck, GilbertElliott


def _bursts(drops: list[bool]) -> list[int]:
    runs, run = [], 0
    for dropped in drops:
        if dropped:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    return runs


@pytest.mark.parametrize(("loss", "burst"), [(0.02, 3.0), (0.05, 1.0), (0.03, 4.0)])
def test_gilbert_elliott_gives_the_loss_in_bursts_of_the_mean_length(loss, burst):
    model = GilbertElliott(random.Random(7))
    drops = [model.drop(loss, burst) for _ in range(200_000)]
    assert sum(drops) / len(drops) == pytest.approx(loss, rel=0.1)
    runs = _bursts(drops)
    mean = sum(runs) / len(runs)
    # independent loss: runs of 1 / (1 - loss) on average
    assert mean == pytest.approx(burst if burst > 1 else 1 / (1 - loss), rel=0.1)


def test_gilbert_elliott_extremes():
    model = GilbertElliott(random.Random(1))
    assert not any(model.drop(0.0, 3.0) for _ in range(1000))
    assert all(model.drop(1.0, 3.0) for _ in range(1000))


def test_bottleneck_serialises_at_its_rate_and_drops_what_its_queue_cannot_hold():
    link = Bottleneck()
    # 1000 kb/s: a 1250-byte packet takes 10 ms; a 50 ms queue holds ~5 of them
    times = [link.admit(0.0, 1250, 1000, 50) for _ in range(10)]
    admitted = [t for t in times if t is not None]
    assert admitted[:3] == pytest.approx([0.01, 0.02, 0.03])
    assert len(admitted) == 6 and times[6:] == [None] * 4  # drop-tail
    assert link.admit(0.1, 1250, 1000, 50) == pytest.approx(0.11)  # drained by then
    assert Bottleneck().admit(5.0, 1250, 0, 50) == 5.0  # no ceiling: no wait
