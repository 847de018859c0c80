"""The ActivationStore contract, run against every backend in conftest.BACKENDS."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import uuid
from pathlib import Path
from typing import Any, TypeVar

import pytest

from squall.abc import ActivationQuery, ActivationStore
from squall.errors import StoreError
from squall.stores.sqlite import SqliteActivationStore

from .conftest import Backend

T0 = 1_700_000_000_000  # an epoch ms all test records start after


def record(
    *,
    namespace: str = "guest",
    name: str = "act",
    path: str | None = None,
    start: int = T0,
    duration: int = 10,
    status: int = 0,
    activation_id: str | None = None,
    binding: str | None = None,
) -> dict[str, Any]:
    """A stored activation record in OpenWhisk's shape."""
    annotations: list[dict[str, Any]] = [
        {"key": "path", "value": path or f"{namespace}/{name}"},
        {"key": "kind", "value": "python:3.11"},
        {"key": "limits", "value": {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1}},
        {"key": "waitTime", "value": 3},
    ]
    if binding:
        annotations.append({"key": "binding", "value": binding})
    return {
        "namespace": namespace,
        "name": name,
        "version": "0.0.1",
        "subject": "guest",
        "activationId": activation_id or uuid.uuid4().hex,
        "start": start,
        "end": start + duration,
        "duration": duration,
        "statusCode": status,
        "response": {"statusCode": status, "result": {"echo": name, "n": start}},
        "logs": [f"2024-01-01T00:00:00.000Z stdout: ran {name}"],
        "annotations": annotations,
        "publish": False,
    }


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["activationId"] for r in records]


StoreT = TypeVar("StoreT", bound=ActivationStore)


async def started(store: StoreT) -> StoreT:
    await store.start()
    return store


# --- store and get --------------------------------------------------------------------------------


async def test_get_sees_a_record_before_any_flush(activation_store: ActivationStore) -> None:
    rec = record()
    activation_store.store(rec)
    assert await activation_store.get("guest", rec["activationId"]) == rec
    assert await activation_store.get("other", rec["activationId"]) is None
    await activation_store.flush()
    assert await activation_store.get("guest", rec["activationId"]) == rec
    assert await activation_store.get("other", rec["activationId"]) is None


async def test_get_absent_is_none(activation_store: ActivationStore) -> None:
    assert await activation_store.get("guest", "0" * 32) is None


async def test_storing_the_same_id_again_replaces(activation_store: ActivationStore) -> None:
    first = record(activation_id="a" * 32, status=0)
    activation_store.store(first)
    await activation_store.flush()
    second = record(activation_id="a" * 32, status=2)
    activation_store.store(second)
    assert await activation_store.get("guest", "a" * 32) == second
    assert await activation_store.count(ActivationQuery("guest")) == 1
    assert await activation_store.get("guest", "a" * 32) == second


async def test_flush_with_nothing_pending(activation_store: ActivationStore) -> None:
    await activation_store.flush()
    assert await activation_store.count(ActivationQuery("guest")) == 0


# --- list and count -------------------------------------------------------------------------------


async def test_list_newest_start_first_and_pages(activation_store: ActivationStore) -> None:
    recs = [record(start=T0 + i) for i in range(10)]
    for rec in recs:
        activation_store.store(rec)
    newest_first = ids(recs[::-1])
    assert ids(await activation_store.list(ActivationQuery("guest"))) == newest_first
    assert ids(await activation_store.list(ActivationQuery("guest", limit=3))) == newest_first[:3]
    page = await activation_store.list(ActivationQuery("guest", skip=3, limit=4))
    assert ids(page) == newest_first[3:7]
    assert await activation_store.list(ActivationQuery("guest", skip=10)) == []
    assert await activation_store.count(ActivationQuery("guest", skip=3, limit=2)) == 10
    assert await activation_store.list(ActivationQuery("nobody")) == []


