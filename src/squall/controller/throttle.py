"""Per-namespace rate limits in OpenWhisk's shape: counts per clock minute."""

from __future__ import annotations

import time

from squall.controller.errors import ApiError


def too_many_per_minute(count: int, allowed: int) -> str:
    return f"Too many requests in the last minute (count: {count}, allowed: {allowed})."


class PerMinuteLimit:
    """Counts events per namespace in the current minute, like OpenWhisk's RateThrottler."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int]] = {}  # namespace -> (minute, count)

    def check(self, namespace: str, allowed: int) -> None:
        """Count one event, or raise ApiError 429 when the namespace is at its limit."""
        minute = int(time.time() // 60)
        seen_minute, count = self._counts.get(namespace, (minute, 0))
        if seen_minute != minute:
            count = 0
        if count >= allowed:
            raise ApiError(429, too_many_per_minute(count, allowed))
        self._counts[namespace] = (minute, count + 1)
