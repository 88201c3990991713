"""How steady the machine was during the run: a fixed pure-Python loop, timed like every other benchmark.

The loop's work never changes, so the spread of its rounds (median over best) is the machine's, not our
code's: on a shared host the other benchmarks' medians move with it, while their best rounds (the timeit
documentation's advice: "the min() of the result is probably the only number you should be interested in")
stay put. The README quotes both, and this spread next to them.
"""

from __future__ import annotations

from typing import Any

import pytest


def _fixed_work() -> int:
    return sum(range(1_000_000))


@pytest.mark.benchmark(group="machine: fixed pure-Python loop")
def test_machine_steadiness(benchmark: Any) -> None:
    assert benchmark.pedantic(_fixed_work, rounds=40, iterations=1) == 499_999_500_000
    stats = benchmark.stats.stats
    benchmark.extra_info["median_over_best"] = round(stats.median / stats.min, 2)
