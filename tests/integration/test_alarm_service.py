"""The alarm timer service against a real SQLite entity store.

The fire callback is the seam to the controller; here it is `TriggerFireDouble`, a test double
that records every call and, like the real controller, treats the activation id as an
idempotency key. Most tests drive an injected `FakeClock` (advance it, `rearm()`, wait until the
service is idle); the every-second test runs on the real clock to measure fire lag.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from squall.abc import EntityStore, EntityWrite, JSONDict, StoredEntity, SubjectRecord
from squall.alarms import (
    Alarm,
    AlarmService,
    FireResult,
    RetryPolicy,
    activation_id_for,
    jitter_offset,
)
from squall.alarms.model import (
    MSG_FIRED_ONCE,
    MSG_LAST_CRON,
    MSG_LAST_INTERVAL,
    MSG_MAX_TRIGGERS,
)
from squall.alarms.service import ALARMS_COLLECTION, store_path
from squall.errors import ConflictError, StoreError
from squall.stores.sqlite import SqliteEntityStore

T0 = datetime(2030, 1, 7, 12, 0, 30, tzinfo=UTC)  # a Monday, 30 s past a minute
NS = "guest"
FAST_RETRY = RetryPolicy(
    failed_attempts=3, throttled_attempts=5, base_delay_s=0.01, max_delay_s=0.05
)


class FakeClock:
    """A settable UTC clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, now: datetime) -> None:
        self.now = now


@dataclass
class FireCall:
    alarm_id: str
    tick: datetime
    activation_id: str
    at_monotonic: float
    payload: JSONDict
    maybe_fired: bool


@dataclass
class TriggerFireDouble:
    """Test double of the controller's trigger fire (the service's FireCallback seam).

    Records every call; `results` (consumed in order) script the answers, then `default`.
    Like the real controller it is idempotent on the activation id: `activations` holds the
    ids it accepted, so a replayed tick shows up in `calls` but not twice in `activations`.
    """

    default: FireResult = field(default_factory=FireResult.fired)
    results: list[FireResult | BaseException] = field(default_factory=list)
    delay_s: dict[str, float] = field(default_factory=dict)  # per alarm id
    after_fire: Callable[[], None] | None = None
    hang: int = 0  # this many first calls never return
    calls: list[FireCall] = field(default_factory=list)
    activations: dict[str, datetime] = field(default_factory=dict)

    async def __call__(
        self, alarm: Alarm, tick: datetime, activation_id: str, *, maybe_fired: bool
    ) -> FireResult:
        self.calls.append(
            FireCall(
                alarm.id, tick, activation_id, time.monotonic(), dict(alarm.payload), maybe_fired
            )
        )
        if self.hang > 0:
            self.hang -= 1
            await asyncio.Event().wait()
        if alarm.id in self.delay_s:
            await asyncio.sleep(self.delay_s[alarm.id])
        outcome = self.results.pop(0) if self.results else self.default
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome.delivered:
            self.activations.setdefault(activation_id, tick)
        if self.after_fire is not None:
            self.after_fire()
        return outcome

    def ticks(self, alarm_id: str | None = None) -> list[datetime]:
        return [c.tick for c in self.calls if alarm_id is None or c.alarm_id == alarm_id]


class FlakyStore(EntityStore):
    """Test double wrapping a real store: `put` raises StoreError while `failing` is set."""

    def __init__(self, inner: EntityStore) -> None:
        self.inner = inner
        self.failing = False
        self.failed_puts = 0
        self.write_then_fail = 0  # this many next puts are written but reported as failed

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def get(self, collection: str, namespace: str, name: str) -> StoredEntity | None:
        return await self.inner.get(collection, namespace, name)

    async def put(
        self,
        collection: str,
        namespace: str,
        name: str,
        doc: JSONDict,
        expected_revision: int | None,
    ) -> StoredEntity:
        if self.failing:
            self.failed_puts += 1
            raise StoreError("injected: the entity store is unavailable")
        stored = await self.inner.put(collection, namespace, name, doc, expected_revision)
        if self.write_then_fail > 0:
            self.write_then_fail -= 1
            raise StoreError("injected: the connection dropped after the write")
        return stored

    async def delete(
        self, collection: str, namespace: str, name: str, expected_revision: int | None = None
    ) -> bool:
        return await self.inner.delete(collection, namespace, name, expected_revision)

    async def list(
        self,
        collection: str,
        namespace: str,
        *,
        skip: int = 0,
        limit: int = 30,
        prefix_match: bool = False,
    ) -> list[StoredEntity]:
        return await self.inner.list(
            collection, namespace, skip=skip, limit=limit, prefix_match=prefix_match
        )

    async def count(self, collection: str, namespace: str, *, prefix_match: bool = False) -> int:
        return await self.inner.count(collection, namespace, prefix_match=prefix_match)

    async def get_subject(self, uuid: str) -> SubjectRecord | None:
        return await self.inner.get_subject(uuid)

    async def get_subject_by_namespace(self, namespace: str) -> SubjectRecord | None:
        return await self.inner.get_subject_by_namespace(namespace)

    async def put_subject(self, record: SubjectRecord) -> None:
        await self.inner.put_subject(record)

    async def delete_subject(self, namespace: str) -> bool:
        return await self.inner.delete_subject(namespace)

    def iter_entities(self) -> AsyncIterator[StoredEntity]:
        return self.inner.iter_entities()

    def iter_subjects(self) -> AsyncIterator[SubjectRecord]:
        return self.inner.iter_subjects()

    async def restore(self, entity: StoredEntity) -> StoredEntity:
        return await self.inner.restore(entity)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEntityStore]:
    instance = SqliteEntityStore(tmp_path / "squall.db")
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


