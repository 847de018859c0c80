"""Retention runs on every activation-store backend through the same service."""

from __future__ import annotations

import asyncio
import time

from squall.abc import ActivationQuery, ActivationStore
from squall.stores.retention import RetentionService

from .test_activation_store import ids, record


async def test_retention_purges_only_records_older_than_the_age(
    activation_store: ActivationStore,
) -> None:
    now = int(time.time() * 1000)
    old = [record(start=now - 3_600_000 - i) for i in range(5)]
    recent = [record(start=now - 60_000 + i) for i in range(3)]
    for rec in (*old, *recent):
        activation_store.store(rec)
    service = RetentionService(activation_store, retention_s=1800)
    assert await service.purge_once() == 5
    assert set(ids(await activation_store.list(ActivationQuery("guest")))) == set(ids(recent))
    assert await service.purge_once() == 0


async def test_retention_loop_runs_in_the_background(activation_store: ActivationStore) -> None:
    now = int(time.time() * 1000)
    activation_store.store(record(start=now - 10_000))
    service = RetentionService(activation_store, retention_s=5, interval_s=0.05)
    await service.start()
    try:
        for _ in range(100):
            if await activation_store.count(ActivationQuery("guest")) == 0:
                break
            await asyncio.sleep(0.05)
        assert await activation_store.count(ActivationQuery("guest")) == 0
    finally:
        await service.close()


async def test_no_retention_configured_never_purges(activation_store: ActivationStore) -> None:
    activation_store.store(record(start=1))
    service = RetentionService(activation_store, retention_s=None)
    await service.start()
    await asyncio.sleep(0.05)
    await service.close()
    assert await activation_store.count(ActivationQuery("guest")) == 1
