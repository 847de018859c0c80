"""One action's queue: hand-off to parked containers, staleness, removal."""

from __future__ import annotations

import asyncio

import pytest

from squall.config import SystemLimits
from squall.entities.action import build_action
from squall.errors import QueueGone
from squall.messages import ActivationMessage, QueueKey
from squall.scheduler.queue import MemoryQueue

ACTION = build_action(
    "guest",
    "a",
    {"exec": {"kind": "python:3", "code": "x"}},
    kinds=frozenset({"python:3"}),
    system=SystemLimits(),
    existing=None,
)
KEY = QueueKey("guest", "guest/a", 1)


def message(n: int) -> ActivationMessage:
    return ActivationMessage(
        f"{n:032x}", "t", "guest", "guest", ACTION, 1, {"n": n}, False, "controller0", 0
    )


def queue() -> MemoryQueue:
    return MemoryQueue(KEY, 256, None, 1, duration_buffer_size=3)


async def test_parked_container_gets_the_message_directly() -> None:
    q = queue()
    fetch = asyncio.create_task(q.fetch(None, 5))
    await asyncio.sleep(0)
    q.enqueue(message(1))
    assert (await fetch).content == {"n": 1}
    assert not q.entries


async def test_queued_messages_come_out_in_order() -> None:
    q = queue()
    for n in range(3):
        q.enqueue(message(n))
    assert [(await q.fetch(None, 1)).content["n"] for _ in range(3)] == [0, 1, 2]  # type: ignore[union-attr]


async def test_fetch_times_out_with_none() -> None:
    assert await queue().fetch(None, 0.01) is None


async def test_durations_keep_a_bounded_window() -> None:
    q = queue()
    for duration in (10.0, 20.0, 30.0, 40.0):
        q.enqueue(message(0))
        await q.fetch(duration, 1)
    assert q.average_duration() == 30.0


def test_stale_counting_and_dropping() -> None:
    q = queue()
    for n in range(3):
        q.enqueue(message(n))
    q.entries[0].enqueued -= 10
    q.entries[1].enqueued -= 10
    now = q.entries[2].enqueued
    assert q.stale_count(now, 1.0) == 2
    assert [m.content["n"] for m in q.drop_older_than(now, 5.0)] == [0, 1]
    assert len(q.entries) == 1


async def test_removal_releases_parked_containers() -> None:
    q = queue()
    fetch = asyncio.create_task(q.fetch(None, 5))
    await asyncio.sleep(0)
    q.enqueue(message(1))
    q.enqueue(message(2))
    left = q.remove()
    assert [m.content["n"] for m in left] == [2]
    assert (await fetch).content == {"n": 1}
    with pytest.raises(QueueGone):
        await q.fetch(None, 1)


async def test_a_message_handed_to_a_cancelled_container_is_not_lost() -> None:
    q = queue()
    evicted = asyncio.create_task(q.fetch(None, 5))
    await asyncio.sleep(0)
    q.enqueue(message(7))  # handed to the parked fetch...
    evicted.cancel()  # ...which is evicted before it runs again
    with pytest.raises(asyncio.CancelledError):
        await evicted
    assert (await q.fetch(None, 1)).content == {"n": 7}  # type: ignore[union-attr]
