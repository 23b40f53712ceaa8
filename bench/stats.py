"""Small statistics helpers: percentiles of latency samples, in milliseconds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    """Latency summary of one measured thing (all values in ms)."""

    name: str
    n: int
    p50: float
    p90: float
    p99: float
    min: float
    max: float

    @classmethod
    def of(cls, name: str, samples_ms: Sequence[float]) -> Summary:
        """Summarise `samples_ms`."""
        return cls(name, len(samples_ms), percentile(samples_ms, 50), percentile(samples_ms, 90),
                   percentile(samples_ms, 99), min(samples_ms, default=math.nan),
                   max(samples_ms, default=math.nan))
