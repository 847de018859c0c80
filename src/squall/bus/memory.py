"""The in-process message bus: asyncio queues, no serialisation.

Each (topic, group) has one queue; members of a group compete for its messages, every group
gets every message, as with Kafka consumer groups.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator

from squall.abc import MessageBus, Subscription


class _MemorySubscription(Subscription):
    def __init__(self, bus: MemoryBus, topic: str, group: str, queue: asyncio.Queue[object]):
        self._bus, self._topic, self._group, self._queue = bus, topic, group, queue
        self._closed = False

    async def _messages(self) -> AsyncIterator[object]:
        while not self._closed:
            message = await self._queue.get()
            if message is _CLOSE:
                return
            yield message

    def __aiter__(self) -> AsyncIterator[object]:
        return self._messages()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_CLOSE)


_CLOSE = object()


class MemoryBus(MessageBus):
    """Topics as dicts of per-group queues."""

    def __init__(self) -> None:
        self._groups: defaultdict[str, dict[str, asyncio.Queue[object]]] = defaultdict(dict)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for groups in self._groups.values():
            for queue in groups.values():
                queue.put_nowait(_CLOSE)

    def publish(self, topic: str, message: object) -> None:
        for queue in self._groups[topic].values():
            queue.put_nowait(message)

    def subscribe(self, topic: str, group: str) -> Subscription:
        queue = self._groups[topic].setdefault(group, asyncio.Queue())
        return _MemorySubscription(self, topic, group, queue)
