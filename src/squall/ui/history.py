"""A short history of the numbers the dashboard charts (fire lag, latency, throughput).

`/metrics` holds only current values and cumulative counters; a chart needs points in time.
Rather than run a background task in every process, a sample is taken when the dashboard asks
(at most one per `min_gap_s`), so a process nobody watches does no work for the UI. Latency is
derived from the duration histogram's change between two samples: the mean and the bucket
bound below which 95% of the new activations fall.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from squall.ops.counters import DURATION_BOUNDS_MS, ActivationCounts

KEEP_SAMPLES = 360  # 30 minutes at one sample every 5 s of watching


@dataclass(frozen=True, slots=True)
class _Totals:
    at: float
    finished: int
    duration_sum_ms: int
    buckets: tuple[int, ...]


class History:
    """The samples taken so far, oldest first."""

    def __init__(self, min_gap_s: float = 2.0, keep: int = KEEP_SAMPLES) -> None:
        self._min_gap_s = min_gap_s
        self._points: deque[dict[str, Any]] = deque(maxlen=keep)
        self._last: _Totals | None = None

    def sample(
        self, counts: ActivationCounts, lag_p50_ms: float | None, lag_p99_ms: float | None
    ) -> list[dict[str, Any]]:
        """Record a point if the last is old enough; returns every point kept."""
        now = time.time()
        if self._last is not None and now - self._last.at < self._min_gap_s:
            return list(self._points)
        totals = _Totals(now, sum(counts.buckets), counts.duration_sum_ms, tuple(counts.buckets))
        if self._last is not None:
            self._points.append(
                {
                    "t": int(now * 1000),
                    "lagP50Ms": lag_p50_ms,
                    "lagP99Ms": lag_p99_ms,
                    **_latency(self._last, totals),
                }
            )
        self._last = totals
        return list(self._points)


def _latency(before: _Totals, after: _Totals) -> dict[str, Any]:
    finished = after.finished - before.finished
    seconds = max(after.at - before.at, 1e-6)
    if finished <= 0:
        return {"perSecond": 0.0, "meanMs": None, "p95Ms": None}
    mean = (after.duration_sum_ms - before.duration_sum_ms) / finished
    new = [a - b for a, b in zip(after.buckets, before.buckets, strict=True)]
    bounds = [*DURATION_BOUNDS_MS, None]  # None: beyond the last bound
    p95 = next(
        (bound for bound, seen in zip(bounds, accumulate(new), strict=True)
         if seen >= 0.95 * finished),
        None,
    )  # fmt: skip
    return {"perSecond": round(finished / seconds, 3), "meanMs": round(mean, 3), "p95Ms": p95}