Factory = Callable[..., Awaitable[AlarmService]]


@pytest.fixture
async def services() -> AsyncIterator[Factory]:
    """Start alarm services; every one still open is closed at the end."""
    started: list[AlarmService] = []

    async def make(store: EntityStore, fire: TriggerFireDouble, **kwargs: Any) -> AlarmService:
        service = AlarmService(store, fire, **kwargs)
        await service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        await service.close()


def cron_alarm(trigger: str, cron: str, now: datetime, **params: Any) -> Alarm:
    return Alarm.from_params(NS, trigger, "cron", {"cron": cron, **params}, now=now)


async def advance(service: AlarmService, clock: FakeClock, to: datetime) -> None:
    clock.set(to)
    service.rearm()
    await service.wait_idle(timeout_s=5)


def at(minute: int, second: int = 0) -> datetime:
    """12:MM:SS on T0's day."""
    return T0.replace(minute=minute, second=second)


async def stored_doc(store: EntityStore, trigger: str) -> JSONDict | None:
    entity = await store.get(ALARMS_COLLECTION, store_path(NS), trigger)
    return None if entity is None else entity.doc


# ---------------------------------------------------------------------------------------------
# On time, on the real clock
# ---------------------------------------------------------------------------------------------


async def test_every_second_cron_fires_on_time_and_a_slow_fire_delays_no_one(
    store: SqliteEntityStore, services: Factory
) -> None:
    fire = TriggerFireDouble()
    service = await services(store, fire)
    # Start just after a second boundary so a 3.2 s window holds exactly 3 ticks.
    now = time.time()
    await asyncio.sleep(1.05 - (now - int(now)))
    ids = [f"every{i}" for i in range(5)]
    for name in ids:
        await service.create(cron_alarm(name, "* * * * * *", service.now()))
    fire.delay_s[f"{NS}/slow"] = 1.5  # this one's fires hang; the others must not notice
    await service.create(cron_alarm("slow", "* * * * * *", service.now()))
    await asyncio.sleep(3.2)

    lags: list[float] = []
    for name in ids:
        ticks = fire.ticks(f"{NS}/{name}")
        assert len(ticks) == 3, (name, ticks)
        assert [b - a for a, b in itertools.pairwise(ticks)] == [timedelta(seconds=1)] * 2
        for record in service.recent_fires(NS, name):
            assert record.outcome == "fired"
            assert 0 <= record.lag_ms < 50, record
            assert record.activation_id == activation_id_for(f"{NS}/{name}", record.tick)
            lags.append(record.lag_ms)
    lags.sort()
    print(
        f"\nalarm fire lag over {len(lags)} fires: p50 {lags[len(lags) // 2]:.2f} ms, "
        f"p99/max {lags[-1]:.2f} ms"
    )
    assert service.stats().lag_samples >= len(lags)
    # the slow alarm fires one tick at a time; its next tick waits for the fire to return
    slow = fire.ticks(f"{NS}/slow")
    assert 1 <= len(slow) <= 2
    assert len(set(slow)) == len(slow)


# ---------------------------------------------------------------------------------------------
# Kinds, on an injected clock
# ---------------------------------------------------------------------------------------------


