"""The EntityStore contract, run against every backend in conftest.BACKENDS."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import threading
from pathlib import Path

import orjson
import pytest

from squall.abc import EntityStore, EntityWrite, StoredEntity, SubjectRecord
from squall.errors import ConflictError, StoreError
from squall.stores.sqlite import SqliteActivationStore, SqliteEntityStore

from .conftest import Backend

ACTIONS = "actions"
TRIGGERS = "triggers"


def doc(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "version": "0.0.1", "exec": {"kind": "python:3.11"}, **extra}


async def create(store: EntityStore, namespace: str, name: str, collection: str = ACTIONS) -> None:
    await store.put(collection, namespace, name, doc(name), None)


# --- create, get, replace -----------------------------------------------------------------------


async def test_create_then_get(entity_store: EntityStore) -> None:
    body = doc("hello", annotations=[{"key": "web-export", "value": True}], note="naïve ☃")
    created = await entity_store.put(ACTIONS, "guest", "hello", body, None)
    assert (created.collection, created.namespace, created.name) == (ACTIONS, "guest", "hello")
    assert created.revision == 1

    got = await entity_store.get(ACTIONS, "guest", "hello")
    assert got is not None
    assert got.revision == 1
    assert got.doc == body


async def test_get_absent_is_none(entity_store: EntityStore) -> None:
    assert await entity_store.get(ACTIONS, "guest", "nope") is None


async def test_create_existing_conflicts(entity_store: EntityStore) -> None:
    await create(entity_store, "guest", "a")
    with pytest.raises(ConflictError):
        await entity_store.put(ACTIONS, "guest", "a", doc("a", v=2), None)
    got = await entity_store.get(ACTIONS, "guest", "a")
    assert got is not None and got.doc == doc("a") and got.revision == 1


async def test_put_many_fails_only_the_conflicting_writes(entity_store: EntityStore) -> None:
    await create(entity_store, "guest", "kept")
    await create(entity_store, "guest", "stale")
    results = await entity_store.put_many(
        [
            EntityWrite(ACTIONS, "guest", "kept", doc("kept", v=2), 1),
            EntityWrite(ACTIONS, "guest", "stale", doc("stale", v=2), 7),  # wrong revision
            EntityWrite(ACTIONS, "guest", "new", doc("new"), None),
            EntityWrite(TRIGGERS, "guest", "kept", doc("kept"), None),  # the name is taken
        ]
    )
    assert [type(r).__name__ for r in results] == [
        "StoredEntity", "ConflictError", "StoredEntity", "ConflictError"
    ]
    kept = await entity_store.get(ACTIONS, "guest", "kept")
    stale = await entity_store.get(ACTIONS, "guest", "stale")
    new = await entity_store.get(ACTIONS, "guest", "new")
    assert kept is not None and (kept.revision, kept.doc) == (2, doc("kept", v=2))
    assert stale is not None and (stale.revision, stale.doc) == (1, doc("stale"))
    assert new is not None and new.revision == 1
    assert await entity_store.get(TRIGGERS, "guest", "kept") is None
    assert await entity_store.put_many([]) == []


async def test_put_many_of_replaces_only_and_of_one_entity_twice(
    entity_store: EntityStore,
) -> None:
    """Alarm state batches are replaces only (one statement on PostgreSQL): each is judged on
    its own revision; an entity written twice in one call is written in order."""
    for name in ("a", "b", "c"):
        await create(entity_store, "#alarms/guest", name, TRIGGERS)
    results = await entity_store.put_many(
        [
            EntityWrite(TRIGGERS, "#alarms/guest", "a", doc("a", v=2), 1),
            EntityWrite(TRIGGERS, "#alarms/guest", "b", doc("b", v=2), 2),  # stale revision
            EntityWrite(ACTIONS, "#alarms/guest", "c", doc("c", v=2), 1),  # another collection
            EntityWrite(TRIGGERS, "#alarms/guest", "gone", doc("gone"), 1),  # never created
        ]
    )
    assert [type(r).__name__ for r in results] == [
        "StoredEntity", "ConflictError", "ConflictError", "ConflictError"
    ]  # fmt: skip
    assert isinstance(results[0], StoredEntity) and results[0].revision == 2
    for name, revision, version in (("a", 2, 2), ("b", 1, None), ("c", 1, None)):
        got = await entity_store.get(TRIGGERS, "#alarms/guest", name)
        expected = doc(name, v=version) if version else doc(name)
        assert got is not None and (got.revision, got.doc) == (revision, expected), name
    twice = await entity_store.put_many(
        [
            EntityWrite(TRIGGERS, "#alarms/guest", "a", doc("a", v=3), 2),
            EntityWrite(TRIGGERS, "#alarms/guest", "a", doc("a", v=4), 3),
        ]
    )
    assert [r.revision for r in twice if isinstance(r, StoredEntity)] == [3, 4]
    got = await entity_store.get(TRIGGERS, "#alarms/guest", "a")
    assert got is not None and (got.revision, got.doc) == (4, doc("a", v=4))


async def test_put_many_of_replaces_that_all_succeed_keeps_every_value(
    entity_store: EntityStore,
) -> None:
    """The common alarm-state batch (one statement on SQLite and PostgreSQL): every write
    lands with its own document and the next revision, the batch's writes are the newest
    (listed first), and an export still sees each entity exactly once."""
    names = [f"a{i:03d}" for i in range(120)]
    for name in names:
        await create(entity_store, "#alarms/guest", name, TRIGGERS)
    await create(entity_store, "#alarms/guest", "untouched", TRIGGERS)
    body = {"note": "naïve ☃", "nested": {"list": [1, 2.5, None, True]}, "big": 2**62}
    writes = [EntityWrite(TRIGGERS, "#alarms/guest", name, doc(name, i=i, **body), 1)
              for i, name in enumerate(names)]  # fmt: skip
    results = await entity_store.put_many(writes)
    assert [(r.name, r.revision) for r in results if isinstance(r, StoredEntity)] == [
        (name, 2) for name in names
    ]
    for i, name in enumerate(names):
        got = await entity_store.get(TRIGGERS, "#alarms/guest", name)
        assert got is not None and (got.revision, got.doc) == (2, doc(name, i=i, **body)), name
    listed = await entity_store.list(TRIGGERS, "#alarms/guest", limit=len(names) + 1)
    assert set(e.name for e in listed[: len(names)]) == set(names)
    assert listed[-1].name == "untouched"
    exported = [e.name async for e in entity_store.iter_entities()]
    assert sorted(exported) == sorted([*names, "untouched"])


async def test_scan_pages_through_a_collection_under_a_path(entity_store: EntityStore) -> None:
    names = [f"e{i:02d}" for i in range(10)]
    for name in names:
        await create(entity_store, "#root/guest", name, TRIGGERS)
    await create(entity_store, "#root/other", "x", TRIGGERS)
    await create(entity_store, "#rooted", "not-below", TRIGGERS)  # a sibling path, not below
    await create(entity_store, "#root/guest", "an-action")  # another collection
    pages = [
        [(e.namespace, e.name) for e in page]
        async for page in entity_store.scan(TRIGGERS, "#root", prefix_match=True, page=3)
    ]
    assert [len(page) for page in pages] == [3, 3, 3, 2]
    assert sorted(key for page in pages for key in page) == sorted(
        [("#root/guest", n) for n in names] + [("#root/other", "x")]
    )
    exact = [e.name async for page in entity_store.scan(TRIGGERS, "#rooted") for e in page]
    assert exact == ["not-below"]


async def test_scan_text_gives_the_documents_as_json_text(entity_store: EntityStore) -> None:
    for i in range(5):
        await entity_store.put(TRIGGERS, "#root/guest", f"t{i}", doc(f"t{i}", v=i), None)
    await create(entity_store, "#rooted", "not-below", TRIGGERS)
    pages = [
        page
        async for page in entity_store.scan_text(TRIGGERS, "#root", prefix_match=True, page=2)
    ]
    assert [len(page) for page in pages] == [2, 2, 1]
    got = {s.name: (s.collection, s.namespace, s.revision, orjson.loads(s.text))
           for page in pages for s in page}  # fmt: skip
    assert got == {
        f"t{i}": (TRIGGERS, "#root/guest", 1, doc(f"t{i}", v=i)) for i in range(5)
    }


async def test_same_name_under_other_paths_is_fine(entity_store: EntityStore) -> None:
    await create(entity_store, "guest", "a")
    await create(entity_store, "guest/pkg", "a")
    await create(entity_store, "other", "a")
    assert await entity_store.count(ACTIONS, "guest", prefix_match=True) == 2


async def test_replace_with_current_revision_increments(entity_store: EntityStore) -> None:
    await create(entity_store, "guest", "a")
    for expected in (1, 2, 3):
        replaced = await entity_store.put(ACTIONS, "guest", "a", doc("a", v=expected), expected)
        assert replaced.revision == expected + 1
    got = await entity_store.get(ACTIONS, "guest", "a")
    assert got is not None and got.revision == 4 and got.doc == doc("a", v=3)


async def test_replace_with_stale_revision_conflicts(entity_store: EntityStore) -> None:
    await create(entity_store, "guest", "a")
    await entity_store.put(ACTIONS, "guest", "a", doc("a", v=2), 1)
    with pytest.raises(ConflictError):
        await entity_store.put(ACTIONS, "guest", "a", doc("a", v=3), 1)
    got = await entity_store.get(ACTIONS, "guest", "a")
    assert got is not None and got.revision == 2 and got.doc == doc("a", v=2)


async def test_replace_absent_conflicts(entity_store: EntityStore) -> None:
    with pytest.raises(ConflictError):
        await entity_store.put(ACTIONS, "guest", "ghost", doc("ghost"), 1)
    assert await entity_store.get(ACTIONS, "guest", "ghost") is None


async def test_concurrent_replaces_only_one_wins(entity_store: EntityStore) -> None:
    await create(entity_store, "guest", "a")
    results = await asyncio.gather(
        *(entity_store.put(ACTIONS, "guest", "a", doc("a", v=i), 1) for i in range(5)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert sum(isinstance(r, ConflictError) for r in results) == 4


# --- names are unique per path across collections -----------------------------------------------


async def test_name_taken_in_another_collection(entity_store: EntityStore) -> None:
    await create(entity_store, "guest", "x", ACTIONS)
    with pytest.raises(ConflictError):
        await create(entity_store, "guest", "x", TRIGGERS)
    assert await entity_store.get(TRIGGERS, "guest", "x") is None
    with pytest.raises(ConflictError):
        await entity_store.put(TRIGGERS, "guest", "x", doc("x"), 1)
    assert await entity_store.delete(TRIGGERS, "guest", "x") is False
    assert await entity_store.delete(TRIGGERS, "guest", "x", expected_revision=1) is False
    assert await entity_store.get(ACTIONS, "guest", "x") is not None
    assert await entity_store.count(TRIGGERS, "guest") == 0


# --- delete ---------------------------------------------------------------------------------------


async def test_delete_without_revision(entity_store: EntityStore) -> None:
    await create(entity_store, "guest", "a")
    assert await entity_store.delete(ACTIONS, "guest", "a") is True
    assert await entity_store.get(ACTIONS, "guest", "a") is None
    assert await entity_store.delete(ACTIONS, "guest", "a") is False
    await create(entity_store, "guest", "a")  # the name is free again, revisions restart
    got = await entity_store.get(ACTIONS, "guest", "a")
    assert got is not None and got.revision == 1


async def test_delete_with_revision(entity_store: EntityStore) -> None:
    await create(entity_store, "guest", "a")
    await entity_store.put(ACTIONS, "guest", "a", doc("a", v=2), 1)
    with pytest.raises(ConflictError):
        await entity_store.delete(ACTIONS, "guest", "a", expected_revision=1)
    assert await entity_store.get(ACTIONS, "guest", "a") is not None
    assert await entity_store.delete(ACTIONS, "guest", "a", expected_revision=2) is True
    assert await entity_store.get(ACTIONS, "guest", "a") is None


async def test_delete_absent_with_revision_is_false(entity_store: EntityStore) -> None:
    assert await entity_store.delete(ACTIONS, "guest", "nope", expected_revision=3) is False


# --- list and count -------------------------------------------------------------------------------


async def names(
    store: EntityStore,
    namespace: str,
    *,
    skip: int = 0,
    limit: int = 30,
    prefix_match: bool = False,
) -> list[str]:
    entities = await store.list(
        ACTIONS, namespace, skip=skip, limit=limit, prefix_match=prefix_match
    )
    return [f"{e.namespace}/{e.name}" for e in entities]


async def test_list_newest_update_first(entity_store: EntityStore) -> None:
    for name in ("a", "b", "c"):
        await create(entity_store, "guest", name)
    assert await names(entity_store, "guest") == ["guest/c", "guest/b", "guest/a"]
    await entity_store.put(ACTIONS, "guest", "a", doc("a", v=2), 1)
    assert await names(entity_store, "guest") == ["guest/a", "guest/c", "guest/b"]
    listed = await entity_store.list(ACTIONS, "guest", limit=1)
    assert listed[0].revision == 2 and listed[0].doc == doc("a", v=2)


async def test_list_skip_and_limit(entity_store: EntityStore) -> None:
    for i in range(7):
        await create(entity_store, "guest", f"a{i}")
    assert await names(entity_store, "guest", limit=3) == ["guest/a6", "guest/a5", "guest/a4"]
    assert await names(entity_store, "guest", skip=3, limit=3) == [
        "guest/a3",
        "guest/a2",
        "guest/a1",
    ]
    assert await names(entity_store, "guest", skip=6, limit=3) == ["guest/a0"]
    assert await names(entity_store, "guest", skip=7) == []
    assert await names(entity_store, "guest", limit=0) == []
    assert len(await names(entity_store, "guest")) == 7  # default limit 30


async def test_list_only_the_collection(entity_store: EntityStore) -> None:
    await create(entity_store, "guest", "act", ACTIONS)
    await create(entity_store, "guest", "trig", TRIGGERS)
    assert await names(entity_store, "guest") == ["guest/act"]
    listed = await entity_store.list(TRIGGERS, "guest")
    assert [(e.collection, e.name) for e in listed] == [(TRIGGERS, "trig")]


# Paths that a LIKE pattern built from "a_b" or "a%b" would wrongly match, and neighbours in
# byte order of "a_b/" ("-" and "." sort before "/", "0" right after it).
TRICKY_PATHS = [
    "a_b",
    "a_b/pkg",
    "a_b/p_k%g",
    "a_b/pkg.v1",
    "aXb",
    "aXb/pkg",
    "a%b",
    "a%b/pkg",
    "a_b-x",
    "a_b.x/pkg",
    "a_b0",
    "a_b0/pkg",
    "a_bc/pkg",
    "a_",
    "a_b@x/pkg",
]


async def test_prefix_match_with_wildcard_characters(entity_store: EntityStore) -> None:
    for path in TRICKY_PATHS:
        await create(entity_store, path, "n_%1")
    expected = {"a_b/n_%1", "a_b/pkg/n_%1", "a_b/p_k%g/n_%1", "a_b/pkg.v1/n_%1"}
    assert set(await names(entity_store, "a_b", prefix_match=True)) == expected
    assert await entity_store.count(ACTIONS, "a_b", prefix_match=True) == len(expected)
    assert await names(entity_store, "a_b") == ["a_b/n_%1"]
    assert await entity_store.count(ACTIONS, "a_b") == 1
    assert set(await names(entity_store, "a%b", prefix_match=True)) == {
        "a%b/n_%1",
        "a%b/pkg/n_%1",
    }
    assert await names(entity_store, "a_b/pkg", prefix_match=True) == ["a_b/pkg/n_%1"]


async def test_prefix_match_orders_and_pages_across_paths(entity_store: EntityStore) -> None:
    await create(entity_store, "guest", "one")
    await create(entity_store, "guest/pkg", "two")
    await create(entity_store, "guest2", "not-mine")
    await create(entity_store, "guest", "three")
    assert await names(entity_store, "guest", prefix_match=True) == [
        "guest/three",
        "guest/pkg/two",
        "guest/one",
    ]
    assert await names(entity_store, "guest", prefix_match=True, skip=1, limit=1) == [
        "guest/pkg/two",
    ]


async def test_count(entity_store: EntityStore) -> None:
    assert await entity_store.count(ACTIONS, "guest") == 0
    for i in range(4):
        await create(entity_store, "guest", f"a{i}")
    await create(entity_store, "guest/pkg", "p")
    await create(entity_store, "guest", "t", TRIGGERS)
    assert await entity_store.count(ACTIONS, "guest") == 4
    assert await entity_store.count(ACTIONS, "guest", prefix_match=True) == 5
    assert await entity_store.count(TRIGGERS, "guest", prefix_match=True) == 1


# --- durability -----------------------------------------------------------------------------------


async def test_entities_survive_reopen(backend: Backend) -> None:
    first = backend.entity_store()
    await first.start()
    await first.put(ACTIONS, "guest", "kept", doc("kept"), None)
    await first.put(ACTIONS, "guest", "kept", doc("kept", v=2), 1)
    await first.put_subject(SubjectRecord("guest", "guest", "u-1", "h", {}))
    await first.close()

    second = backend.entity_store()
    await second.start()
    try:
        got = await second.get(ACTIONS, "guest", "kept")
        assert got is not None and got.revision == 2 and got.doc == doc("kept", v=2)
        assert await second.get_subject("u-1") is not None
    finally:
        await second.close()


# --- subjects -------------------------------------------------------------------------------------


def subject(
    namespace: str = "guest",
    uuid: str = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502",
    key_hash: str = "hash-1",
    **limits: object,
) -> SubjectRecord:
    return SubjectRecord(namespace, "guest-subject", uuid, key_hash, dict(limits))


async def test_subject_crud(entity_store: EntityStore) -> None:
    record = subject(invocationsPerMinute=120, allowedKinds=["python:3.11"])
    await entity_store.put_subject(record)
    assert await entity_store.get_subject(record.uuid) == record
    assert await entity_store.get_subject_by_namespace("guest") == record

    rotated = subject(uuid="0b1c1d2e-0000-4000-8000-000000000001", key_hash="hash-2")
    await entity_store.put_subject(rotated)  # same namespace: replaces
    assert await entity_store.get_subject(record.uuid) is None
    assert await entity_store.get_subject(rotated.uuid) == rotated
    assert await entity_store.get_subject_by_namespace("guest") == rotated

    assert await entity_store.delete_subject("guest") is True
    assert await entity_store.get_subject(rotated.uuid) is None
    assert await entity_store.get_subject_by_namespace("guest") is None
    assert await entity_store.delete_subject("guest") is False


async def test_subject_absent(entity_store: EntityStore) -> None:
    assert await entity_store.get_subject("no-such-uuid") is None
    assert await entity_store.get_subject_by_namespace("nobody") is None


async def test_subject_uuid_is_unique(entity_store: EntityStore) -> None:
    await entity_store.put_subject(subject("guest"))
    await entity_store.put_subject(subject("other", uuid="ffffffff-0000-4000-8000-000000000002"))
    with pytest.raises(ConflictError):
        await entity_store.put_subject(subject("other"))  # guest's uuid
    got = await entity_store.get_subject_by_namespace("other")
    assert got is not None and got.uuid == "ffffffff-0000-4000-8000-000000000002"


# --- SQLite specifics -----------------------------------------------------------------------------


async def test_sqlite_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "squall.db"
    store = SqliteEntityStore(path)
    await store.start()
    await store.put(ACTIONS, "guest", "a", doc("a"), None)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        wal = path.with_name(path.name + "-wal")
        assert stat.S_IMODE(os.stat(wal).st_mode) == 0o600
    finally:
        await store.close()


async def test_sqlite_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "squall.db"
    store = SqliteEntityStore(path)
    await store.start()
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_sqlite_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "squall.db"
    store = SqliteEntityStore(path)
    await store.start()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99 WHERE component = 'entities'")
    conn.close()

    newer = SqliteEntityStore(path)
    with pytest.raises(
        StoreError,
        match=r"database schema version 99 is newer than this "
        r"Squall supports \(1\); upgrade Squall",
    ) as caught:
        await newer.start()
    assert str(path) in str(caught.value)
    await newer.close()


async def test_sqlite_stores_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "squall.db"
    entities, activations = SqliteEntityStore(path), SqliteActivationStore(path)
    await entities.start()
    await activations.start()
    try:
        await entities.put(ACTIONS, "guest", "a", doc("a"), None)
        activations.store(
            {
                "activationId": "a" * 32,
                "namespace": "guest",
                "name": "a",
                "start": 1,
                "end": 2,
                "annotations": [],
            }
        )
        await activations.flush()
        assert await entities.get(ACTIONS, "guest", "a") is not None
        assert await activations.get("guest", "a" * 32) is not None
    finally:
        await activations.close()
        await entities.close()


async def test_sqlite_stores_on_one_file_share_its_writer_and_close_independently(
    tmp_path: Path,
) -> None:
    path = tmp_path / "squall.db"
    entities, activations = SqliteEntityStore(path), SqliteActivationStore(path)
    await entities.start()
    await activations.start()
    # Writes of both stores at once: with two writer connections one would wait in SQLite's
    # busy handler; with the shared one they simply queue.
    record = {"namespace": "guest", "name": "a", "start": 1, "end": 2, "annotations": []}
    for i in range(20):
        activations.store({**record, "activationId": f"{i:032x}"})
    await asyncio.gather(
        activations.flush(),
        *(entities.put(ACTIONS, "guest", f"a{i}", doc(f"a{i}"), None) for i in range(20)),
    )
    await activations.close()
    # The entity store keeps working on the file after the other store closed.
    await entities.put(ACTIONS, "guest", "after", doc("after"), None)
    assert await entities.count(ACTIONS, "guest") == 21
    await entities.close()
    reopened = SqliteActivationStore(path)
    await reopened.start()
    try:
        assert await reopened.get("guest", f"{19:032x}") is not None
    finally:
        await reopened.close()


async def test_sqlite_unusable_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database, just some text " * 100)
    store = SqliteEntityStore(path)
    with pytest.raises(StoreError, match=r"garbage\.db") as caught:
        await store.start()
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    await store.close()


async def test_sqlite_unopenable_path_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be")
    store = SqliteEntityStore(tmp_path / "blocker" / "squall.db")
    with pytest.raises(StoreError, match="blocker"):
        await store.start()
    await store.close()


async def test_sqlite_use_before_start_is_a_store_error(tmp_path: Path) -> None:
    store = SqliteEntityStore(tmp_path / "squall.db")
    with pytest.raises(StoreError, match="not open"):
        await store.get(ACTIONS, "guest", "a")
    await store.close()


async def test_sqlite_checkpoints_the_wal_in_a_thread_of_its_own(tmp_path: Path) -> None:
    """Writes land in the WAL; the checkpoint thread copies them into the database file
    (the writer alone would wait for 10,000 pages), and the thread ends with the store."""
    path = tmp_path / "squall.db"
    store = SqliteEntityStore(path)
    running = set(threading.enumerate())
    await store.start()
    started = [t for t in threading.enumerate()
               if t not in running and t.name == "squall-sqlite-checkpoint"]  # fmt: skip
    try:
        assert len(started) == 1
        before = path.stat().st_size
        padding = "x" * 4000
        for batch in range(5):
            writes = [EntityWrite(TRIGGERS, "guest", f"t{batch}-{i}", doc("t", pad=padding), None)
                      for i in range(50)]  # fmt: skip
            assert all(isinstance(r, StoredEntity) for r in await store.put_many(writes))
        deadline = asyncio.get_running_loop().time() + 5.0
        while path.stat().st_size < before + 500_000:
            assert asyncio.get_running_loop().time() < deadline, "the WAL was not checkpointed"
            await asyncio.sleep(0.05)
        assert started[0].is_alive()
    finally:
        await store.close()
    assert not started[0].is_alive()
