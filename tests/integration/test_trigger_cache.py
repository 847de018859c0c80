"""The trigger cache on the fire path: a change is seen by the next fire in the same process,
and by another process's fires once the cache-invalidation broadcast arrives (real Kafka);
concurrent ledger fires share their flushes and still write each record before its actions.

The "two processes" are two ControllerServices in this process, each with its own Kafka bus
(producer, consumers) and its own PostgreSQL stores on one database, as a controller and a
scheduler are in a cluster.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import pytest

from squall.abc import ActivationStore, EntityStore, MessageBus, StoredEntity
from squall.bus.memory import MemoryBus
from squall.config import KafkaSettings, SystemLimits
from squall.controller.auth import Identity, subject_record
from squall.controller.errors import ApiError
from squall.controller.service import TRIGGER_CACHE_TTL_S, ControllerService
from squall.coordination.local import LocalCoordinator
from squall.entities.names import EntityPath
from squall.entities.trigger import ACTIVE, INACTIVE
from squall.messages import ActivationMessage
from squall.platform import Platform
from squall.stores.postgres import PostgresActivationStore, PostgresEntityStore
from squall.testing import LocalPostgres, LocalTansu
from tests.conftest import GUEST_AUTH

pytestmark = pytest.mark.timeout(120)

LIMITS = replace(
    SystemLimits(), fires_per_minute=100_000, invocations_per_minute=100_000,
    concurrent_invocations=10_000,
)  # fmt: skip
BROADCAST_TIMEOUT_S = 10.0  # well under the cache's TTL: only the broadcast can pass
assert BROADCAST_TIMEOUT_S < TRIGGER_CACHE_TTL_S
ECHO = {"exec": {"kind": "python:3", "code": "def main(a):\n    return a\n"}}


def path(name: str) -> EntityPath:
    return EntityPath("guest", None, name)


class CountingReads:
    """Counts the trigger reads of a real entity store (wraps its `get`)."""

    def __init__(self, store: EntityStore) -> None:
        self.triggers = 0
        self._get = store.get
        store.get = self._counted  # type: ignore[method-assign]

    async def _counted(self, collection: str, namespace: str, name: str) -> StoredEntity | None:
        if collection == "triggers":
            self.triggers += 1
        return await self._get(collection, namespace, name)


@dataclass
class Member:
    """One process's controller object over its own stores and bus."""

    service: ControllerService
    entities: PostgresEntityStore
    activations: PostgresActivationStore
    bus: MessageBus
    reads: CountingReads


@asynccontextmanager
async def member(url: str, bus: MessageBus, member_id: str) -> AsyncIterator[Member]:
    entities, activations = PostgresEntityStore(url), PostgresActivationStore(url)
    coordinator = LocalCoordinator()
    service = ControllerService(
        entities=entities, activations=activations, bus=bus, coordinator=coordinator,
        limits=LIMITS, kinds=frozenset({"python:3"}), controller_id=member_id,
    )  # fmt: skip
    started: list[Any] = []
    try:
        for component in (entities, activations, bus, coordinator, service):
            await component.start()
            started.append(component)
        yield Member(service, entities, activations, bus, CountingReads(entities))
    finally:
        for component in reversed(started):
            await component.close()


def database(server: LocalPostgres) -> str:
    return server.url(schema=f"t_{uuid.uuid4().hex[:12]}", pool_timeout="5")


async def guest(store: EntityStore, service: ControllerService) -> Identity:
    if await store.get_subject_by_namespace("guest") is None:
        await store.put_subject(subject_record("guest", GUEST_AUTH, None))
    identity = await service.system_identity("guest")
    assert identity is not None
    return identity


