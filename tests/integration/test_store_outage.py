"""A PostgreSQL that is down at start or stops mid-run: no crash, no lost activation record.

Every test here stops and restarts a real PostgreSQL server of its own (module scope), so the
session's shared server is never disturbed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from squall.abc import ActivationQuery
from squall.config import StoreSettings
from squall.errors import DependencyUnavailable, StoreError
from squall.platform import build_platform
from squall.stores.postgres import PostgresActivationStore, PostgresEntityStore
from squall.testing import LocalPostgres
from tests.conftest import GUEST_KEY, GUEST_UUID, local_postgres, make_settings
from tests.contract.test_activation_store import record

PASSWORD = "s3cret-never-printed"  # trust auth ignores it; it must not leak into messages


@pytest.fixture(scope="module")
def server() -> Iterator[LocalPostgres]:
    instance = local_postgres()
    try:
        yield instance
    finally:
        instance.remove()


@pytest.fixture
def pg(server: LocalPostgres) -> Iterator[LocalPostgres]:
    """The module's server, running when the test starts and stopped cleanly after it."""
    if server.pid() is None:
        server.start()
    yield server
    if server.pid() is None:
        server.start()


def url(server: LocalPostgres, schema: str | None = None) -> str:
    schema = schema or f"t_{uuid.uuid4().hex[:12]}"
    return (f"postgresql://postgres:{PASSWORD}@127.0.0.1:{server.port}/postgres"
            f"?schema={schema}&pool_timeout=0.5")  # fmt: skip


async def eventually(check: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def activations(pg: LocalPostgres) -> AsyncIterator[PostgresActivationStore]:
    store = PostgresActivationStore(url(pg), flush_interval_s=0.05, batch_size=100)
    await store.start()
    yield store
    await store.close()


async def test_records_accepted_while_postgres_is_down_are_written_after_it_returns(
    pg: LocalPostgres, activations: PostgresActivationStore
) -> None:
    before = [record() for _ in range(10)]
    for rec in before:
        activations.store(rec)
    await activations.flush()

    pg.stop()
    during = [record() for _ in range(250)]
    for rec in during:
        activations.store(rec)
    # Still readable by id from the buffer; the background writer keeps failing and retrying.
    assert await activations.get("guest", during[0]["activationId"]) == during[0]
    await asyncio.sleep(1.0)
    assert activations.pending_count == 250
    assert activations.unavailable_reason is not None
    with pytest.raises(DependencyUnavailable) as raised:
        await activations.count(ActivationQuery("guest"))
    assert PASSWORD not in str(raised.value) and "***" in str(raised.value)

    pg.start()

    async def drained() -> bool:
        return activations.pending_count == 0

    await eventually(drained)
    assert await activations.count(ActivationQuery("guest")) == 260
    assert activations.unavailable_reason is None


async def test_activation_store_starts_while_postgres_is_down(pg: LocalPostgres) -> None:
    pg.stop()
    store = PostgresActivationStore(url(pg), flush_interval_s=0.05)
    await store.start()  # not a crash: buffered until the server answers
    try:
        rec = record()
        store.store(rec)
        pg.start()

        async def written() -> bool:
            return store.pending_count == 0

        await eventually(written)
        assert await store.get("guest", rec["activationId"]) == rec
    finally:
        await store.close()


async def test_a_full_buffer_refuses_instead_of_dropping(pg: LocalPostgres) -> None:
    where = url(pg)
    store = PostgresActivationStore(where, flush_interval_s=0.05, batch_size=100, max_pending=1_000)
    await store.start()
    pg.stop()
    try:
        for _ in range(1_000):
            store.store(record())
        with pytest.raises(StoreError, match="refused rather than dropped"):
            store.store(record())
    finally:
        pg.start()
        await store.close()  # the final flush writes the thousand
    reopened = PostgresActivationStore(where)
    await reopened.start()
    try:
        assert await reopened.count(ActivationQuery("guest")) == 1_000
    finally:
        await reopened.close()


async def test_entity_operations_fail_clearly_while_down_and_recover(pg: LocalPostgres) -> None:
    store = PostgresEntityStore(url(pg))
    await store.start()
    try:
        await store.put("actions", "guest", "hello", {"v": 1}, None)
        pg.stop()
        with pytest.raises(DependencyUnavailable) as raised:
            await store.get("actions", "guest", "hello")
        message = str(raised.value)
        assert "SQUALL_ENTITY_STORE" in message and "unreachable" in message
        assert PASSWORD not in message
        pg.start()

        async def back() -> bool:
            try:
                return await store.get("actions", "guest", "hello") is not None
            except DependencyUnavailable:
                return False

        await eventually(back)
    finally:
        await store.close()


async def test_platform_waits_for_postgres_then_answers_503_while_it_is_down(
    pg: LocalPostgres, tmp_path: Path
) -> None:
    shared = url(pg)
    settings = replace(
        make_settings(tmp_path / "data"),
        stores=StoreSettings(entity_store=shared, activation_store=shared),
    )
    pg.stop()
    platform = build_platform(settings)
    starting = asyncio.create_task(platform.start())
    await asyncio.sleep(1.0)
    assert not starting.done()  # not ready, not dead: retrying with backoff
    pg.start()
    await asyncio.wait_for(starting, 30)
    try:
        transport = httpx.ASGITransport(app=platform.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://squall",
                                     auth=(GUEST_UUID, GUEST_KEY)) as client:  # fmt: skip
            assert (await client.get("/api/v1/namespaces/_/actions")).status_code == 200
            pg.stop()
            down = await client.get("/api/v1/namespaces/_/actions")
            assert down.status_code == 503, down.text
            assert down.headers["retry-after"] == "5"
            assert "temporarily unavailable" in down.json()["error"]
            pg.start()
    finally:
        await platform.close()


async def test_readiness_names_the_store_while_down_and_recovers_by_itself(
    pg: LocalPostgres, tmp_path: Path
) -> None:
    settings = replace(
        make_settings(tmp_path / "data"), stores=StoreSettings(activation_store=url(pg))
    )
    pg.stop()
    platform = build_platform(settings)
    await platform.start()  # an unreachable activation store does not hold the start
    try:
        ready, body = platform.readiness.report()
        check = body["checks"]["activation_store"]
        assert not ready and check["state"] == "unavailable"
        assert "SQUALL_ACTIVATION_STORE" in check["fix"] and PASSWORD not in str(body)
        pg.start()

        async def recovered() -> bool:
            await platform.readiness.probe()  # what the background probe does every 5 s
            return platform.readiness.report()[0]

        await eventually(recovered)
    finally:
        await platform.close()


async def test_readiness_names_the_entity_store_while_down_and_recovers(
    pg: LocalPostgres, tmp_path: Path
) -> None:
    settings = replace(
        make_settings(tmp_path / "data"), stores=StoreSettings(entity_store=url(pg))
    )
    platform = build_platform(settings)
    await platform.start()
    try:
        transport = httpx.ASGITransport(app=platform.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://squall") as client:
            pg.stop()
            await platform.readiness.probe()  # what the background probe does every 5 s
            response = await client.get("/readyz")
            assert response.status_code == 503, response.text
            check = response.json()["checks"]["entity_store"]
            assert check["state"] == "unavailable" and check["reason"]
            assert "SQUALL_ENTITY_STORE" in check["fix"]
            assert PASSWORD not in response.text
            assert (await client.get("/healthz")).status_code == 200
            pg.start()

            async def recovered() -> bool:
                await platform.readiness.probe()
                return (await client.get("/readyz")).status_code == 200

            await eventually(recovered)
    finally:
        await platform.close()
