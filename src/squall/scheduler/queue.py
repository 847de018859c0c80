"""One action revision's queue of activations, pulled by its containers.

Containers park in `fetch` while the queue is empty; an arriving activation goes straight to a
parked container without touching the deque, which keeps the warm path to one future hand-off.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from squall.errors import QueueGone
from squall.messages import ActivationMessage, QueueKey


@dataclass(slots=True)
class _Entry:
    enqueued: float  # monotonic seconds
    message: ActivationMessage


@dataclass(slots=True, frozen=True)
class PendingCreation:
    """A container asked of an invoker that has not reported it started yet."""

    invoker_id: str
    started: float  # monotonic seconds


@dataclass(slots=True)
class MemoryQueue:
    """Waiting activations, parked containers, and the container counts the decisions need."""

    key: QueueKey
    memory_mb: int
    instances: int | None
    concurrency: int
    duration_buffer_size: int
    entries: deque[_Entry] = field(default_factory=deque)
    waiters: deque[asyncio.Future[ActivationMessage | None]] = field(default_factory=deque)
    containers: set[str] = field(default_factory=set)
    creations: dict[str, PendingCreation] = field(default_factory=dict)  # by creation id
    durations: deque[float] = field(default_factory=deque)
    # The activation store's average for this action when the queue was created: what the
    # decisions use until a container reports its own durations.
    stored_average_ms: float | None = None
    last_activity: float = field(default_factory=time.monotonic)
    removed: bool = False
    throttled: bool = False

    def enqueue(self, message: ActivationMessage) -> None:
        """Hand to a parked container, or queue."""
        self.last_activity = time.monotonic()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(message)
                return
        self.entries.append(_Entry(self.last_activity, message))

    async def fetch(
        self, last_duration_ms: float | None, timeout_s: float
    ) -> ActivationMessage | None:
        """The next activation, or None when none came within `timeout_s`."""
        if self.removed:
            raise QueueGone(str(self.key))
        if last_duration_ms is not None:
            self._record_duration(last_duration_ms)
        if self.entries:
            self.last_activity = time.monotonic()
            return self.entries.popleft().message
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[ActivationMessage | None] = loop.create_future()
        self.waiters.append(waiter)
        # A bare timer instead of asyncio.wait_for: this runs once per warm activation.
        timer = loop.call_later(timeout_s, _expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            self._give_back(waiter)
            raise
        finally:
            timer.cancel()

    def _give_back(self, waiter: asyncio.Future[ActivationMessage | None]) -> None:
        """A container cancelled (evicted) after being handed a message must not lose it."""
        if not waiter.done() or waiter.cancelled() or waiter.exception() is not None:
            return
        message = waiter.result()
        if message is not None:
            self.put_back(message)

    def put_back(self, message: ActivationMessage) -> None:
        """Return a message a container was handed but never got: first in line again."""
        self.entries.appendleft(_Entry(time.monotonic(), message))
        while self.waiters and self.entries:
            other = self.waiters.popleft()
            if not other.done():
                other.set_result(self.entries.popleft().message)

    def _record_duration(self, duration_ms: float) -> None:
        self.durations.append(duration_ms)
        if len(self.durations) > self.duration_buffer_size:
            self.durations.popleft()

    def average_duration(self) -> float | None:
        if self.durations:
            return sum(self.durations) / len(self.durations)
        return self.stored_average_ms

    def stale_count(self, now: float, threshold_s: float) -> int:
        count = 0
        for entry in self.entries:  # oldest first: stop at the first fresh one
            if now - entry.enqueued <= threshold_s:
                break
            count += 1
        return count

    def drop_older_than(self, now: float, age_s: float) -> list[ActivationMessage]:
        dropped: list[ActivationMessage] = []
        while self.entries and now - self.entries[0].enqueued > age_s:
            dropped.append(self.entries.popleft().message)
        return dropped

    def idle_waiters(self) -> int:
        return sum(1 for w in self.waiters if not w.done())

    def remove(self) -> list[ActivationMessage]:
        """Mark removed, release parked containers, and return what was still queued."""
        self.removed = True
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(QueueGone(str(self.key)))
        self.waiters.clear()
        left = [e.message for e in self.entries]
        self.entries.clear()
        return left


def _expire(waiter: asyncio.Future[ActivationMessage | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
