"""Counts the invoke path keeps for metrics: list-slot increments, nothing more.

Everything else exported at `/metrics` is read from the components' own state at scrape time;
only what leaves no trace (how many activations ended how, and how long they ran) is counted
as it happens.
"""

from __future__ import annotations

from bisect import bisect_left

from squall.abc import JSONDict

# OpenWhisk's activation status codes, in order (ActivationResponse: 0..3).
STATUS_NAMES = ("success", "application_error", "developer_error", "whisk_error")
# Upper bounds (ms) of the duration histogram: sandbox runs from a millisecond to the 300 s limit.
DURATION_BOUNDS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 60000, 300000)


class ActivationCounts:
    """Activations by status and a duration histogram, for one component that records them."""

    __slots__ = ("buckets", "by_status", "duration_sum_ms")

    def __init__(self) -> None:
        self.by_status = [0] * len(STATUS_NAMES)
        self.buckets = [0] * (len(DURATION_BOUNDS_MS) + 1)  # the last is +Inf
        self.duration_sum_ms = 0

    def count(self, record: JSONDict) -> None:
        """An activation that ended without running (failed in a queue): its status only."""
        self.by_status[_status_slot(record)] += 1

    def observe(self, record: JSONDict) -> None:
        """An activation a sandbox ran: its status and its duration."""
        self.by_status[_status_slot(record)] += 1
        duration = record.get("duration", 0)
        self.buckets[bisect_left(DURATION_BOUNDS_MS, duration)] += 1
        self.duration_sum_ms += duration


def _status_slot(record: JSONDict) -> int:
    code = record.get("statusCode", 3)
    # A code outside OpenWhisk's four counts as a whisk error rather than breaking the invoker.
    return code if isinstance(code, int) and 0 <= code < len(STATUS_NAMES) else 3
