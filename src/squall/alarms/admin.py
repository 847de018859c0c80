"""The feed lifecycle on this process's own AlarmService (`squall.abc.AlarmAdmin`).

Standalone, the controller's feed actions use it directly; a scheduler's internal endpoint
(`squall.alarms.routes`) serves it to controllers in a cluster.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

from squall.abc import AlarmAdmin, JSONDict
from squall.alarms.model import Alarm
from squall.alarms.service import AlarmService

__all__ = ["LocalAlarms"]


class LocalAlarms(AlarmAdmin):
    """`AlarmAdmin` over an AlarmService in this process: no copies, no hops."""

    def __init__(self, service: AlarmService) -> None:
        self.service = service

    async def create(
        self, namespace: str, trigger: str, kind: str, params: Mapping[str, Any]
    ) -> JSONDict:
        alarm = Alarm.from_params(namespace, trigger, kind, params, now=self.service.now())
        return self.service.read_view(await self.service.create(alarm))

    async def read(self, namespace: str, trigger: str) -> JSONDict | None:
        alarm = self.service.get(namespace, trigger)
        return None if alarm is None else self.service.read_view(alarm)

    async def update(self, namespace: str, trigger: str, params: Mapping[str, Any]) -> JSONDict:
        return self.service.read_view(await self.service.update(namespace, trigger, params))

    async def delete(self, namespace: str, trigger: str) -> bool:
        return await self.service.delete(namespace, trigger)

    async def pause(self, namespace: str, trigger: str) -> JSONDict:
        return self.service.read_view(await self.service.pause(namespace, trigger))

    async def resume(self, namespace: str, trigger: str) -> JSONDict:
        return self.service.read_view(await self.service.resume(namespace, trigger))

    async def list(self, namespace: str) -> builtins.list[JSONDict]:
        return [self.service.read_view(a) for a in self.service.list(namespace)]
