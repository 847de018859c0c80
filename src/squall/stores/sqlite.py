"""SQLite stores: the embedded default for entities and activations.

Both stores may share one file: they use different tables and keep their schema versions under
different components of the `schema_version` table. Each store owns one connection that is
used only from the store's own single-thread executor, for every write and every scan, so the
event loop never waits on a write or a long query. Point reads by primary key (an entity, one
activation) use a second, read-only connection on the loop itself: in WAL mode they never wait
for a writer and take microseconds from the page cache, less than a hand-off to the thread costs
(a future, a wake-up through the loop's self-pipe, and up to the interpreter's 5 ms switch
interval to get the GIL back from a busy loop); alarm fires make one or two per fire.
SQLite runs in WAL mode so the stores' connections (and readers in other processes, such as
`squall store copy`) do not block each other.

The file is created with mode 0600 (its directory, if created, 0700): it holds key hashes.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson

from squall.abc import (
    ActivationQuery,
    DurationStats,
    EntityStore,
    EntityWrite,
    JSONDict,
    RecordPage,
    StoredEntity,
    StoredText,
    SubjectRecord,
)
from squall.errors import ConflictError, StoreError
from squall.stores.base import BatchedActivationStore
from squall.stores.rows import (
    PURGE_CHUNK,
    STATS_WINDOW,
    activation_filter,
    activation_row,
    entity_scope,
    keyset_pages,
)
from squall.stores.rows import dumps as _dumps
from squall.stores.rows import now_ms as _now_ms
from squall.stores.rows import percentile as _percentile

__all__ = ["SqliteActivationStore", "SqliteEntityStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

# The statements taking a component's schema from version N-1 to N, run in one transaction.
# Append new migrations; never edit one that has been released.
Migration = tuple[str, ...]

BUSY_TIMEOUT_MS = 5000
# WAL checkpoints run in a thread of their own this often (see _File._checkpoint_forever).
CHECKPOINT_INTERVAL_S = 0.5
# The writer checkpoints by itself only past this many WAL pages (40 MB with 4 KiB pages):
# a backstop for when the checkpoint thread cannot keep up, not the normal path.
WRITER_AUTOCHECKPOINT_PAGES = 10_000


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------

_SCHEMA_VERSION_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)"""

ENTITY_MIGRATIONS: tuple[Migration, ...] = (
    (
        # `seq` orders writes within the same millisecond so "newest first" is deterministic.
        """CREATE TABLE entities (
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            collection TEXT NOT NULL,
            revision INTEGER NOT NULL,
            updated INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            doc TEXT NOT NULL,
            PRIMARY KEY (namespace, name)
        )""",
        "CREATE UNIQUE INDEX entities_by_seq ON entities (seq)",
        """CREATE INDEX entities_by_collection
            ON entities (collection, namespace, updated DESC, seq DESC)""",
        """CREATE TABLE subjects (
            namespace TEXT PRIMARY KEY,
            subject TEXT NOT NULL,
            uuid TEXT NOT NULL UNIQUE,
            key_hash TEXT NOT NULL,
            limits TEXT NOT NULL
        )""",
    ),
)

ACTIVATION_MIGRATIONS: tuple[Migration, ...] = (
    (
        # `path` is the record's `path` annotation (ns/[pkg/]action); `entity_path` is what the
        # listing's `name` filter compares with ([pkg/]action, see `_entity_path`).
        """CREATE TABLE activations (
            activation_id TEXT PRIMARY KEY,
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            entity_path TEXT NOT NULL,
            start_ms INTEGER NOT NULL,
            end_ms INTEGER NOT NULL,
            duration_ms INTEGER,
            status_code INTEGER,
            doc TEXT NOT NULL
        )""",
        """CREATE INDEX activations_by_namespace
            ON activations (namespace, start_ms DESC, activation_id DESC)""",
        """CREATE INDEX activations_by_name
            ON activations (namespace, entity_path, start_ms DESC, activation_id DESC)""",
        # Covers duration_stats, so the scheduler's query never reads the records themselves.
        """CREATE INDEX activations_by_path
            ON activations (path, start_ms, namespace, duration_ms)""",
    ),
)


# ---------------------------------------------------------------------------------------------
# Plumbing shared by both stores
# ---------------------------------------------------------------------------------------------


