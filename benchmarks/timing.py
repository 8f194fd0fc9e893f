"""Interleaved timing shared by the benchmark scripts.

``measure_interleaved`` warms each runner up, sizes a round of calls from the warm-up,
then runs ``rounds`` rounds with the runner order rotating each round, timing every call;
it reports the median milliseconds per runner. Peers measured in the same rounds see the
same load, so their ratio means something on a shared machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Runner = Callable[[], Any]


@dataclass(frozen=True)
class Timing:
    rounds: int = 10
    round_s: float = 0.15
    warmup_s: float = 0.3



def measure_interleaved(runners: dict[str, Runner], timing: Timing) -> dict[str, float]:
    """Median ms per runner over ``timing.rounds`` rounds, the runner order rotating."""
    counts = {name: _calls_per_round(run, timing) for name, run in runners.items()}
    samples: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(timing.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name] += _time_calls(runners[name], counts[name])
    return {name: statistics.median(values) for name, values in samples.items()}


def _calls_per_round(run: Runner, timing: Timing) -> int:
    """Warm ``run`` up for ``timing.warmup_s`` (3 calls at least); size a round from it."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < timing.warmup_s:
        times += _time_calls(run, 1)
    per_call_s = statistics.median(times[1:]) / 1000
    return max(1, round(timing.round_s / per_call_s))


def _time_calls(run: Runner, count: int) -> list[float]:
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000)
    return times
