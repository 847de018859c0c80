"""In-process coordination: a dict. One process owns everything, so leases never expire."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from squall.abc import Coordinator, PrefixWatcher, Subscription


class _LocalWatch(Subscription):
    def __init__(self, owner: LocalCoordinator, prefix: str, on_change: PrefixWatcher) -> None:
        self.owner, self.prefix, self.on_change = owner, prefix, on_change

    async def close(self) -> None:
        if self in self.owner._watches:
            self.owner._watches.remove(self)


class LocalCoordinator(Coordinator):
    """Keys in memory; the process is its own single lease holder."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._watches: list[_LocalWatch] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()
        self._watches.clear()

    async def put(self, key: str, value: str, *, leased: bool = True) -> None:
        changed = self._data.get(key) != value
        self._data[key] = value
        if changed:
            self._notify(key)

    async def put_if_absent(self, key: str, value: str, *, leased: bool = True) -> bool:
        if key in self._data:
            return False
        self._data[key] = value
        self._notify(key)
        return True

    async def get(self, key: str) -> str | None:
        return self._data.get(key)

    async def get_prefix(self, prefix: str) -> Mapping[str, str]:
        return {k: v for k, v in self._data.items() if k.startswith(prefix)}

    async def delete(self, key: str) -> None:
        if self._data.pop(key, None) is not None:
            self._notify(key)

    def watch_prefix(self, prefix: str, on_change: PrefixWatcher) -> Subscription:
        watch = _LocalWatch(self, prefix, on_change)
        self._watches.append(watch)
        self._deliver(watch)
        return watch

    def _notify(self, key: str) -> None:
        for watch in self._watches:
            if key.startswith(watch.prefix):
                self._deliver(watch)

    def _deliver(self, watch: _LocalWatch) -> None:
        # Asynchronous like etcd's watch: a writer never runs its watchers' code.
        snapshot = {k: v for k, v in self._data.items() if k.startswith(watch.prefix)}
        asyncio.get_running_loop().call_soon(watch.on_change, snapshot)