def _loads(text: str) -> Any:
    return orjson.loads(text)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """An explicit write transaction; IMMEDIATE so a read-then-write cannot lose a race."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        _rollback_quietly(conn)
        raise
    conn.execute("COMMIT")


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    # SQLite rolls back by itself on some errors; a second ROLLBACK would mask the first error.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.rollback()


class _File:
    """One SQLite file as this process uses it: one writer connection in one thread, and one
    read-only connection for point reads on the loop.

    Shared by every store open on the file (the entity and activation stores usually are):
    SQLite admits one writer at a time, and two writer connections in one process would make
    each wait in SQLite's busy handler (sleeps of 1 to 100 ms) whenever the other commits.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="squall-sqlite")
        self.conn: sqlite3.Connection | None = None  # the writer: in the thread only
        self.reader: sqlite3.Connection | None = None  # point reads: on the loop's thread only
        self.users = 0
        self._checkpointer: threading.Thread | None = None
        self._closing = threading.Event()

    async def submit(self, job: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    async def open(self) -> None:
        await self.submit(self._open_writer)
        try:
            self.reader = _connect_reader(self.path)
        except BaseException:
            await self.close()
            raise
        self._checkpointer = threading.Thread(
            target=self._checkpoint_forever, name="squall-sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()

    async def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join, 5.0)
            self._checkpointer = None
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.close()
        try:
            await self.submit(self._close_writer)
        finally:
            # The queue is empty by now, so joining the thread takes microseconds.
            self._executor.shutdown(wait=True)

    def _open_writer(self) -> None:
        self.conn = _connect(self.path)

    def _checkpoint_forever(self) -> None:
        """Copy the WAL back into the database file every CHECKPOINT_INTERVAL_S, here.

        Why a thread of its own: SQLite otherwise checkpoints in the COMMIT that grows the WAL
        past 1,000 pages, so about once a second under a thousand alarm fires a second one
        commit also copied pages and synced the file (fdatasync alone took up to 47 ms here),
        and every fire waiting for that batch of trigger records waited as long. A PASSIVE
        checkpoint never blocks the writer or readers; it copies what no reader still needs,
        and the rest next time."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            log.warning("SQLite %s: no checkpoint thread (%s); the writer checkpoints",
                        self.path, exc)  # fmt: skip
            return
        failing = False
        try:
            while not self._closing.wait(CHECKPOINT_INTERVAL_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    failing = False
                except sqlite3.Error as exc:  # e.g. a full disk: say so once, keep trying
                    if not failing:
                        log.warning("SQLite %s: WAL checkpoint failed: %s", self.path, exc)
                    failing = True
        finally:
            conn.close()

    def _close_writer(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            conn.execute("PRAGMA optimize")  # what SQLite recommends before closing
        except sqlite3.Error as exc:
            log.warning("PRAGMA optimize on %s failed: %s", self.path, exc)
        finally:
            conn.close()


# The files open in this process, by resolved path; touched on the event loop only.
_FILES: dict[Path, _File] = {}


class _Database:
    """One store's view of its SQLite file: its tables' migrations and its error messages."""

    def __init__(self, path: Path, component: str, migrations: Sequence[Migration]) -> None:
        self.path = Path(path)
        self._component = component
        self._migrations = migrations
        self._file: _File | None = None
        self._state = "new"  # new | open | closed, read and written on the loop only

    async def open(self) -> None:
        if self._state != "new":
            raise StoreError(f"SQLite {self._component} store {self.path} was already started")
        file = await self._acquire()
        try:
            await file.submit(partial(self._guarded_migrate, file))
        except BaseException:
            await self._release(file)
            raise
        self._file = file
        self._state = "open"

    async def close(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        file, self._file = self._file, None
        if file is not None:
            await self._release(file)

    async def _acquire(self) -> _File:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = self.path.resolve()
        except OSError as exc:
            raise self._error("opening", exc) from exc
        file = _FILES.get(key)
        if file is None:
            file = _File(key)
            _FILES[key] = file
            try:
                await file.open()
            except (OSError, sqlite3.Error) as exc:
                _FILES.pop(key, None)
                raise self._error("opening", exc) from exc
        file.users += 1
        return file

    async def _release(self, file: _File) -> None:
        file.users -= 1
        if file.users == 0:
            if _FILES.get(file.path) is file:
                del _FILES[file.path]
            await file.close()

    async def run(
        self,
        what: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run `fn(connection, ...)` in the file's thread; sqlite3 errors become StoreError."""
        file = self._file
        if self._state != "open" or file is None:
            raise StoreError(f"SQLite {self._component} store {self.path} is not open ({what})")

        def call(conn: sqlite3.Connection) -> T:
            return fn(conn, *args, **kwargs)

        return await file.submit(partial(self._guarded, file, what, call))

    def read(
        self,
        what: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run a point read `fn(reader, ...)` on the caller's (the loop's) thread."""
        file = self._file
        reader = file.reader if file is not None else None
        if self._state != "open" or reader is None:
            raise StoreError(f"SQLite {self._component} store {self.path} is not open ({what})")
        try:
            return fn(reader, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._error(what, exc) from exc

    def _guarded(self, file: _File, what: str, call: Callable[[sqlite3.Connection], T]) -> T:
        conn = file.conn
        if conn is None:
            raise StoreError(f"SQLite {self._component} store {self.path} is not open ({what})")
        try:
            return call(conn)
        except sqlite3.Error as exc:
            _rollback_quietly(conn)
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"SQLite database {self.path} ({self._component}): {what} failed: {exc}")

    # -- in the thread -------------------------------------------------------------------------

    def _guarded_migrate(self, file: _File) -> None:
        conn = file.conn
        if conn is None:
            raise StoreError(f"SQLite {self._component} store {self.path} is not open")
        try:
            self._migrate(conn)
        except sqlite3.Error as exc:
            _rollback_quietly(conn)
            raise self._error("bringing the schema up to date", exc) from exc

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(_SCHEMA_VERSION_DDL)
        latest = len(self._migrations)
        with _transaction(conn):
            current = self._schema_version(conn)
            if current > latest:
                raise StoreError(
                    f"database schema version {current} is newer than this Squall supports "
                    f"({latest}); upgrade Squall (SQLite file {self.path}, "
                    f"{self._component} tables)"
                )
            for migration in self._migrations[current:]:
                for statement in migration:
                    conn.execute(statement)
            if current < latest:
                conn.execute(
                    "INSERT INTO schema_version (component, version) VALUES (?, ?) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (self._component, latest),
                )

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        row = conn.execute(
            "SELECT version FROM schema_version WHERE component = ?", (self._component,)
        ).fetchone()
        return int(row[0]) if row else 0


def _connect(path: Path) -> sqlite3.Connection:
    # Created here rather than by SQLite so the file is private from its first byte; SQLite
    # gives its -wal and -shm files the same mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    # isolation_level=None: no implicit transactions, every write transaction is explicit.
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=128)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}")
    except BaseException:
        conn.close()
        raise
    if str(mode).lower() != "wal":
        log.warning("SQLite database %s cannot use WAL (journal_mode=%s); writers will "
                    "block readers", path, mode)
    return conn


def _connect_reader(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=64)
    try:
        conn.execute("PRAGMA query_only = ON")
        # Short: a point read in WAL mode waits only while the WAL itself is being reset.
        conn.execute("PRAGMA busy_timeout = 100")
    except BaseException:
        conn.close()
        raise
    return conn


# ---------------------------------------------------------------------------------------------
# Entity store
# ---------------------------------------------------------------------------------------------

_NEXT_SEQ = "(SELECT coalesce(max(seq), 0) + 1 FROM entities)"

_ENTITY_GET = """SELECT revision, doc FROM entities
    WHERE namespace = ? AND name = ? AND collection = ?"""
_ENTITY_INSERT = f"""INSERT INTO entities
    (namespace, name, collection, revision, updated, seq, doc)
    VALUES (?, ?, ?, ?, ?, {_NEXT_SEQ}, ?)"""
_ENTITY_REPLACE = f"""UPDATE entities
    SET revision = revision + 1, updated = ?, seq = {_NEXT_SEQ}, doc = ?
    WHERE namespace = ? AND name = ? AND collection = ? AND revision = ?"""
_ENTITY_DELETE = "DELETE FROM entities WHERE namespace = ? AND name = ? AND collection = ?"
# Many replaces in one statement, its own transaction (see _replaced_at_once): the rows travel
# as one JSON array of [namespace, name, collection, expected revision, doc text]; each row's
# `seq` is the last one plus its position in the batch. All or nothing: the count subquery
# (computed once, before any row changes, as is the max(seq)) finds every write at its
# expected revision, or the statement changes no row.
_ENTITY_REPLACE_BATCH = """WITH w AS (
        SELECT json_extract(value, '$[0]') AS namespace, json_extract(value, '$[1]') AS name,
            json_extract(value, '$[2]') AS collection, json_extract(value, '$[3]') AS revision,
            json_extract(value, '$[4]') AS doc, key + 1 AS position
        FROM json_each(?1))
    UPDATE entities
    SET revision = entities.revision + 1, updated = ?2,
        seq = (SELECT coalesce(max(seq), 0) FROM entities) + w.position, doc = w.doc
    FROM w
    WHERE entities.namespace = w.namespace AND entities.name = w.name
        AND entities.collection = w.collection AND entities.revision = w.revision
        AND (SELECT count(*) FROM w JOIN entities AS e
             ON e.namespace = w.namespace AND e.name = w.name
                AND e.collection = w.collection AND e.revision = w.revision) = ?3"""

_SUBJECT_COLUMNS = "namespace, subject, uuid, key_hash, limits"
_SUBJECT_BY_UUID = f"SELECT {_SUBJECT_COLUMNS} FROM subjects WHERE uuid = ?"
_SUBJECT_BY_NAMESPACE = f"SELECT {_SUBJECT_COLUMNS} FROM subjects WHERE namespace = ?"
_SUBJECT_UPSERT = f"""INSERT INTO subjects ({_SUBJECT_COLUMNS}) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (namespace) DO UPDATE SET subject = excluded.subject, uuid = excluded.uuid,
        key_hash = excluded.key_hash, limits = excluded.limits"""


class SqliteEntityStore(EntityStore):
    """Entities and namespaces' credentials in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self._db = _Database(path, "entities", ENTITY_MIGRATIONS)

    @property
    def path(self) -> Path:
        return self._db.path

    async def start(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def get(self, collection: str, namespace: str, name: str) -> StoredEntity | None:
        return self._db.read("reading an entity", _entity_get, collection, namespace, name)

    async def put(
        self,
        collection: str,
        namespace: str,
        name: str,
        doc: JSONDict,
        expected_revision: int | None,
    ) -> StoredEntity:
        if expected_revision is None:
            return await self._db.run(
                "creating an entity", _entity_create, collection, namespace, name, doc
            )
        return await self._db.run(
            "replacing an entity", _entity_replace, collection, namespace, name, doc,
            expected_revision,
        )

    async def put_many(self, writes: Sequence[EntityWrite]) -> list[StoredEntity | ConflictError]:
        return await self._db.run("writing entities", _entity_put_many, writes)

    async def delete(
        self, collection: str, namespace: str, name: str, expected_revision: int | None = None
    ) -> bool:
        return await self._db.run(
            "deleting an entity", _entity_delete, collection, namespace, name, expected_revision
        )

    async def list(
        self, collection: str, namespace: str, *, skip: int = 0, limit: int = 30,
        prefix_match: bool = False,
    ) -> list[StoredEntity]:
        return await self._db.run(
            "listing entities", _entity_list, collection, namespace, skip, limit, prefix_match
        )

    def scan(
        self, collection: str, namespace: str, *, prefix_match: bool = False, page: int = 1000
    ) -> AsyncIterator[builtins.list[StoredEntity]]:
        return keyset_pages(lambda after: self._db.run(
            "scanning entities", _entity_scan, collection, namespace, prefix_match, after, page,
        ), page)  # fmt: skip

    def scan_text(
        self, collection: str, namespace: str, *, prefix_match: bool = False, page: int = 1000
    ) -> AsyncIterator[builtins.list[StoredText]]:
        return keyset_pages(lambda after: self._db.run(
            "scanning entities", _entity_scan_text, collection, namespace, prefix_match, after,
            page,
        ), page)  # fmt: skip

    async def count(self, collection: str, namespace: str, *, prefix_match: bool = False) -> int:
        return await self._db.run(
            "counting entities", _entity_count, collection, namespace, prefix_match
        )

    async def get_subject(self, uuid: str) -> SubjectRecord | None:
        return await self._db.run("reading a subject", _subject_get, _SUBJECT_BY_UUID, uuid)

    async def get_subject_by_namespace(self, namespace: str) -> SubjectRecord | None:
        return await self._db.run(
            "reading a subject", _subject_get, _SUBJECT_BY_NAMESPACE, namespace
        )

    async def put_subject(self, record: SubjectRecord) -> None:
        await self._db.run("writing a subject", _subject_put, record)

    async def delete_subject(self, namespace: str) -> bool:
        return await self._db.run("deleting a subject", _subject_delete, namespace)

    async def iter_entities(self) -> AsyncIterator[StoredEntity]:
        last = -1
        while True:
            page = await self._db.run("exporting entities", _entity_page, last)
            if not page:
                return
            for seq, entity in page:
                last = seq
                yield entity

    async def iter_subjects(self) -> AsyncIterator[SubjectRecord]:
        for record in await self._db.run("exporting subjects", _subjects_all):
            yield record

    async def restore(self, entity: StoredEntity) -> StoredEntity:
        return await self._db.run("creating an entity", _entity_restore, entity)


# The functions below run in a store's thread, with its connection.


def _entity_get(
    conn: sqlite3.Connection, collection: str, namespace: str, name: str
) -> StoredEntity | None:
    row = conn.execute(_ENTITY_GET, (namespace, name, collection)).fetchone()
    if row is None:
        return None
    return StoredEntity(collection, namespace, name, row[0], _loads(row[1]))


def _entity_create(
    conn: sqlite3.Connection, collection: str, namespace: str, name: str, doc: JSONDict
) -> StoredEntity:
    return _entity_restore(conn, StoredEntity(collection, namespace, name, 1, doc))


def _entity_restore(conn: sqlite3.Connection, entity: StoredEntity) -> StoredEntity:
    params = (entity.namespace, entity.name, entity.collection, entity.revision, _now_ms(),
              _dumps(entity.doc))  # fmt: skip
    try:
        conn.execute(_ENTITY_INSERT, params)
    except sqlite3.IntegrityError as exc:
        # Names are unique per path across collections, as OpenWhisk's document ids are.
        raise ConflictError(
            f"an entity named {entity.namespace}/{entity.name} already exists"
        ) from exc
    return entity


def _entity_page(conn: sqlite3.Connection, after_seq: int) -> list[tuple[int, StoredEntity]]:
    rows = conn.execute(
        "SELECT seq, collection, namespace, name, revision, doc FROM entities "
        "WHERE seq > ? ORDER BY seq LIMIT 1000",
        (after_seq,),
    )
    return [(seq, StoredEntity(coll, ns, name, rev, _loads(doc)))
            for seq, coll, ns, name, rev, doc in rows]  # fmt: skip


def _subjects_all(conn: sqlite3.Connection) -> list[SubjectRecord]:
    rows = conn.execute(f"SELECT {_SUBJECT_COLUMNS} FROM subjects ORDER BY namespace")
    return [SubjectRecord(ns, s, u, k, _loads(lim)) for ns, s, u, k, lim in rows]


def _entity_replace(
    conn: sqlite3.Connection, collection: str, namespace: str, name: str, doc: JSONDict,
    expected_revision: int,
) -> StoredEntity:
    params = (_now_ms(), _dumps(doc), namespace, name, collection, expected_revision)
    if conn.execute(_ENTITY_REPLACE, params).rowcount == 0:
        raise ConflictError(
            f"{collection} {namespace}/{name} is not at revision {expected_revision}"
        )
    return StoredEntity(collection, namespace, name, expected_revision + 1, doc)


def _entity_put_many(
    conn: sqlite3.Connection, writes: Sequence[EntityWrite]
) -> list[StoredEntity | ConflictError]:
    if _replaced_at_once(conn, writes):
        return [w.replaced() for w in writes]
    with _transaction(conn):
        return [_entity_put_one(conn, w) for w in writes]


def _replaced_at_once(conn: sqlite3.Connection, writes: Sequence[EntityWrite]) -> bool:
    """Replace every write in one statement, its own transaction, as alarm state arrives (a
    thousand a second): each statement takes the GIL back after it ran, and beside a busy
    event loop each of those waits can last the 5 ms switch interval, so a writer thread that
    ran BEGIN, a read, a savepoint, the update, its release and COMMIT per batch spent up to
    30 ms a batch waiting (docs/stores.md). True when all were replaced; False, with nothing
    changed, when a write is a create, names an entity twice or meets a revision conflict:
    then the writes go one by one, so each conflict fails only its own write."""
    if len(writes) < 2 or any(w.expected_revision is None for w in writes):
        return False
    if len({(w.namespace, w.name) for w in writes}) < len(writes):
        return False
    try:
        packed = orjson.dumps([[w.namespace, w.name, w.collection, w.expected_revision,
                                _dumps(w.doc)] for w in writes]).decode()  # fmt: skip
    except TypeError:  # an integer beyond 64 bits: one by one, where SQLite names it
        return False
    before = conn.total_changes  # not rowcount: Python's sqlite3 gives -1 for a WITH statement
    conn.execute(_ENTITY_REPLACE_BATCH, (packed, _now_ms(), len(writes)))
    replaced = conn.total_changes - before
    if replaced not in (0, len(writes)):  # the count guard makes this impossible
        raise StoreError(f"a batch replace changed {replaced} of {len(writes)} entities")
    return replaced == len(writes)


def _entity_put_one(conn: sqlite3.Connection, w: EntityWrite) -> StoredEntity | ConflictError:
    try:
        if w.expected_revision is None:
            return _entity_create(conn, w.collection, w.namespace, w.name, w.doc)
        return _entity_replace(conn, w.collection, w.namespace, w.name, w.doc, w.expected_revision)
    except ConflictError as exc:  # a failed statement leaves the transaction open
        return exc


def _entity_delete(
    conn: sqlite3.Connection, collection: str, namespace: str, name: str,
    expected_revision: int | None,
) -> bool:
    key = (namespace, name, collection)
    if expected_revision is None:
        return conn.execute(_ENTITY_DELETE, key).rowcount > 0
    with _transaction(conn):
        row = conn.execute(_ENTITY_GET, key).fetchone()
        if row is None:
            return False
        if row[0] != expected_revision:
            raise ConflictError(
                f"{collection} {namespace}/{name} is at revision {row[0]}, "
                f"not {expected_revision}"
            )
        conn.execute(_ENTITY_DELETE, key)
    return True


def _entity_list(
    conn: sqlite3.Connection, collection: str, namespace: str, skip: int, limit: int,
    prefix_match: bool,
) -> list[StoredEntity]:
    where, params = entity_scope(collection, namespace, prefix_match, "?")
    rows = conn.execute(
        f"SELECT namespace, name, revision, doc FROM entities WHERE {where} "
        "ORDER BY updated DESC, seq DESC LIMIT ? OFFSET ?",
        (*params, max(limit, 0), max(skip, 0)),
    )
    return [StoredEntity(collection, ns, name, rev, _loads(doc)) for ns, name, rev, doc in rows]


def _entity_scan(
    conn: sqlite3.Connection, collection: str, namespace: str, prefix_match: bool,
    after: tuple[str, str] | None, limit: int,
) -> list[StoredEntity]:
    rows = _entity_scan_rows(conn, collection, namespace, prefix_match, after, limit)
    return [StoredEntity(collection, ns, name, rev, _loads(doc)) for ns, name, rev, doc in rows]


def _entity_scan_text(
    conn: sqlite3.Connection, collection: str, namespace: str, prefix_match: bool,
    after: tuple[str, str] | None, limit: int,
) -> list[StoredText]:
    rows = _entity_scan_rows(conn, collection, namespace, prefix_match, after, limit)
    return [StoredText(collection, ns, name, rev, doc) for ns, name, rev, doc in rows]


def _entity_scan_rows(
    conn: sqlite3.Connection, collection: str, namespace: str, prefix_match: bool,
    after: tuple[str, str] | None, limit: int,
) -> sqlite3.Cursor:
    where, params = entity_scope(collection, namespace, prefix_match, "?")
    if after is not None:  # keyset paging along the primary key (namespace, name)
        where += " AND (namespace, name) > (?, ?)"
        params = (*params, *after)
    return conn.execute(
        f"SELECT namespace, name, revision, doc FROM entities WHERE {where} "
        "ORDER BY namespace, name LIMIT ?",
        (*params, max(limit, 1)),
    )


def _entity_count(
    conn: sqlite3.Connection, collection: str, namespace: str, prefix_match: bool
) -> int:
    where, params = entity_scope(collection, namespace, prefix_match, "?")
    return int(conn.execute(f"SELECT count(*) FROM entities WHERE {where}", params).fetchone()[0])


def _subject_get(conn: sqlite3.Connection, query: str, key: str) -> SubjectRecord | None:
    row = conn.execute(query, (key,)).fetchone()
    if row is None:
        return None
    namespace, subject, uuid, key_hash, limits = row
    return SubjectRecord(namespace, subject, uuid, key_hash, _loads(limits))


def _subject_put(conn: sqlite3.Connection, record: SubjectRecord) -> None:
    params = (record.namespace, record.subject, record.uuid, record.key_hash,
              _dumps(record.limits))
    try:
        conn.execute(_SUBJECT_UPSERT, params)
    except sqlite3.IntegrityError as exc:
        raise ConflictError(
            f"key uuid {record.uuid} already belongs to another namespace"
        ) from exc


def _subject_delete(conn: sqlite3.Connection, namespace: str) -> bool:
    return conn.execute("DELETE FROM subjects WHERE namespace = ?", (namespace,)).rowcount > 0


# ---------------------------------------------------------------------------------------------
# Activation store
# ---------------------------------------------------------------------------------------------

_ACTIVATION_UPSERT = """INSERT OR REPLACE INTO activations
    (activation_id, namespace, name, path, entity_path, start_ms, end_ms, duration_ms,
     status_code, doc)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
# The same for a whole batch in one statement: the rows travel as one JSON array of arrays
# and SQLite unpacks them itself. executemany takes the GIL back after every row it steps,
# and while the event loop's thread is busy each of those waits up to the interpreter's 5 ms
# switch interval: a batch of 500 took 1.8 s instead of 0.05 s beside a busy thread, and an
# alarm fire waits for its trigger record's batch. One statement waits once (docs/stores.md).
_ACTIVATION_UPSERT_BATCH = """INSERT OR REPLACE INTO activations
    (activation_id, namespace, name, path, entity_path, start_ms, end_ms, duration_ms,
     status_code, doc)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
        json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),
        json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'),
        json_extract(value, '$[8]'), json_extract(value, '$[9]')
    FROM json_each(?)"""


class SqliteActivationStore(BatchedActivationStore):
    """Activation records in one SQLite file, written in batches off the event loop.

    `store` only files the record in memory; a background task writes what is pending every
    `flush_interval_s`, or as soon as `batch_size` records wait, one transaction per batch
    (the batching itself is `BatchedActivationStore`'s, shared with the server backends).
    Reads see pending records at once. The store owns a record once it is handed over: callers
    must not mutate it afterwards.

    The listing's `name` filter follows OpenWhisk's activations view: `act` matches the
    activations of the action `act` outside any package, `pkg/act` those of `act` in package
    (or package binding) `pkg`. A bare name does not match packaged actions.
    """

    def __init__(self, path: Path, **options: Any) -> None:
        super().__init__(**options)
        self._db = _Database(path, "activations", ACTIVATION_MIGRATIONS)

    @property
    def path(self) -> Path:
        return self._db.path

    @property
    def description(self) -> str:
        return f"SQLite activation store {self.path}"

    async def _connect(self) -> None:
        await self._db.open()

    async def _disconnect(self) -> None:
        await self._db.close()

    async def _write(self, batch: Sequence[JSONDict]) -> None:
        await self._db.run("writing activation records", _activations_write, batch)

    async def _get(self, namespace: str, activation_id: str) -> JSONDict | None:
        return self._db.read("reading an activation", _activation_get, namespace, activation_id)

    async def _list(self, query: ActivationQuery) -> list[JSONDict]:
        return await self._db.run("listing activations", _activations_list, query)

    async def _count(self, query: ActivationQuery) -> int:
        return await self._db.run("counting activations", _activations_count, query)

    async def _duration_stats(
        self, namespace: str, path: str, since_ms: int
    ) -> DurationStats | None:
        """Stats over the most recent 10,000 records whose `namespace` (the invoking namespace,
        as OpenWhisk's duration checker queries per invocation namespace) and `path`
        annotation match, started at or after `since_ms`. Percentiles are nearest-rank."""
        return await self._db.run(
            "reading durations", _duration_stats, namespace, path, since_ms
        )

    async def _purge_before(self, before_ms: int) -> int:
        """Delete in chunks, so batched writes interleave with a long purge."""
        total = 0
        while True:
            deleted = await self._db.run("purging activations", _activations_purge, before_ms)
            total += deleted
            if deleted < PURGE_CHUNK:
                return total

    async def iter_records(self, page: int = 1000) -> AsyncIterator[RecordPage]:
        await self._prepare_read()
        after = 0
        while True:
            rows = await self._db.run("exporting activations", _record_page, after, page)
            if not rows:
                return
            after = rows[-1][0]
            yield [_loads(doc) for _, doc in rows]


def _activations_write(conn: sqlite3.Connection, batch: Sequence[JSONDict]) -> None:
    rows = []
    for record in batch:
        try:
            rows.append(activation_row(record))
        except (TypeError, ValueError) as exc:
            # A record that cannot be serialised would fail every batch it joins: drop it loudly.
            log.error("dropping activation %s, which cannot be serialised: %s",
                      record.get("activationId"), exc)
    try:
        packed: str | None = orjson.dumps(rows).decode()
    except TypeError:  # an integer beyond 64 bits: row by row, SQLite names the bad one
        packed = None
    if packed is not None:  # one statement, its own transaction (one GIL wait, not three)
        conn.execute(_ACTIVATION_UPSERT_BATCH, (packed,))
        return
    with _transaction(conn):
        conn.executemany(_ACTIVATION_UPSERT, rows)


def _activation_get(
    conn: sqlite3.Connection, namespace: str, activation_id: str
) -> JSONDict | None:
    row = conn.execute(
        "SELECT doc FROM activations WHERE activation_id = ? AND namespace = ?",
        (activation_id, namespace),
    ).fetchone()
    return None if row is None else dict(_loads(row[0]))


def _activations_list(conn: sqlite3.Connection, query: ActivationQuery) -> list[JSONDict]:
    where, params = activation_filter(query, "?")
    rows = conn.execute(
        f"SELECT doc FROM activations WHERE {where} "
        "ORDER BY start_ms DESC, activation_id DESC LIMIT ? OFFSET ?",
        (*params, max(query.limit, 0), max(query.skip, 0)),
    )
    return [_loads(doc) for (doc,) in rows]


def _activations_count(conn: sqlite3.Connection, query: ActivationQuery) -> int:
    where, params = activation_filter(query, "?")
    return int(conn.execute(f"SELECT count(*) FROM activations WHERE {where}", params)
               .fetchone()[0])


def _duration_stats(
    conn: sqlite3.Connection, namespace: str, path: str, since_ms: int
) -> DurationStats | None:
    rows = conn.execute(
        "SELECT duration_ms FROM activations WHERE path = ? AND start_ms >= ? "
        "AND namespace = ? AND duration_ms IS NOT NULL ORDER BY start_ms DESC LIMIT ?",
        (path, since_ms, namespace, STATS_WINDOW),
    )
    durations = sorted(d for (d,) in rows)
    if not durations:
        return None
    return DurationStats(
        count=len(durations),
        average_ms=sum(durations) / len(durations),
        p50_ms=float(_percentile(durations, 50)),
        p99_ms=float(_percentile(durations, 99)),
    )


def _record_page(conn: sqlite3.Connection, after: int, page: int) -> list[tuple[int, str]]:
    # Rowid order (insertion order) pages without a sort; the rowid is the table's own key.
    return conn.execute(
        "SELECT rowid, doc FROM activations WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (after, page),
    ).fetchall()


def _activations_purge(conn: sqlite3.Connection, before_ms: int) -> int:
    # Old rows sit at the low rowids, so each chunk's scan finds its rows near the start.
    return conn.execute(
        "DELETE FROM activations WHERE rowid IN "
        "(SELECT rowid FROM activations WHERE start_ms < ? LIMIT ?)",
        (before_ms, PURGE_CHUNK),
    ).rowcount
