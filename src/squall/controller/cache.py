"""A bounded cache of entities that the fire path reads on every fire (triggers).

An alarm scheduler fires each of its triggers up to once a second; reading the trigger from
the entity store each time costs a store round trip per fire. Entries are dropped when the
entity changes: by the writer itself (same process) and by the `cache-invalidation` broadcast
(other processes; see ControllerService._changed). Two guards keep a stale copy from
outliving a change:

* A read that was under way when an invalidation arrived is not kept (`generation`): it may
  have read the entity before the change was written, and keeping it would undo the
  invalidation.
* Every entry expires after `ttl_s` at most: a backstop for an invalidation that never
  arrives (a message the bus lost, an entity changed by a tool that writes the store directly).
  Each lasts a random time between half of that and all of it: entries read together (a
  scheduler's alarms after its start) would otherwise all expire in the same second and be
  read again in one burst.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")
Key = tuple[str, str]  # (entity path, name)


class EntityCache(Generic[V]):
    """At most `capacity` entries, each for at most `ttl_s`; the oldest is evicted first."""

    def __init__(
        self, capacity: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 1 or ttl_s <= 0:
            raise ValueError("capacity must be >= 1 and ttl_s > 0")
        self.capacity, self.ttl_s = capacity, ttl_s
        self._clock = clock
        # OrderedDict, not dict: evicting a dict's first key walks past the slots of every key
        # deleted before it (CPython keeps them until a resize), which under churn (60,000
        # triggers through 10,000 entries) stalled the loop for up to 200 ms.
        self._entries: OrderedDict[Key, tuple[float, V]] = OrderedDict()
        # Bumped by every invalidation: a read that started before one is not kept.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: Key, value: V, generation: int) -> None:
        """Keep `value`, read from the store when `generation` was current; unless an
        invalidation came meanwhile."""
        if generation != self.generation:
            return
        self._entries.pop(key, None)  # re-inserted last: the oldest entry stays first
        while len(self._entries) >= self.capacity:
            self._entries.popitem(last=False)
        lifetime = self.ttl_s * (1.0 - random.random() / 2)  # in (ttl_s / 2, ttl_s]
        self._entries[key] = (self._clock() + lifetime, value)

    def forget(self, path: str, name: str) -> None:
        """Drop `path`/`name`, or every entry under `path` when `name` is empty."""
        self.generation += 1
        if name:
            self._entries.pop((path, name), None)
        else:
            for key in [k for k in self._entries if k[0] == path]:
                del self._entries[key]