async def test_list_ties_are_ordered_by_id(activation_store: ActivationStore) -> None:
    recs = [record(start=T0, activation_id=f"{i:032x}") for i in (3, 1, 2)]
    for rec in recs:
        activation_store.store(rec)
    listed = ids(await activation_store.list(ActivationQuery("guest")))
    assert listed == sorted(listed, reverse=True)
    assert ids(await activation_store.list(ActivationQuery("guest"))) == listed  # stable


async def test_list_returns_full_records(activation_store: ActivationStore) -> None:
    rec = record()
    activation_store.store(rec)
    await activation_store.flush()
    assert await activation_store.list(ActivationQuery("guest")) == [rec]


async def test_since_and_upto_are_inclusive(activation_store: ActivationStore) -> None:
    recs = [record(start=T0 + i * 1000) for i in range(6)]
    for rec in recs:
        activation_store.store(rec)
    await activation_store.flush()
    query = ActivationQuery("guest", since=T0 + 1000, upto=T0 + 4000)
    assert ids(await activation_store.list(query)) == ids(recs[1:5][::-1])
    assert await activation_store.count(query) == 4
    assert await activation_store.count(ActivationQuery("guest", since=T0 + 5000)) == 1
    assert await activation_store.count(ActivationQuery("guest", upto=T0)) == 1
    assert await activation_store.count(ActivationQuery("guest", since=T0 + 5001)) == 0


async def test_name_filter(activation_store: ActivationStore) -> None:
    plain = record(name="act", start=T0 + 1)
    packaged = record(name="act", path="guest/pkg/act", start=T0 + 2)
    other = record(name="other", start=T0 + 3)
    # An action of a shared package reached through the binding guest/mybind.
    bound = record(
        name="alarm", path="whisk.system/alarms/alarm", binding="guest/mybind", start=T0 + 4
    )
    elsewhere = record(namespace="someone", name="act", start=T0 + 5)
    for rec in (plain, packaged, other, bound, elsewhere):
        activation_store.store(rec)
    await activation_store.flush()

    async def listed(name: str, **kwargs: Any) -> list[str]:
        return ids(await activation_store.list(ActivationQuery("guest", name=name, **kwargs)))

    # OpenWhisk's rule: a bare name is an action outside any package; `pkg/name` one inside.
    assert await listed("act") == ids([plain])
    assert await listed("pkg/act") == ids([packaged])
    assert await listed("other") == ids([other])
    assert await listed("mybind/alarm") == ids([bound])
    assert await listed("alarms/alarm") == []
    assert await listed("nope") == []
    assert await listed("act", since=T0 + 2) == []
    assert await activation_store.count(ActivationQuery("guest", name="act")) == 1
    assert await activation_store.count(ActivationQuery("guest", name="pkg/act")) == 1
    assert await activation_store.count(ActivationQuery("guest")) == 4


async def test_list_and_count_include_pending(activation_store: ActivationStore) -> None:
    activation_store.store(record(start=T0))
    await activation_store.flush()
    late = record(start=T0 + 1)
    activation_store.store(late)  # not flushed: the store's interval is an hour
    assert ids(await activation_store.list(ActivationQuery("guest", limit=1))) == ids([late])
    assert await activation_store.count(ActivationQuery("guest")) == 2


# --- durability and batching ----------------------------------------------------------------------


async def test_records_survive_close_and_reopen(backend: Backend) -> None:
    store = await started(backend.activation_store(batch_size=250))
    recs = [record(start=T0 + i) for i in range(2_000)]
    for rec in recs:
        store.store(rec)
    await store.close()

    reopened = await started(backend.activation_store())
    try:
        assert await reopened.count(ActivationQuery("guest")) == len(recs)
        for rec in recs[::199]:
            assert await reopened.get("guest", rec["activationId"]) == rec
        listed = await reopened.list(ActivationQuery("guest", limit=200))
        assert ids(listed) == ids(recs[::-1][:200])
    finally:
        await reopened.close()


async def test_close_flushes_without_an_explicit_flush(backend: Backend) -> None:
    store = await started(backend.activation_store(flush_interval_s=3600.0))
    rec = record()
    store.store(rec)
    await store.close()

    reopened = await started(backend.activation_store())
    try:
        assert await reopened.get("guest", rec["activationId"]) == rec
    finally:
        await reopened.close()


