"""In-process coordination: a dict. One process owns everything, so leases never expire."""

from __future__ import annotations

from collections.abc import Mapping

from squall.abc import Coordinator


class LocalCoordinator(Coordinator):
    """Keys in memory; the process is its own single lease holder."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()

    async def put(self, key: str, value: str, *, leased: bool = True) -> None:
        self._data[key] = value

    async def put_if_absent(self, key: str, value: str, *, leased: bool = True) -> bool:
        if key in self._data:
            return False
        self._data[key] = value
        return True

    async def get(self, key: str) -> str | None:
        return self._data.get(key)

    async def get_prefix(self, prefix: str) -> Mapping[str, str]:
        return {k: v for k, v in self._data.items() if k.startswith(prefix)}

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)