async def test_interval_fires_at_start_then_every_n_minutes_aligned(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(store, fire, clock=clock)
    start = T0 + timedelta(seconds=60)
    alarm = Alarm.from_params(
        NS, "iv", "interval", {"minutes": 2, "startDate": start.isoformat()}, now=T0
    )
    await service.create(alarm)
    assert service.next_fire_times(service.get(NS, "iv") or alarm, 3) == [
        start,
        start + timedelta(minutes=2),
        start + timedelta(minutes=4),
    ]
    await advance(service, clock, start - timedelta(milliseconds=1))
    assert fire.calls == []
    await advance(service, clock, start)
    await advance(service, clock, start + timedelta(seconds=119))
    await advance(service, clock, start + timedelta(seconds=120, milliseconds=3))
    assert fire.ticks() == [start, start + timedelta(minutes=2)]
    assert [r.lag_ms for r in service.recent_fires(NS, "iv")] == [0.0, 3.0]


async def test_once_fires_once_then_is_inactive(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(store, fire, clock=clock)
    date = T0 + timedelta(seconds=10)
    await service.create(
        Alarm.from_params(
            NS, "one", "once", {"date": date.isoformat(), "trigger_payload": "hi"}, now=T0
        )
    )
    await advance(service, clock, date)
    await advance(service, clock, date + timedelta(hours=2))
    assert fire.ticks() == [date]
    assert fire.calls[0].payload == {"payload": "hi"}
    alarm = service.get(NS, "one")
    assert alarm is not None and not alarm.status.active
    assert alarm.status.reason is not None and alarm.status.reason.message == MSG_FIRED_ONCE
    view = service.read_view(alarm)
    assert view["config"] == {
        "name": "one",
        "namespace": NS,
        "payload": {"payload": "hi"},
        "date": "2030-01-07T12:00:40.000Z",
        "deleteAfterFire": "false",
    }
    assert view["status"]["active"] is False
    assert view["status"]["reason"] == {"kind": "AUTO", "message": MSG_FIRED_ONCE}
    assert view["next"] == []
    assert view["last_fire"]["activationId"] == activation_id_for(f"{NS}/one", date)
    doc = await stored_doc(store, "one")
    assert doc is not None and doc["status"]["active"] is False and doc["nextTick"] is None


async def test_once_delete_after_fire_rules_calls_back_and_removes_the_alarm(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    deletions: list[tuple[str, str]] = []

    async def delete_trigger(alarm: Alarm, mode: str) -> None:
        deletions.append((alarm.id, mode))

    service = await services(store, fire, clock=clock, on_delete_after_fire=delete_trigger)
    date = T0 + timedelta(minutes=1)
    await service.create(
        Alarm.from_params(
            NS, "bye", "once", {"date": date.isoformat(), "deleteAfterFire": "rules"}, now=T0
        )
    )
    await advance(service, clock, date)
    assert fire.ticks() == [date]
    assert deletions == [(f"{NS}/bye", "rules")]
    assert service.get(NS, "bye") is None
    assert await stored_doc(store, "bye") is None


async def test_read_view_of_a_cron_alarm(store: SqliteEntityStore, services: Factory) -> None:
    clock = FakeClock(T0)
    service = await services(store, TriggerFireDouble(), clock=clock)
    alarm = await service.create(
        cron_alarm(
            "c",
            "0 9 * * MON-FRI",
            T0,
            timezone="America/New_York",
            trigger_payload={"a": 1},
            stopDate="2030-02-01T00:00:00Z",
            misfire="fire_all",
        )
    )
    view = service.read_view(alarm)
    assert view["config"] == {
        "name": "c",
        "namespace": NS,
        "payload": {"a": 1},
        "cron": "0 9 * * MON-FRI",
        "timezone": "America/New_York",
        "startDate": None,
        "stopDate": "2030-02-01T00:00:00.000Z",
    }
    assert view["status"]["active"] is True and view["status"]["reason"] is None
    assert view["status"]["dateChanged"] == int(T0.timestamp() * 1000)
    assert view["status"]["dateChangedISO"] == "2030-01-07T12:00:30.000Z"
    # 09:00 EST is 14:00Z; Jan 7 2030 is a Monday and 14:00Z is still ahead
    assert view["next"][:3] == [
        "2030-01-07T14:00:00.000Z",
        "2030-01-08T14:00:00.000Z",
        "2030-01-09T14:00:00.000Z",
    ]
    assert view["misfire_policy"] == "fire_all" and view["paused"] is False
    assert view["last_fire"] is None


# ---------------------------------------------------------------------------------------------
# Lifecycle: pause, resume, update, delete, end conditions
# ---------------------------------------------------------------------------------------------


async def test_pause_and_resume(store: SqliteEntityStore, services: Factory) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(store, fire, clock=clock)
    await service.create(cron_alarm("p", "* * * * *", T0))
    await advance(service, clock, at(1))
    paused = await service.pause(NS, "p")
    assert paused.status.paused and paused.status.active and paused.next_tick is None
    await advance(service, clock, at(3, 10))
    assert fire.ticks() == [at(1)]
    assert service.read_view(paused)["next"] == []
    resumed = await service.resume(NS, "p")
    assert resumed.next_tick == at(4)  # the paused-over ticks are not made up
    await advance(service, clock, at(4))
    assert fire.ticks() == [at(1), at(4)]
    doc = await stored_doc(store, "p")
    assert doc is not None and doc["status"]["paused"] is False


async def test_delete_stops_fires(store: SqliteEntityStore, services: Factory) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(store, fire, clock=clock)
    await service.create(cron_alarm("d", "* * * * *", T0))
    await advance(service, clock, at(1))
    assert await service.delete(NS, "d") is True
    assert await service.delete(NS, "d") is False
    await advance(service, clock, at(5))
    assert fire.ticks() == [at(1)]
    assert service.list(NS) == [] and await stored_doc(store, "d") is None


async def test_stats_count_alarms_by_status_and_the_scheduled_ones_as_the_heap_holds_them(
    store: SqliteEntityStore, services: Factory
) -> None:
    # stats() counts from a flag per alarm instead of walking the heap (a metrics scrape holds
    # the loop meanwhile); the heap, walked here, is the truth it must agree with.
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(store, fire, clock=clock)

    def counts() -> tuple[int, int, int, int]:
        stats = service.stats()
        in_heap = sum(1 for item in service._heap if service._valid(item))
        assert stats.scheduled == in_heap
        return stats.alarms, stats.active, stats.paused, stats.scheduled

    for name in ("a", "b", "c", "d"):
        await service.create(cron_alarm(name, "* * * * *", T0))
    await service.create(Alarm.from_params(NS, "once", "once", {"date": at(2).isoformat()}, now=T0))
    assert counts() == (5, 5, 0, 5)
    await advance(service, clock, at(1))
    assert counts() == (5, 5, 0, 5)
    await service.pause(NS, "a")
    await service.update(NS, "b", {"cron": "*/5 * * * *"})
    await service.delete(NS, "c")
    assert counts() == (4, 3, 1, 3)
    await advance(service, clock, at(2))  # the once alarm fires and ends
    assert counts() == (4, 2, 1, 2)
    await service.resume(NS, "a")
    assert counts() == (4, 3, 0, 3)


async def test_update_reschedules_and_persists(store: SqliteEntityStore, services: Factory) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(store, fire, clock=clock)
    await service.create(cron_alarm("u", "*/10 * * * *", T0))
    updated = await service.update(NS, "u", {"cron": "*/2 * * * *", "trigger_payload": "x"})
    assert updated.next_tick == at(2) and updated.config_version == 2
    await advance(service, clock, at(2))
    assert fire.ticks() == [at(2)] and fire.calls[0].payload == {"payload": "x"}
    doc = await stored_doc(store, "u")
    assert doc is not None and doc["cron"] == "*/2 * * * *" and doc["nextTick"] == at(4).isoformat()
    with pytest.raises(ValueError, match="no updatable parameters were specified"):
        await service.update(NS, "u", {"minutes": 5})
    with pytest.raises(ConflictError):
        await service.create(cron_alarm("u", "* * * * *", clock()))


async def test_a_fire_keeps_its_state_beside_the_alarm_and_the_collector_lets_go_of_it(
    store: SqliteEntityStore, services: Factory
) -> None:
    # Why this looks inside: a new frozen Alarm per fire lived until the alarm's next fire and
    # at 1,000 fires a second filled the collector's older generations (20-120 ms pauses). The
    # fire path keeps the alarm object and a plain tuple of the fire state, which the
    # collector untracks; asking for the alarm builds it whole, with that state.
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(store, fire, clock=clock)
    await service.create(cron_alarm("state", "* * * * *", T0))
    entry = service._entries[f"{NS}/state"]
    config = entry.config
    for minute in (1, 2, 3):
        await advance(service, clock, at(minute))
    assert fire.ticks() == [at(1), at(2), at(3)]
    assert entry.config is config  # not copied by the fires
    gc.collect()
    assert entry._fired is not None and not gc.is_tracked(entry._fired)
    doc = await stored_doc(store, "state")  # written from the kept state (advance waits)
    assert doc is not None and doc["firesCount"] == 3 and doc["nextTick"] == at(4).isoformat()
    assert doc["lastFire"]["tick"] == at(3).isoformat()
    alarm = service.get(NS, "state")
    assert alarm is not None and alarm.fires_count == 3 and alarm.next_tick == at(4)
    assert alarm.last_fire is not None and alarm.last_fire.tick == at(3)
    assert alarm.last_fire.activation_id == activation_id_for(f"{NS}/state", at(3))


async def test_max_triggers_ends_the_alarm(store: SqliteEntityStore, services: Factory) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(store, fire, clock=clock)
    await service.create(cron_alarm("m", "* * * * *", T0, maxTriggers=2))
    for minute in (1, 2, 3, 4):
        await advance(service, clock, at(minute))
    assert fire.ticks() == [at(1), at(2)]
    alarm = service.get(NS, "m")
    assert alarm is not None and not alarm.status.active and alarm.fires_count == 2
    assert alarm.status.reason is not None and alarm.status.reason.message == MSG_MAX_TRIGGERS


async def test_stop_date_ends_cron_and_interval(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(store, fire, clock=clock)
    stop = at(2, 30).isoformat()
    await service.create(cron_alarm("c", "* * * * *", T0, stopDate=stop))
    await service.create(
        Alarm.from_params(
            NS,
            "i",
            "interval",
            {"minutes": 1, "startDate": at(1).isoformat(), "stopDate": stop},
            now=T0,
        )
    )
    for minute in (1, 2, 3, 4):
        await advance(service, clock, at(minute))
    assert fire.ticks(f"{NS}/c") == [at(1), at(2)]
    assert fire.ticks(f"{NS}/i") == [at(1), at(2)]
    cron, interval = service.get(NS, "c"), service.get(NS, "i")
    assert cron is not None and cron.status.reason is not None
    assert interval is not None and interval.status.reason is not None
    assert (cron.status.active, cron.status.reason.message) == (False, MSG_LAST_CRON)
    assert (interval.status.active, interval.status.reason.message) == (False, MSG_LAST_INTERVAL)


async def test_trigger_gone_disables_the_alarm_with_a_reason(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock = FakeClock(T0)
    fire = TriggerFireDouble(default=FireResult.trigger_gone(404))
    service = await services(store, fire, clock=clock)
    await service.create(cron_alarm("gone", "* * * * *", T0))
    await advance(service, clock, at(1))
    await advance(service, clock, at(5))
    assert fire.ticks() == [at(1)]
    alarm = service.get(NS, "gone")
    assert alarm is not None and not alarm.status.active
    assert service.read_view(alarm)["status"]["reason"] == {
        "kind": "AUTO",
        "statusCode": 404,
        "message": "Automatically disabled after receiving a 404 status code when firing the "
        "trigger",
    }
    await service.close()
    again = await services(store, fire, clock=FakeClock(at(9)))
    await again.wait_idle()
    assert fire.ticks() == [at(1)]  # the disabled alarm stays disabled across a restart
    assert again.stats().scheduled == 0


# ---------------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------------


async def test_throttled_and_failed_fires_are_retried_with_the_same_activation_id(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock = FakeClock(T0)
    fire = TriggerFireDouble(
        results=[
            FireResult.throttled(),
            FireResult.failed("503"),
            RuntimeError("connection reset"),
            FireResult.fired(),
        ]
    )
    service = await services(store, fire, clock=clock, retry=FAST_RETRY)
    await service.create(cron_alarm("r", "* * * * *", T0))
    await advance(service, clock, at(1))
    assert len(fire.calls) == 4
    assert {c.activation_id for c in fire.calls} == {activation_id_for(f"{NS}/r", at(1))}
    (record,) = service.recent_fires(NS, "r")
    assert (record.outcome, record.attempts) == ("fired", 4)
    assert service.stats().retries == 3


async def test_a_fire_that_never_answers_times_out_and_is_retried(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble(hang=1)
    service = await services(store, fire, clock=clock, retry=FAST_RETRY, fire_timeout_s=0.05)
    await service.create(cron_alarm("h", "* * * * *", T0))
    await advance(service, clock, at(1))
    assert len(fire.calls) == 2 and fire.calls[0].activation_id == fire.calls[1].activation_id
    (record,) = service.recent_fires(NS, "h")
    assert (record.outcome, record.attempts) == ("fired", 2)


async def test_a_once_alarm_whose_fire_keeps_failing_is_disabled_with_the_reason(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock = FakeClock(T0)
    fire = TriggerFireDouble(default=FireResult.failed("controller down"))
    service = await services(store, fire, clock=clock, retry=FAST_RETRY)
    await service.create(Alarm.from_params(NS, "o", "once", {"date": at(1).isoformat()}, now=T0))
    await advance(service, clock, at(1))
    alarm = service.get(NS, "o")
    assert alarm is not None and not alarm.status.active and alarm.status.reason is not None
    assert alarm.status.reason.message == (
        "Automatically disabled after failing to fire the trigger: controller down"
    )


async def test_a_tick_that_keeps_failing_is_given_up_and_the_alarm_goes_on(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock = FakeClock(T0)
    fire = TriggerFireDouble(default=FireResult.failed("controller down"))
    service = await services(store, fire, clock=clock, retry=FAST_RETRY)
    await service.create(cron_alarm("f", "* * * * *", T0))
    await advance(service, clock, at(1))
    assert len(fire.calls) == FAST_RETRY.failed_attempts
    alarm = service.get(NS, "f")
    assert alarm is not None and alarm.status.active and alarm.next_tick == at(2)
    assert alarm.last_fire is not None and alarm.last_fire.outcome == "failed"
    assert alarm.fires_count == 0 and service.stats().not_delivered == 1


# ---------------------------------------------------------------------------------------------
# Restarts: misfire policies, exactly once
# ---------------------------------------------------------------------------------------------


async def _missed_ten_minutes(
    store: SqliteEntityStore, services: Factory, **params: Any
) -> tuple[AlarmService, TriggerFireDouble]:
    """Create an every-minute alarm at 12:00:30, stop, start again at 12:10:30."""
    first = await services(store, TriggerFireDouble(), clock=FakeClock(T0))
    await first.create(cron_alarm("miss", "* * * * *", T0, **params))
    await first.close()
    fire = TriggerFireDouble()
    clock = FakeClock(at(10, 30))
    second = await services(store, fire, clock=clock)
    await second.wait_idle(timeout_s=10)
    return second, fire


async def test_a_restart_after_an_outage_logs_one_summary_not_a_line_per_alarm(
    store: SqliteEntityStore, services: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    first = await services(store, TriggerFireDouble(), clock=FakeClock(T0))
    for i in range(25):
        await first.create(cron_alarm(f"o{i}", "* * * * *", T0, misfire="skip"))
    await first.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="squall.alarms.service"):
        fire = TriggerFireDouble()
        second = await services(store, fire, clock=FakeClock(at(10, 30)))
        await second.wait_idle(timeout_s=10)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum("25 alarms missed ticks" in line for line in lines) == 1
    assert not any("guest/o3:" in line for line in lines)  # no per-alarm line at INFO
    assert fire.calls == [] and second.stats().dropped_ticks == 25 * 10


async def test_restart_skip_fires_nothing_extra(
    store: SqliteEntityStore, services: Factory
) -> None:
    service, fire = await _missed_ten_minutes(store, services, misfire="skip")
    assert fire.calls == []
    alarm = service.get(NS, "miss")
    assert alarm is not None and alarm.next_tick == at(11)
    assert service.stats().dropped_ticks == 10
    doc = await stored_doc(store, "miss")
    assert doc is not None and doc["nextTick"] == at(11).isoformat()


async def test_restart_fire_once_fires_one_catch_up_for_the_latest_missed_tick(
    store: SqliteEntityStore, services: Factory
) -> None:
    service, fire = await _missed_ten_minutes(store, services)  # fire_once is the default
    assert [(c.tick, c.activation_id) for c in fire.calls] == [
        (at(10), activation_id_for(f"{NS}/miss", at(10)))
    ]
    (record,) = service.recent_fires(NS, "miss")
    assert record.catchup and record.lag_ms == 30_000
    stats = service.stats()
    assert (stats.catchup_fires, stats.dropped_ticks, stats.missed_ticks) == (1, 9, 10)
    alarm = service.get(NS, "miss")
    assert alarm is not None and alarm.next_tick == at(11)


@pytest.mark.parametrize(("window", "first_minute"), [(None, 1), (300, 6)])
async def test_restart_fire_all_fires_each_missed_tick_in_the_window_once_in_order(
    store: SqliteEntityStore, services: Factory, window: int | None, first_minute: int
) -> None:
    params: dict[str, Any] = {"misfire": "fire_all"}
    if window is not None:
        params["catchupWindowSeconds"] = window
    service, fire = await _missed_ten_minutes(store, services, **params)
    expected = [at(m) for m in range(first_minute, 11)]
    assert fire.ticks() == expected
    assert [c.activation_id for c in fire.calls] == [
        activation_id_for(f"{NS}/miss", t) for t in expected
    ]
    assert service.stats().dropped_ticks == first_minute - 1
    alarm = service.get(NS, "miss")
    assert alarm is not None and alarm.next_tick == at(11) and alarm.fires_count == len(expected)


async def test_clean_restart_fires_nothing_twice(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    first = await services(store, fire, clock=clock)
    await first.create(cron_alarm("clean", "* * * * *", T0))
    await advance(first, clock, at(1))
    await first.close()
    second = await services(store, fire, clock=FakeClock(at(1, 5)))
    await second.wait_idle()
    assert fire.ticks() == [at(1)]
    alarm = second.get(NS, "clean")
    assert alarm is not None and alarm.next_tick == at(2) and alarm.last_fire is not None


async def test_a_restart_arms_alarms_undecoded_then_decodes_them_and_drops_an_unreadable_one(
    store: SqliteEntityStore, services: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    first = await services(store, fire, clock=clock)
    for name in ("good", "broken", "other"):
        await first.create(cron_alarm(name, "* * * * *", T0))
    await first.close()
    # Its schedule state (status, next tick) still reads; the rest of the document does not.
    entity = await store.get(ALARMS_COLLECTION, store_path(NS), "broken")
    assert entity is not None
    await store.put(
        ALARMS_COLLECTION, store_path(NS), "broken", {**entity.doc, "kind": "bogus"},
        entity.revision,
    )  # fmt: skip
    clock = FakeClock(T0 + timedelta(seconds=5))
    second = await services(store, fire, clock=clock)
    stats = second.stats()
    # Armed from the schedule state alone: the broken document was not decoded at start.
    assert (stats.alarms, stats.active, stats.scheduled, stats.internal_errors) == (3, 3, 3, 0)
    assert not any(e.decoded for e in second._entries.values())
    with caplog.at_level(logging.ERROR, logger="squall.alarms.service"):
        await second.wait_idle()  # no tick is due: the decoder, after start, finds it
    assert all(e.decoded for e in second._entries.values()) and len(second._entries) == 2
    assert not fire.calls and second.get(NS, "broken") is None
    await advance(second, clock, at(1))
    assert sorted(c.alarm_id for c in fire.calls) == [f"{NS}/good", f"{NS}/other"]
    assert second.get(NS, "broken") is None
    assert [a.trigger for a in second.list(NS)] == ["good", "other"]
    assert second.stats().internal_errors == 1
    assert any("unreadable alarm document guest/broken" in r.getMessage() for r in caplog.records)


async def test_crash_after_fire_before_persist_refires_the_same_tick_with_the_same_id(
    store: SqliteEntityStore, services: Factory
) -> None:
    """The store goes down right after a fire and the process dies before it comes back.

    The fire happened but its next_tick was never written. The next start sees the tick as
    missed and fires it again with the SAME activation id, which the idempotent controller
    (the double's `activations`) records once.
    """
    flaky = FlakyStore(store)
    clock, fire = FakeClock(T0), TriggerFireDouble()
    first = await services(flaky, fire, clock=clock)
    await first.create(cron_alarm("crash", "* * * * *", T0))

    def store_goes_down() -> None:
        flaky.failing = True

    fire.after_fire = store_goes_down
    await advance(first, clock, at(1, 0) + timedelta(milliseconds=10))
    assert fire.ticks() == [at(1)]
    await first.close()  # the final write fails too: the store is still down
    assert flaky.failed_puts >= 2
    doc = await stored_doc(store, "crash")
    assert doc is not None and doc["nextTick"] == at(1).isoformat()  # nothing was persisted

    fire.after_fire = None
    second = await services(store, fire, clock=FakeClock(at(1, 5)))
    await second.wait_idle()
    assert fire.ticks() == [at(1), at(1)]
    assert fire.calls[0].activation_id == fire.calls[1].activation_id
    assert list(fire.activations) == [activation_id_for(f"{NS}/crash", at(1))]
    doc = await stored_doc(store, "crash")
    assert doc is not None and doc["nextTick"] == at(2).isoformat()


async def test_store_outage_does_not_stop_the_timer_and_writes_catch_up(
    store: SqliteEntityStore, services: Factory
) -> None:
    flaky = FlakyStore(store)
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(flaky, fire, clock=clock, retry=FAST_RETRY)
    await service.create(cron_alarm("out", "* * * * *", T0))
    flaky.failing = True
    await advance(service, clock, at(1))
    await advance(service, clock, at(2))
    assert fire.ticks() == [at(1), at(2)]
    flaky.failing = False
    for _ in range(100):  # the background writer retries within ~0.01-0.05 s
        doc = await stored_doc(store, "out")
        if doc is not None and doc["nextTick"] == at(3).isoformat():
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the alarm's state was not written after the store came back")
    assert service.stats().persist_failures >= 1  # batches that failed


async def test_a_write_that_landed_but_reported_failure_is_reconciled(
    store: SqliteEntityStore, services: Factory
) -> None:
    flaky = FlakyStore(store)
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(flaky, fire, clock=clock, retry=FAST_RETRY)
    await service.create(cron_alarm("amb", "* * * * *", T0))
    flaky.write_then_fail = 1
    await advance(service, clock, at(1))
    for _ in range(100):  # the background writer hits the revision conflict and resolves it
        doc = await stored_doc(store, "amb")
        entity = await store.get(ALARMS_COLLECTION, store_path(NS), "amb")
        if entity is not None and entity.revision == 3:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the conflict after an ambiguous write was not resolved")
    assert doc is not None and doc["nextTick"] == at(2).isoformat()
    await advance(service, clock, at(2))
    assert fire.ticks() == [at(1), at(2)] and service.stats().internal_errors == 0


async def test_a_change_made_in_the_store_by_someone_else_is_adopted(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(store, fire, clock=clock)
    await service.create(cron_alarm("ext", "* * * * *", T0))
    entity = await store.get(ALARMS_COLLECTION, store_path(NS), "ext")
    assert entity is not None
    theirs = {
        **entity.doc,
        "cron": "*/5 * * * *",
        "configVersion": 99,
        "nextTick": at(5).isoformat(),
    }
    await store.put(ALARMS_COLLECTION, store_path(NS), "ext", theirs, entity.revision)
    await advance(service, clock, at(1))  # fires from memory; the write conflicts; adopt
    alarm = service.get(NS, "ext")
    assert alarm is not None and alarm.cron == "*/5 * * * *" and alarm.next_tick == at(5)
    assert alarm.last_fire is not None and alarm.last_fire.tick == at(1)
    for minute in (2, 3, 4, 5):
        await advance(service, clock, at(minute))
    assert fire.ticks() == [at(1), at(5)]


# ---------------------------------------------------------------------------------------------
# Jitter, storage layout
# ---------------------------------------------------------------------------------------------


async def test_jitter_delays_each_tick_deterministically(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(store, fire, clock=clock)
    alarm = await service.create(cron_alarm("j", "* * * * *", T0, jitterSeconds=20))
    offset = jitter_offset(alarm.id, at(1), 20)
    assert timedelta(0) <= offset < timedelta(seconds=20)
    due = at(1) + offset
    assert service.next_fire_times(alarm, 1) == [due]
    await advance(service, clock, due - timedelta(milliseconds=1))
    assert fire.calls == []
    await advance(service, clock, due)
    assert fire.ticks() == [at(1)]
    (record,) = service.recent_fires(NS, "j")
    assert record.due == due and record.lag_ms == 0
    assert record.activation_id == activation_id_for(alarm.id, at(1))  # from the tick, not due
    await service.close()
    replay = await services(store, fire, clock=FakeClock(T0))
    stored = replay.get(NS, "j")
    assert stored is not None and replay.next_fire_times(stored, 1) == [
        at(2) + jitter_offset(alarm.id, at(2), 20)
    ]


async def test_only_ticks_that_may_have_fired_ask_for_the_ledger(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    first = await services(store, fire, clock=clock, retry=FAST_RETRY)
    await first.create(cron_alarm("led", "* * * * *", T0))
    await advance(first, clock, at(1))  # armed by this service: never fired before
    fire.results = [FireResult.failed("boom")]
    await advance(first, clock, at(2))  # failed, then retried: the first try may have fired
    await first.close()
    second = await services(store, fire, clock=FakeClock(at(2, 30)))
    second.rearm()
    await second.wait_idle()
    assert [(c.tick, c.maybe_fired) for c in fire.calls] == [
        (at(1), False),
        (at(2), False),
        (at(2), True),
    ]
    third_clock = FakeClock(at(2, 30))
    await second.close()
    third = await services(store, fire, clock=third_clock)
    await advance(third, third_clock, at(3))  # restored: a crashed run may have fired it
    await advance(third, third_clock, at(4))
    assert [(c.tick, c.maybe_fired) for c in fire.calls[3:]] == [(at(3), True), (at(4), False)]


async def test_a_burst_of_due_ticks_waits_in_the_heap_not_as_tasks(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(store, fire, clock=clock, max_concurrent_fires=3)
    for i in range(30):
        await service.create(cron_alarm(f"b{i}", "* * * * *", T0))
        fire.delay_s[f"{NS}/b{i}"] = 0.005
    clock.set(at(1))
    service.rearm()
    most_in_flight = 0
    for _ in range(2000):  # bounded: 30 fires of 5 ms, 3 at a time, take ~50 ms
        await asyncio.sleep(0.001)
        most_in_flight = max(most_in_flight, service.stats().in_flight)
        if len(fire.calls) == 30 and service.stats().in_flight == 0:
            break
    await service.wait_idle()
    assert sorted(c.alarm_id for c in fire.calls) == sorted(f"{NS}/b{i}" for i in range(30))
    assert 1 <= most_in_flight <= 3


async def test_catch_up_ticks_this_process_planned_skip_the_ledger(
    store: SqliteEntityStore, services: Factory
) -> None:
    """Fallen behind after its own fire (the clock jumps while the fire runs), the service
    fires the missed ticks of a fire_all alarm without asking the ledger: no other run can
    have fired ticks due after this one started. A restart's late ticks still ask it."""
    clock = FakeClock(T0)
    fire = TriggerFireDouble(after_fire=lambda: clock.set(max(clock.now, at(3, 30))))
    service = await services(store, fire, clock=clock)
    await service.create(cron_alarm("behind", "* * * * *", T0, misfire="fire_all"))
    await advance(service, clock, at(1))
    assert [(c.tick, c.maybe_fired) for c in fire.calls] == [
        (at(1), False),
        (at(2), False),  # caught up late, planned by this process
        (at(3), False),
    ]
    await service.close()
    restarted = await services(store, fire, clock=FakeClock(at(5, 30)))
    restarted.rearm()
    await restarted.wait_idle(timeout_s=5)
    assert fire.calls[3].tick == at(4) and fire.calls[3].maybe_fired  # restored: may have fired


async def test_behind_shows_how_late_the_oldest_waiting_tick_is(
    store: SqliteEntityStore, services: Factory
) -> None:
    clock, fire = FakeClock(T0), TriggerFireDouble(hang=1)
    service = await services(store, fire, clock=clock, max_concurrent_fires=1)
    for name in ("first", "second"):
        await service.create(cron_alarm(name, "* * * * *", T0))
    assert service.stats().behind_ms == 0.0  # nothing due yet
    clock.set(at(1, 30))  # both ticks of 12:01 are due, 30 s ago
    service.rearm()
    for _ in range(500):  # bounded: the first fire takes the only slot at once
        if fire.calls:
            break
        await asyncio.sleep(0.001)
    assert len(fire.calls) == 1  # it hangs: the other tick waits in the heap for the slot
    assert service.stats().behind_ms == 30_000.0
    clock.set(at(1, 31))
    assert service.stats().behind_ms == 31_000.0
    with pytest.raises(TimeoutError):
        await service.wait_idle(timeout_s=0.2)  # the hung fire holds the slot, so no more
    # The slot comes back when the hung fire times out; here: a new service on the same store
    # is on time once it has fired what was due.
    await service.close()
    fire.hang = 0
    again = await services(store, fire, clock=clock)
    again.rearm()
    await again.wait_idle(timeout_s=5)
    assert again.stats().behind_ms == 0.0


class CountingStore(FlakyStore):
    """A real store that counts `put_many` calls and the writes they carry."""

    def __init__(self, inner: EntityStore) -> None:
        super().__init__(inner)
        self.batches: list[int] = []

    async def put_many(self, writes: Sequence[EntityWrite]) -> list[StoredEntity | ConflictError]:
        self.batches.append(len(writes))
        return await self.inner.put_many(writes)


async def test_the_state_of_a_burst_of_fires_is_written_in_a_few_batches(
    store: SqliteEntityStore, services: Factory
) -> None:
    counting = CountingStore(store)
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(counting, fire, clock=clock, write_batch=40)
    for i in range(100):
        await service.create(cron_alarm(f"w{i}", "* * * * *", T0))
    await advance(service, clock, at(1))
    assert len(fire.calls) == 100
    assert sum(counting.batches) == 100 and max(counting.batches) <= 40
    assert len(counting.batches) <= 6  # about three full batches, not a write per fire
    for i in (0, 57, 99):
        doc = await stored_doc(store, f"w{i}")
        assert doc is not None and doc["nextTick"] == at(2).isoformat()


async def test_full_batches_of_state_are_written_without_the_gathering_delay(
    store: SqliteEntityStore, services: Factory
) -> None:
    """The writer waits `write_delay_s` only for a batch to gather: with a full batch (or more)
    changed, it writes at once, so a backlog of changed alarms drains at the store's pace."""
    counting = CountingStore(store)
    clock, fire = FakeClock(T0), TriggerFireDouble()
    service = await services(counting, fire, clock=clock, write_batch=40, write_delay_s=4.0)
    for i in range(100):
        await service.create(cron_alarm(f"g{i}", "* * * * *", T0))
    clock.set(at(1))
    service.rearm()  # not wait_idle: that waits for the last, partial batch too (4 s)
    for _ in range(100):  # bounded: 2 s, against a 4 s gathering delay
        if sum(counting.batches) >= 80:
            break
        await asyncio.sleep(0.02)
    assert len(fire.calls) == 100
    assert sum(counting.batches) >= 80, counting.batches  # the two full batches, at once
    assert max(counting.batches) <= 40


async def test_alarms_live_beside_trigger_entities_of_the_same_name(
    store: SqliteEntityStore, services: Factory
) -> None:
    await store.put("triggers", NS, "t", {"name": "t"}, None)
    service = await services(store, TriggerFireDouble(), clock=FakeClock(T0))
    await service.create(cron_alarm("t", "* * * * *", T0))
    trigger = await store.get("triggers", NS, "t")
    assert trigger is not None and trigger.doc == {"name": "t"}
    assert await stored_doc(store, "t") is not None
