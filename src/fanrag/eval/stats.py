"""Latency summaries for evaluation reports and benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks (numpy's default), so
    p50 of [1, 2, 3, 4] is 2.5. An empty input gives NaN rather than an invented number."""
    if not 0 <= q <= 100:
        raise ValueError("q must be in 0..100")
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 and mean of per-query milliseconds."""
    return {
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms) if ms else math.nan,
        "n": float(len(ms)),
    }
