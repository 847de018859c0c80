"""Percentiles and small summaries of latency samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when there are none)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def pct_key(pct: float) -> str:
    """50.0 -> 'p50', 99.9 -> 'p99.9'."""
    return "p" + (f"{pct:g}")


def summarize_ms(values_ms: Sequence[float]) -> dict[str, Any]:
    """Count, mean, min, max and the usual percentiles, all in milliseconds."""
    ordered = sorted(values_ms)
    summary: dict[str, Any] = {"count": len(ordered)}
    if not ordered:
        return summary
    summary["mean_ms"] = round(sum(ordered) / len(ordered), 4)
    summary["min_ms"] = round(ordered[0], 4)
    summary["max_ms"] = round(ordered[-1], 4)
    for pct in PERCENTILES:
        summary[f"{pct_key(pct)}_ms"] = round(percentile(ordered, pct), 4)
    return summary


def ratio(value: float | None, base: float | None) -> float | None:
    """value / base, or None when either is missing or the base is zero."""
    if value is None or base is None or base == 0:
        return None
    return round(value / base, 3)


# The points a latency distribution is kept at in the results file: enough to draw its CDF
# without storing every sample.
CDF_GRID = (0.0, 0.5, *(float(p) for p in range(1, 100)), 99.5, 99.9, 100.0)


def cdf_points(values_ms: Sequence[float]) -> dict[str, list[float]]:
    """The latency at each percentile of CDF_GRID (nearest rank; 0 is the minimum)."""
    ordered = sorted(values_ms)
    if not ordered:
        return {"pct": [], "ms": []}
    points = [ordered[0] if p == 0 else percentile(ordered, p) for p in CDF_GRID]
    return {"pct": list(CDF_GRID), "ms": [round(v, 4) for v in points]}
