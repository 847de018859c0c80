"""Alarm shards across schedulers: ownership, hand-over by rebalance, fencing.

Two AlarmService instances ("schedulers" a and b) share one SQLite entity store file (each
through its own store instance and connection) and one injected clock; a mutable shard map
says who owns what. Their fires go to `Ledger`, a test double of the controller's trigger fire
shared by both, which keeps the fire ledger (activation id -> who fired it) as the controller
does: a call with `maybe_fired` for an id already fired is dropped (the ledger check works), a
call WITHOUT `maybe_fired` for such an id is a double fire the service let through.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from squall.abc import EntityWrite, StoredEntity
from squall.alarms import (
    Alarm,
    AlarmService,
    FireCallback,
    FireResult,
    RetryPolicy,
    activation_id_for,
)
from squall.alarms.service import NotOwner
from squall.alarms.shards import ShardOwnership, alarm_shard
from squall.errors import ConflictError, StoreError
from squall.stores.sqlite import SqliteEntityStore

T0 = datetime(2030, 1, 7, 12, 0, 30, tzinfo=UTC)
NS = "guest"
SHARDS = 8
EVERY_MINUTE = "* * * * *"


def at(minute: int, second: float = 0) -> datetime:
    return T0.replace(minute=minute, second=0) + timedelta(seconds=second)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Call:
    member: str
    alarm_id: str
    tick: datetime
    activation_id: str
    maybe_fired: bool


@dataclass
class Ledger:
    """The controller's idempotent trigger fire, shared by every scheduler."""

    fired: dict[str, tuple[str, str, datetime]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    dropped: list[Call] = field(default_factory=list)  # duplicates the ledger check caught
    doubles: list[Call] = field(default_factory=list)  # duplicates that skipped the check
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_calls(self, count: int, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.calls) < count:
                self.called.clear()
                await self.called.wait()

    def callback(self, member: str) -> FireCallback:
        async def fire(
            alarm: Alarm, tick: datetime, activation_id: str, *, maybe_fired: bool
        ) -> FireResult:
            call = Call(member, alarm.id, tick, activation_id, maybe_fired)
            self.calls.append(call)
            self.called.set()
            assert activation_id == activation_id_for(alarm.id, tick)
            if activation_id in self.fired:
                (self.dropped if maybe_fired else self.doubles).append(call)
            else:
                self.fired[activation_id] = (member, alarm.id, tick)
            return FireResult.fired()

        return fire

    def ticks(self, trigger: str) -> list[tuple[str, datetime]]:
        """(who fired it, tick) of every fired tick of the alarm, in tick order."""
        found = [(m, t) for m, a, t in self.fired.values() if a == f"{NS}/{trigger}"]
        return sorted(found, key=lambda item: item[1])


class Shards:
    """The placement's answer, mutable: shard -> member."""

    def __init__(self) -> None:
        self.owner: dict[int, str] = {}

    def assign(self, member: str, shards: range | list[int]) -> None:
        for shard in shards:
            self.owner[shard] = member

    def owns(self, member: str) -> Callable[[str, str], bool]:
        return lambda namespace, trigger: (
            self.owner.get(alarm_shard(namespace, trigger, SHARDS)) == member
        )


class FailingWrites(SqliteEntityStore):
    """The real store, whose batched state writes fail while `failing` is set."""

    failing = False

    async def put_many(self, writes: Sequence[EntityWrite]) -> list[StoredEntity | ConflictError]:
        if FailingWrites.failing:
            raise StoreError("injected: state writes fail")
        return await super().put_many(writes)


Factory = Callable[..., Awaitable[AlarmService]]


@pytest.fixture
async def scheduler(tmp_path: Path) -> AsyncIterator[Factory]:
    """Start an alarm service with its own store instance on the shared database file."""
    opened: list[tuple[AlarmService, SqliteEntityStore]] = []

    async def make(
        member: str,
        ledger: Ledger,
        shards: Shards,
        fire: FireCallback | None = None,
        store_type: type[SqliteEntityStore] = SqliteEntityStore,
        **kwargs: Any,
    ) -> AlarmService:
        store = store_type(tmp_path / "shared.db")
        await store.start()
        fire = fire or ledger.callback(member)
        service = AlarmService(store, fire, owns=shards.owns(member), **kwargs)
        await service.start()
        opened.append((service, store))
        return service

    yield make
    for service, store in opened:
        await service.close()
        await store.close()


async def advance(clock: FakeClock, to: datetime, *services: AlarmService) -> None:
    clock.now = to
    for service in services:
        service.rearm()
    for service in services:
        await service.wait_idle(timeout_s=5)


def cron(trigger: str, **params: Any) -> Alarm:
    return Alarm.from_params(NS, trigger, "cron", {"cron": EVERY_MINUTE, **params}, now=T0)


def split_names(count: int) -> tuple[list[str], list[str]]:
    """Trigger names in shards 0-3 and in shards 4-7."""
    names = [f"t{i}" for i in range(count)]
    low = [n for n in names if alarm_shard(NS, n, SHARDS) < SHARDS // 2]
    high = [n for n in names if n not in low]
    assert low and high, "the hash must spread a few names over both halves"
    return low, high


def test_alarm_shard_is_stable_and_spread() -> None:
    # Fixed values: the shard must not depend on the process (Python's hash() is salted).
    assert alarm_shard("guest", "t0", 16) == alarm_shard("guest", "t0", 16)
    assert [alarm_shard("guest", f"t{i}", 16) for i in range(6)] == [
        alarm_shard("guest", f"t{i}", 16) for i in range(6)
    ]
    assert alarm_shard("guest", "hello", 1) == 0
    counts = [0] * 8
    for i in range(4000):
        counts[alarm_shard("ns", f"trigger-{i}", 8)] += 1
    assert min(counts) > 400, counts  # about 500 each
    with pytest.raises(ValueError, match="at least 1"):
        alarm_shard("guest", "t", 0)


def test_alarm_shard_known_values() -> None:
    """blake2b(b"guest/t0", digest_size=8), big-endian, mod shards: pinned, so a change of the
    function (which would move every alarm at an upgrade) fails here."""
    import hashlib

    value = int.from_bytes(hashlib.blake2b(b"guest/t0", digest_size=8).digest(), "big")
    assert alarm_shard("guest", "t0", 7) == value % 7
    assert alarm_shard("guest", "t0", 1024) == value % 1024


def test_shard_ownership_is_the_owns_callable() -> None:
    ownership = ShardOwnership(SHARDS, [0, 1])
    names = [f"t{i}" for i in range(40)]
    assert [ownership(NS, n) for n in names] == [alarm_shard(NS, n, SHARDS) < 2 for n in names]
    ownership.assign(range(SHARDS))
    assert all(ownership(NS, n) for n in names) and ownership.owned == frozenset(range(SHARDS))
    ownership.assign([])
    assert not any(ownership(NS, n) for n in names)
    with pytest.raises(ValueError, match=r"\[8\] are not in 0..7"):
        ownership.assign([8])


async def test_each_scheduler_holds_creates_and_fires_only_its_half(
    scheduler: Factory,
) -> None:
    clock, ledger, shards = FakeClock(T0), Ledger(), Shards()
    shards.assign("a", range(0, 4))
    shards.assign("b", range(4, 8))
    a = await scheduler("a", ledger, shards, clock=clock)
    b = await scheduler("b", ledger, shards, clock=clock)
    low, high = split_names(12)
    for name in low:
        await a.create(cron(name))
        with pytest.raises(NotOwner, match="does not own"):
            await b.create(cron(name))
    for name in high:
        await b.create(cron(name))
        with pytest.raises(NotOwner):
            await a.create(cron(name))
    for name in low:  # changes of an alarm held elsewhere are refused too, not half done
        with pytest.raises(NotOwner):
            await b.pause(NS, name)
        with pytest.raises(NotOwner):
            await b.update(NS, name, {"trigger_payload": {"x": 1}})
        with pytest.raises(NotOwner):
            await b.delete(NS, name)
    assert (a.stats().alarms, b.stats().alarms) == (len(low), len(high))

    await advance(clock, at(1), a, b)
    for name in low:
        assert ledger.ticks(name) == [("a", at(1))]
    for name in high:
        assert ledger.ticks(name) == [("b", at(1))]
    assert ledger.doubles == [] and ledger.dropped == []

    # A restart loads only the owned half (the others are not even decoded).
    a2 = await scheduler("a", ledger, shards, clock=clock)
    assert sorted(al.trigger for al in a2.list(NS)) == sorted(low)
    assert all(a2.get(NS, name) is None for name in high)


async def test_rebalance_hands_alarms_over_without_firing_a_tick_twice(
    scheduler: Factory,
) -> None:
    """a fires 12:01-12:03 but its state writes fail (the store keeps next tick 12:01); the
    shards move to b at 12:03:00.5; b takes the alarms up from the stale store and replays by
    policy: every tick a fired is caught by the ledger, including the on-time 12:03 at the end
    of b's catch-up chain; ticks from 12:04 on are b's."""
    clock, ledger, shards = FakeClock(T0), Ledger(), Shards()
    shards.assign("a", range(SHARDS))
    a = await scheduler("a", ledger, shards, clock=clock, store_type=FailingWrites)
    b = await scheduler("b", ledger, shards, clock=clock)
    policies = {"once": "fire_once", "all": "fire_all", "skip": "skip"}
    for name, policy in policies.items():
        await a.create(cron(name, misfire=policy, catchupWindowSeconds=600))
    FailingWrites.failing = True
    try:
        for minute in (1, 2, 3):
            await advance(clock, at(minute), a, b)
    finally:
        FailingWrites.failing = False
    assert all(ledger.ticks(n) == [("a", at(m)) for m in (1, 2, 3)] for n in policies)

    clock.now = at(3, 0.5)
    shards.assign("b", range(SHARDS))
    await b.rebalance()  # reads the stale store: next tick 12:01
    await a.rebalance()  # releases: writes its state (next 12:04) behind b's back
    assert (a.stats().alarms, b.stats().alarms) == (0, 3)
    await advance(clock, at(3, 0.5), a, b)

    assert ledger.doubles == []
    replayed = {(c.alarm_id, c.tick) for c in ledger.dropped}
    assert all(c.member == "b" and c.maybe_fired for c in ledger.dropped)
    # fire_all replays 12:01, 12:02 and 12:03; fire_once the last missed (12:02) and 12:03;
    # skip only the tick still on time, 12:03: each one found in the ledger
    assert replayed == {
        (f"{NS}/all", at(1)),
        (f"{NS}/all", at(2)),
        (f"{NS}/all", at(3)),
        (f"{NS}/once", at(2)),
        (f"{NS}/once", at(3)),
        (f"{NS}/skip", at(3)),
    }
    await advance(clock, at(4), a, b)
    for name in policies:
        assert ledger.ticks(name) == [("a", at(m)) for m in (1, 2, 3)] + [("b", at(4))]
    assert ledger.doubles == []


async def test_ticks_missed_during_a_handover_follow_the_misfire_policy(
    scheduler: Factory,
) -> None:
    """The shards leave a at 12:01:30 and reach b only at 12:04:30: a holds 12:02 back (not its
    own any more, logged once) and drops the alarms at rebalance; b fires the gap by policy."""
    clock, ledger, shards = FakeClock(T0), Ledger(), Shards()
    shards.assign("a", range(SHARDS))
    a = await scheduler("a", ledger, shards, clock=clock)
    b = await scheduler("b", ledger, shards, clock=clock)
    policies = {"once": "fire_once", "all": "fire_all", "skip": "skip"}
    for name, policy in policies.items():
        await a.create(cron(name, misfire=policy, catchupWindowSeconds=600))
    await advance(clock, at(1), a, b)

    shards.owner.clear()  # a's lease ran out; nobody owns the shards for a while
    await advance(clock, at(2), a, b)
    assert a.stats().held_back == 3
    assert all(ledger.ticks(n) == [("a", at(1))] for n in policies)
    await a.rebalance()
    assert a.stats().alarms == 0 and a.stats().held_back == 0

    clock.now = at(4, 30)
    shards.assign("b", range(SHARDS))
    await b.rebalance()
    await advance(clock, at(4, 30), a, b)
    gap = {n: [t for m, t in ledger.ticks(n) if m == "b"] for n in policies}
    assert gap == {"all": [at(2), at(3), at(4)], "once": [at(4)], "skip": []}
    await advance(clock, at(5), a, b)
    assert all(ledger.ticks(n)[-1] == ("b", at(5)) for n in policies)
    assert ledger.doubles == [] and ledger.dropped == []
    assert b.stats().missed_ticks >= 3 + 1 + 3  # all: 3 caught up; once: 1 + 2 dropped; skip: 3


async def test_without_a_valid_lease_nothing_fires_and_ticks_wait(scheduler: Factory) -> None:
    clock, ledger, shards = FakeClock(T0), Ledger(), Shards()
    shards.assign("a", range(SHARDS))
    fence = {"valid": True}
    a = await scheduler(
        "a", ledger, shards, clock=clock, may_fire=lambda: fence["valid"], fence_retry_s=0.02
    )
    await a.create(cron("fenced"))
    await advance(clock, at(1), a)
    assert ledger.ticks("fenced") == [("a", at(1))]

    fence["valid"] = False
    await advance(clock, at(2), a)
    await advance(clock, at(3), a)
    assert ledger.ticks("fenced") == [("a", at(1))]
    assert a.stats().held_back == 1
    alarm = a.get(NS, "fenced")
    assert alarm is not None and alarm.next_tick == at(2)  # the tick stays the alarm's

    fence["valid"] = True  # the lease is back: the held tick goes through the misfire policy
    clock.now = at(3, 10)
    a.rearm()
    await ledger.wait_calls(2)
    await a.wait_idle(timeout_s=5)
    assert ledger.ticks("fenced") == [("a", at(1)), ("a", at(3))]  # fire_once: the latest
    assert ledger.calls[-1].maybe_fired  # held ticks are unsure: another owner may have fired
    assert a.stats().held_back == 0 and ledger.doubles == []


async def test_a_retry_after_losing_the_shard_is_not_made(scheduler: Factory) -> None:
    """A tick whose first attempt failed is retried only while this process may fire it."""
    clock, shards = FakeClock(T0), Shards()
    shards.assign("a", range(SHARDS))
    ledger = Ledger()
    attempts: list[datetime] = []
    lose_shard = asyncio.Event()

    async def failing(
        alarm: Alarm, tick: datetime, activation_id: str, *, maybe_fired: bool
    ) -> FireResult:
        attempts.append(tick)
        shards.owner.clear()  # ownership moves while the failed attempt is answered
        lose_shard.set()
        return FireResult.failed("controller unreachable")

    fast = RetryPolicy(failed_attempts=3, base_delay_s=0.01, max_delay_s=0.05)
    a = await scheduler("a", ledger, shards, failing, clock=clock, retry=fast)
    await a.create(cron("retry"))
    await advance(clock, at(1), a)
    await lose_shard.wait()
    await a.wait_idle(timeout_s=5)
    assert attempts == [at(1)]  # the retries (3 attempts allowed) were not made
    assert a.stats().held_back == 1 and a.stats().fires == 0