async def until(check: Callable[[], Awaitable[bool]], what: str) -> float:
    """Seconds until `check()` holds (bounded by BROADCAST_TIMEOUT_S)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < BROADCAST_TIMEOUT_S, f"not seen in time: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def rule_setup(service: ControllerService) -> None:
    """Action `a`, trigger `t`, rule `r` (t -> a, active)."""
    await service.put_action(path("a"), ECHO, False)
    await service.put_trigger(path("t"), {}, False)
    await service.put_rule(path("r"), {"trigger": "/_/t", "action": "/_/a"}, False)


async def test_a_change_is_seen_by_the_next_fire_in_the_same_process(
    platform: Platform,
) -> None:
    """Standalone: no broadcast delay; the writer forgets its own copy before it answers."""
    service = platform.controller
    reads = CountingReads(platform.entities)
    identity = await guest(platform.entities, service)
    await rule_setup(service)

    async def fire() -> str | None:
        return await service.fire_trigger(identity, path("t"), {})

    assert await fire() is not None
    before = reads.triggers
    for _ in range(5):
        assert await fire() is not None
    assert reads.triggers == before, "fires of an unchanged trigger read the store"

    await service.set_rule_status(path("r"), INACTIVE)
    assert await fire() is None
    await service.set_rule_status(path("r"), ACTIVE)
    assert await fire() is not None
    await service.put_trigger(path("t"), {"parameters": [{"key": "p", "value": 2}]}, True)
    fired = await fire()
    assert fired is not None
    record = await platform.activations.get("guest", fired)
    assert record is not None and record["version"] == "0.0.2"
    await service.delete_rule(path("r"))
    assert await fire() is None
    await service.delete_trigger(path("t"))
    with pytest.raises(ApiError) as gone:
        await fire()
    assert gone.value.status == 404


async def test_a_change_made_by_another_process_reaches_its_fires_by_broadcast(
    tansu: LocalTansu, postgres_server: LocalPostgres
) -> None:
    url = database(postgres_server)
    kafka = KafkaSettings(bootstrap=(tansu.bootstrap,), topic_prefix=f"t{uuid.uuid4().hex[:8]}-")
    from squall.bus.kafka import KafkaBus

    async with (
        member(url, KafkaBus(kafka, client_id="controller0"), "controller0") as api,
        member(url, KafkaBus(kafka, client_id="scheduler0"), "scheduler0") as firer,
    ):
        await listening(api.service, firer.service)
        identity = await guest(api.entities, firer.service)
        await rule_setup(api.service)

        async def fire() -> str | None:
            return await firer.service.fire_trigger(identity, path("t"), {})

        # Once the setup's own invalidations have arrived, fires no longer read the trigger.
        await until(lambda: fires_read_nothing(fire, firer.reads), "fires served from the cache")

        await api.service.set_rule_status(path("r"), INACTIVE)
        await until(lambda: fired_none(fire), "rule disabled")
        await api.service.set_rule_status(path("r"), ACTIVE)
        await until(lambda: fired_some(fire), "rule enabled")
        await api.service.put_trigger(path("t"), {"parameters": [{"key": "p", "value": 2}]}, True)

        async def new_version() -> bool:
            fired = await fire()
            record = await firer.activations.get("guest", fired) if fired else None
            return record is not None and record["version"] == "0.0.2"

        await until(new_version, "trigger updated")
        await api.service.delete_trigger(path("t"))
        await until(lambda: fire_refused(fire, 404), "trigger deleted")


async def listening(sender: ControllerService, receiver: ControllerService) -> None:
    """Until the receiver's cache-invalidation consumer has joined: probes until one lands
    (every invalidation received bumps its cache's generation)."""
    seen = receiver._triggers.generation
    deadline = time.monotonic() + 30.0
    while receiver._triggers.generation == seen:
        assert time.monotonic() < deadline, "the invalidation consumer never joined"
        sender._changed("guest", "probe")
        await asyncio.sleep(0.2)


async def fires_read_nothing(
    fire: Callable[[], Awaitable[str | None]], reads: CountingReads
) -> bool:
    assert await fire() is not None
    before = reads.triggers
    for _ in range(5):
        assert await fire() is not None
    return reads.triggers == before


async def fired_none(fire: Callable[[], Awaitable[str | None]]) -> bool:
    return await fire() is None


async def fired_some(fire: Callable[[], Awaitable[str | None]]) -> bool:
    return await fire() is not None


async def fire_refused(fire: Callable[[], Awaitable[str | None]], status: int) -> bool:
    try:
        await fire()
    except ApiError as exc:
        return exc.status == status
    return False


async def test_concurrent_ledger_fires_share_flushes_and_record_before_sending(
    postgres_server: LocalPostgres,
) -> None:
    """Fifty alarm ticks fired at once: far fewer record writes than fires, and each tick's
    record is in PostgreSQL when its rule's action message is published."""
    url = database(postgres_server)
    bus = MemoryBus()
    async with member(url, bus, "scheduler0") as firer:
        service = firer.service
        identity = await guest(firer.entities, service)
        await rule_setup(service)
        writes = count_writes(firer.activations)
        sent_before_durable: list[str] = []
        sent: list[str] = []
        publish = bus.publish
        with psycopg.connect(url.partition("?")[0], autocommit=True) as db:
            schema = url.partition("schema=")[2].partition("&")[0]

            def observe(topic: str, message: object) -> None:
                if isinstance(message, ActivationMessage) and message.cause:
                    sent.append(message.cause)
                    row = db.execute(
                        f"SELECT 1 FROM {schema}.activations WHERE activation_id = %s",
                        (message.cause,),
                    ).fetchone()
                    if row is None:
                        sent_before_durable.append(message.cause)
                publish(topic, message)

            bus.publish = observe  # type: ignore[method-assign]
            ticks = [uuid.uuid4().hex for _ in range(50)]
            fired = await asyncio.gather(
                *(service.fire_trigger(identity, path("t"), {}, activation_id=tick,
                                       check_ledger=False) for tick in ticks)
            )  # fmt: skip
        assert fired == ticks
        assert sorted(sent) == sorted(ticks) and sent_before_durable == []
        assert 1 <= writes() <= len(ticks) // 5, f"{writes()} writes for {len(ticks)} fires"


def count_writes(store: ActivationStore) -> Callable[[], int]:
    """How many batches the store writes from now on (wraps its backend `_write`)."""
    calls = [0]
    write = store._write  # type: ignore[attr-defined]

    async def counted(batch: Any) -> None:
        calls[0] += 1
        await write(batch)

    store._write = counted  # type: ignore[attr-defined]
    return lambda: calls[0]


async def test_ticks_due_together_share_one_identity_read(platform: Platform) -> None:
    """The namespace's identity (kept 10 s) is read once for a burst of ticks, not per tick."""
    from squall.controller.feeds import AlarmFeeds

    feeds = AlarmFeeds(platform.controller)
    reads = [0]
    read = platform.entities.get_subject_by_namespace

    async def counted(namespace: str) -> Any:
        reads[0] += 1
        return await read(namespace)

    platform.entities.get_subject_by_namespace = counted  # type: ignore[method-assign]
    identities = await asyncio.gather(*(feeds._identity("guest") for _ in range(50)))
    assert reads[0] == 1
    assert {identity.subject if identity else None for identity in identities} == {"guest"}
    assert await feeds._identity("nobody") is None and reads[0] == 2


async def test_a_replayed_tick_asks_the_ledger_only_when_a_rule_is_active(
    platform: Platform,
) -> None:
    """A late or replayed tick (check_ledger) of a trigger whose rules are all inactive costs
    no activation store read; with an active rule the ledger still drops a tick fired before."""
    service = platform.controller
    identity = await guest(platform.entities, service)
    await rule_setup(service)
    lookups = [0]
    get = platform.activations.get

    async def counted(namespace: str, activation_id: str) -> Any:
        lookups[0] += 1
        return await get(namespace, activation_id)

    platform.activations.get = counted  # type: ignore[method-assign]
    tick = uuid.uuid4().hex
    assert await service.fire_trigger(identity, path("t"), {}, activation_id=tick) == tick
    assert lookups[0] == 1
    assert await service.fire_trigger(identity, path("t"), {}, activation_id=tick) == tick
    assert lookups[0] == 2
    await platform.activations.flush()
    records = await platform.activations.get("guest", tick)
    assert records is not None and records["activationId"] == tick
    lookups[0] = 0
    await service.set_rule_status(path("r"), INACTIVE)
    for replayed in (tick, uuid.uuid4().hex):
        assert await service.fire_trigger(identity, path("t"), {}, activation_id=replayed) is None
    assert lookups[0] == 0
