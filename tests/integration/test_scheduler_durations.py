"""The scheduler's duration statistics come from any activation store, with a fallback."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from squall.config import StoreSettings
from squall.errors import StoreError
from squall.testing import free_port
from tests.integration.test_scheduling import SLOW, create, running


def queues(platform: object) -> list[object]:
    return list(platform.scheduler._queues.values())  # type: ignore[attr-defined]


async def test_a_new_queue_starts_from_the_stores_average_duration(tmp_path: Path) -> None:
    async with running(tmp_path, lambda s: s) as (platform, api):
        await create(api, "slow", SLOW)
        first = await api.post("/api/v1/namespaces/_/actions/slow?blocking=true", json={"s": 0.2})
        assert first.status_code == 200
        duration = first.json()["duration"]
        # A new revision gets a new queue: it knows the duration before any container reports.
        await create_again(api)
        second = await api.post("/api/v1/namespaces/_/actions/slow?blocking=true", json={"s": 0})
        assert second.status_code == 200
        # The lookup runs beside the cold start, not before it: wait for it (bounded).
        await lookups_done(platform)
        (queue,) = queues(platform)
        assert queue.stored_average_ms == pytest.approx(duration)  # type: ignore[attr-defined]
        assert platform.scheduler.durations_degraded is None


async def lookups_done(platform: object) -> None:
    pending = set(platform.scheduler._lookups)  # type: ignore[attr-defined]
    if pending:
        _, late = await asyncio.wait(pending, timeout=10)
        assert not late, "the duration lookup did not finish within 10 s"


async def create_again(api: object) -> None:
    response = await api.put(  # type: ignore[attr-defined]
        "/api/v1/namespaces/_/actions/slow?overwrite=true",
        json={"exec": {"kind": "python:3", "code": SLOW + "\n# v2\n"}},
    )
    assert response.status_code == 200, response.text


async def test_an_unreachable_store_degrades_to_invoker_durations(tmp_path: Path) -> None:
    # Nothing listens there: a real connection failure, not a stand-in.
    dead = f"postgresql://squall@127.0.0.1:{free_port()}/squall?pool_timeout=0.2"

    def tweak(settings: object) -> object:
        return replace(settings, stores=StoreSettings(activation_store=dead))  # type: ignore[type-var]

    with pytest.raises(StoreError, match="could not be written before shutdown"):
        async with running(tmp_path, tweak) as (platform, api):  # type: ignore[arg-type]
            await create(api, "slow", SLOW)
            response = await api.post(
                "/api/v1/namespaces/_/actions/slow?blocking=true", json={"s": 0}
            )
            assert response.status_code == 200  # invoking works; the record is buffered
            assert platform.scheduler.durations_degraded is not None
            assert "unreachable" in platform.scheduler.durations_degraded
            (queue,) = queues(platform)
            assert queue.average_duration() is not None  # what the container reported
