"""The in-process message bus: handlers called from the event loop, no serialisation.

Every group gets every message; within a group the members take turns, as Kafka consumer
groups share partitions. Delivery goes through `loop.call_soon`, so it is asynchronous like a
real broker's, without a queue and a consumer task per hop on the invoke path.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict

from squall.abc import MessageBus, MessageHandler, Subscription

log = logging.getLogger("squall.bus")


class _Group:
    def __init__(self) -> None:
        self.members: list[MessageHandler] = []
        self._turn = itertools.count()

    def next_member(self) -> MessageHandler | None:
        if not self.members:
            return None
        return self.members[next(self._turn) % len(self.members)]


class _MemorySubscription(Subscription):
    def __init__(self, group: _Group, handler: MessageHandler) -> None:
        self._group, self._handler = group, handler

    async def close(self) -> None:
        if self._handler in self._group.members:
            self._group.members.remove(self._handler)


def _deliver(handler: MessageHandler, message: object) -> None:
    try:
        handler(message)
    except Exception:  # one bad message must not stop the bus
        log.exception("a message handler failed on %r", type(message).__name__)


class MemoryBus(MessageBus):
    """Topics as dicts of consumer groups."""

    def __init__(self) -> None:
        self._topics: defaultdict[str, dict[str, _Group]] = defaultdict(dict)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._topics.clear()

    def publish(self, topic: str, message: object) -> None:
        loop = asyncio.get_running_loop()
        for group in self._topics[topic].values():
            handler = group.next_member()
            if handler is not None:
                loop.call_soon(_deliver, handler, message)

    def subscribe(self, topic: str, group: str, handler: MessageHandler) -> Subscription:
        members = self._topics[topic].setdefault(group, _Group())
        members.members.append(handler)
        return _MemorySubscription(members, handler)