async def test_store_after_close_is_refused(backend: Backend) -> None:
    store = await started(backend.activation_store())
    await store.close()
    with pytest.raises(StoreError):
        store.store(record())
    await store.close()  # a second close is harmless


async def wait_until_visible(reader: ActivationStore, activation_id: str) -> bool:
    for _ in range(100):
        if await reader.get("guest", activation_id) is not None:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_background_flush_after_the_interval(backend: Backend) -> None:
    writer = await started(backend.activation_store(flush_interval_s=0.02))
    reader = await started(backend.activation_store(flush_interval_s=3600.0))
    try:
        rec = record()
        writer.store(rec)
        # Another instance sees only what was written, so this proves the background write.
        assert await wait_until_visible(reader, rec["activationId"])
    finally:
        await reader.close()
        await writer.close()


async def test_background_flush_when_a_batch_is_full(backend: Backend) -> None:
    writer = await started(backend.activation_store(flush_interval_s=3600.0, batch_size=10))
    reader = await started(backend.activation_store(flush_interval_s=3600.0))
    try:
        recs = [record(start=T0 + i) for i in range(10)]
        for rec in recs:
            writer.store(rec)
        assert await wait_until_visible(reader, recs[-1]["activationId"])
        assert await reader.count(ActivationQuery("guest")) == 10
    finally:
        await reader.close()
        await writer.close()


async def test_five_thousand_records_are_all_written_by_one_flush(
    activation_store: ActivationStore,
) -> None:
    # How fast is the stores benchmark's business (bench/, BENCHMARKS.md), not a timed test's.
    recs = [record(start=T0 + i) for i in range(5_000)]
    for rec in recs:
        activation_store.store(rec)
    await activation_store.flush()
    assert await activation_store.count(ActivationQuery("guest")) == 5_000


async def test_a_batch_keeps_every_value_exactly(activation_store: ActivationStore) -> None:
    """Text that JSON escapes, nested values, a record stored twice in one batch: written
    together (SQLite unpacks a batch from one JSON array), read back as they were."""
    odd = {**record(name="act", start=T0), "logs": ['quote " back \\ tab \t', "é ü 名 🎉\n"]}
    odd["response"]["result"] = {"nested": {"null": None, "float": 1.5, "big": 2**62}}
    plain = record(name="act", start=T0 + 1, duration=30)
    first = record(name="other", start=T0 + 2)
    again = {**first, "name": "again"}  # the same id, stored later: it replaces the first
    for rec in (odd, plain, first, again):
        activation_store.store(rec)
    await activation_store.flush()
    assert await activation_store.get("guest", odd["activationId"]) == odd
    assert await activation_store.get("guest", first["activationId"]) == again
    listed = ids(await activation_store.list(ActivationQuery("guest", name="act")))
    assert sorted(listed) == sorted([odd["activationId"], plain["activationId"]])
    stats = await activation_store.duration_stats("guest", "guest/act", T0)
    assert stats is not None and (stats.count, stats.average_ms) == (2, 20)


# --- duration statistics --------------------------------------------------------------------------


async def test_duration_stats(activation_store: ActivationStore) -> None:
    since = T0 + 10_000
    for d in range(1, 101):  # durations 1..100 ms inside the window, stored out of order
        activation_store.store(record(start=since + (d * 37) % 100, duration=d))
    activation_store.store(record(start=since - 1, duration=5_000))  # before the window
    activation_store.store(record(name="other", start=since, duration=7_000))  # other action
    activation_store.store(
        record(namespace="someone", path="guest/act", start=since, duration=9_000)
    )  # another invoking namespace
    activation_store.store(
        record(name="act", path="guest/pkg/act", start=since, duration=8_000)
    )  # same name in a package

    stats = await activation_store.duration_stats("guest", "guest/act", since)
    assert stats is not None
    assert stats.count == 100
    assert stats.average_ms == pytest.approx(50.5)
    assert stats.p50_ms == pytest.approx(50)
    assert stats.p99_ms == pytest.approx(99)

    packaged = await activation_store.duration_stats("guest", "guest/pkg/act", since)
    assert packaged is not None and packaged.count == 1 and packaged.p99_ms == 8_000


async def test_duration_stats_none_without_records(activation_store: ActivationStore) -> None:
    activation_store.store(record(start=T0, duration=3))
    assert await activation_store.duration_stats("guest", "guest/nope", 0) is None
    assert await activation_store.duration_stats("guest", "guest/act", T0 + 1) is None
    one = await activation_store.duration_stats("guest", "guest/act", T0)
    assert one is not None and (one.count, one.average_ms, one.p50_ms, one.p99_ms) == (1, 3, 3, 3)


# --- retention ------------------------------------------------------------------------------------


async def test_purge_before(activation_store: ActivationStore) -> None:
    purge_before = getattr(activation_store, "purge_before", None)
    if purge_before is None:
        pytest.skip("this backend has no purge_before (retention is its server's job)")
    recs = [record(start=T0 + i) for i in range(10)]
    for rec in recs:
        activation_store.store(rec)
    assert await purge_before(T0 + 5) == 5
    remaining = await activation_store.list(ActivationQuery("guest"))
    assert ids(remaining) == ids(recs[5:][::-1])
    assert await activation_store.get("guest", recs[0]["activationId"]) is None
    assert await purge_before(T0 + 5) == 0


# --- SQLite specifics -----------------------------------------------------------------------------


async def test_sqlite_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "activations.db"
    store = await started(SqliteActivationStore(path))
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        await store.close()


async def test_sqlite_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "squall.db"
    await (await started(SqliteActivationStore(path))).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 7 WHERE component = 'activations'")
    conn.close()

    newer = SqliteActivationStore(path)
    with pytest.raises(
        StoreError,
        match=r"database schema version 7 is newer than this "
        r"Squall supports \(1\); upgrade Squall",
    ):
        await newer.start()
    await newer.close()


async def test_sqlite_purge_in_chunks(tmp_path: Path) -> None:
    store = await started(SqliteActivationStore(tmp_path / "squall.db", batch_size=5_000))
    try:
        for i in range(12_000):
            store.store(record(start=T0 + i))
        assert await store.purge_before(T0 + 11_000) == 11_000
        assert await store.count(ActivationQuery("guest")) == 1_000
    finally:
        await store.close()


class CountingSqliteActivationStore(SqliteActivationStore):
    """The real SQLite store, counting the batches it writes, each taking at least 5 ms (as
    on a slow disk or a remote backend)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, flush_interval_s=3600.0)
        self.batches: list[int] = []

    async def _write(self, batch: Any) -> None:
        self.batches.append(len(batch))
        await asyncio.gather(super()._write(batch), asyncio.sleep(0.005))


async def test_a_flush_waits_for_its_own_record_not_for_every_flush_before_it(
    tmp_path: Path,
) -> None:
    """Group commit: each fire's flush returns once the write holding its record is done (at
    most the write in flight plus the next), not after every earlier caller's turn."""
    path = tmp_path / "squall.db"
    store = CountingSqliteActivationStore(path)
    await store.start()
    records = [record(start=T0 + i) for i in range(200)]
    waited: list[int] = []  # writes started while each fire's flush was waiting

    async def fire(i: int, r: dict[str, Any]) -> None:  # an alarm fire and its ledger entry
        await asyncio.sleep(i * 0.0002)  # arrivals keep coming while writes are in flight
        store.store(r)
        before = len(store.batches)
        await store.flush()
        waited.append(len(store.batches) - before)
        assert await store.get("guest", r["activationId"]) is not None

    try:
        await asyncio.gather(*(fire(i, r) for i, r in enumerate(records)))
        assert sum(store.batches) == 200, store.batches
        assert max(waited) <= 2, sorted(waited)[-10:]
    finally:
        await store.close()
    reopened = SqliteActivationStore(path)
    await reopened.start()
    try:
        assert await reopened.count(ActivationQuery(namespace="guest")) == 200
    finally:
        await reopened.close()
