"""PostgreSQL stores for entities and activations (psycopg 3, async, with a connection pool).

The tables and their semantics mirror `stores.sqlite` row for row, so the same contract suite
passes and `squall store copy` moves data verbatim. Documents are stored in `json` columns:
PostgreSQL validates them but keeps the text as written (unlike `jsonb`, which would reorder
keys and cost a conversion on every write), and they stay queryable with `->>`.

Squall's own URL options (stripped before the URL reaches libpq; every other query parameter,
such as `sslmode` or `sslrootcert`, is libpq's):

- `schema=NAME`: tables live in this schema (created if missing); default `public`.
- `pool_min=N`, `pool_max=N`: connection pool size (default 1 and 10).
- `pool_timeout=S`: how long an operation waits for a connection before the store is reported
  unavailable (default 5 s).

Connection failures become DependencyUnavailable (HTTP 503 at the API; activation records stay
buffered and are retried); any other database error becomes StoreError.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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
from squall.errors import ConflictError, DependencyUnavailable, StoreError
from squall.stores.base import BatchedActivationStore
from squall.stores.options import parse_postgres_url
from squall.stores.rows import (
    PURGE_CHUNK,
    STATS_WINDOW,
    activation_filter,
    activation_row,
    dumps,
    entity_scope,
    keyset_pages,
    now_ms,
)
from squall.stores.urls import redact

__all__ = ["PostgresActivationStore", "PostgresEntityStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Result = StoredEntity | ConflictError  # one write of put_many

Migration = tuple[str, ...]

# Serialises migrations of one database across processes starting at once.
_MIGRATION_LOCK_KEY = 0x5C0A11

_SCHEMA_VERSION_DDL = """CREATE TABLE IF NOT EXISTS schema_version (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)"""

# COLLATE "C" everywhere a name is compared or ordered: byte order, as SQLite compares, so the
# prefix ranges and "newest first, then by id" orders are the same on both backends.
ENTITY_MIGRATIONS: tuple[Migration, ...] = (
    (
        "CREATE SEQUENCE entities_seq",
        """CREATE TABLE entities (
            namespace TEXT COLLATE "C" NOT NULL,
            name TEXT COLLATE "C" NOT NULL,
            collection TEXT COLLATE "C" NOT NULL,
            revision INTEGER NOT NULL,
            updated BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            doc JSON NOT NULL,
            PRIMARY KEY (namespace, name)
        )""",
        """CREATE INDEX entities_by_collection
            ON entities (collection, namespace, updated DESC, seq DESC)""",
        """CREATE TABLE subjects (
            namespace TEXT COLLATE "C" PRIMARY KEY,
            subject TEXT NOT NULL,
            uuid TEXT COLLATE "C" NOT NULL UNIQUE,
            key_hash TEXT NOT NULL,
            limits JSON NOT NULL
        )""",
    ),
)

ACTIVATION_MIGRATIONS: tuple[Migration, ...] = (
    (
        """CREATE TABLE activations (
            activation_id TEXT COLLATE "C" PRIMARY KEY,
            namespace TEXT COLLATE "C" NOT NULL,
            name TEXT COLLATE "C" NOT NULL,
            path TEXT COLLATE "C" NOT NULL,
            entity_path TEXT COLLATE "C" NOT NULL,
            start_ms BIGINT NOT NULL,
            end_ms BIGINT NOT NULL,
            duration_ms BIGINT,
            status_code INTEGER,
            doc JSON NOT NULL
        )""",
        """CREATE INDEX activations_by_namespace
            ON activations (namespace, start_ms DESC, activation_id DESC)""",
        """CREATE INDEX activations_by_name
            ON activations (namespace, entity_path, start_ms DESC, activation_id DESC)""",
        # Covers duration_stats: the scheduler's query never reads the records themselves.
        """CREATE INDEX activations_by_path
            ON activations (path, namespace, start_ms DESC) INCLUDE (duration_ms)""",
        # Retention purges and the keyset paging of `squall store copy`.
        "CREATE INDEX activations_by_start ON activations (start_ms, activation_id)",
    ),
)


# ---------------------------------------------------------------------------------------------
# Connection plumbing shared by both stores
# ---------------------------------------------------------------------------------------------


class _Database:
    """A connection pool, the schema migrations of one component, and error translation."""

    def __init__(self, url: str, variable: str, component: str, migrations: Sequence[Migration]):
        self.options = parse_postgres_url(url, variable)
        self.where = f"PostgreSQL {redact(url)} ({variable})"
        self._component = component
        self._migrations = migrations
        self._pool: AsyncConnectionPool | None = None

    async def open(self) -> None:
        """Open the pool and migrate; DependencyUnavailable while the server is unreachable."""
        if self._pool is None:
            self._pool = self._make_pool()
            await self._pool.open(wait=False)
        await self.run("bringing the schema up to date", self._migrate)

    def _make_pool(self) -> AsyncConnectionPool:
        schema = self.options.schema
        return AsyncConnectionPool(
            self.options.conninfo,
            min_size=self.options.pool_min,
            max_size=max(self.options.pool_max, self.options.pool_min),
            timeout=self.options.pool_timeout,
            open=False,
            # Autocommit: every statement commits unless run in an explicit transaction block.
            kwargs={"autocommit": True, "options": f"-c search_path={schema}"},
            # A connection broken by a server restart is replaced, not handed out.
            check=AsyncConnectionPool.check_connection,
            reconnect_timeout=3600.0,
            name=f"squall-{self._component}",
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def run(
        self, what: str, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
    ) -> T:
        """Run `fn(connection)`; connection problems become DependencyUnavailable."""
        if self._pool is None:
            raise StoreError(f"{self.where}: the {self._component} store is not open ({what})")
        try:
            async with self._pool.connection() as conn:
                return await fn(conn)
        except PoolTimeout as exc:
            raise DependencyUnavailable(
                f"{self.where} is unreachable ({what}): no connection within "
                f"{self.options.pool_timeout:g} s"
            ) from exc
        except psycopg.OperationalError as exc:
            raise DependencyUnavailable(f"{self.where}: {what} failed: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: {what} failed: {exc}") from exc

    async def _migrate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        latest = len(self._migrations)
        schema = sql.Identifier(self.options.schema)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            await conn.execute(_SCHEMA_VERSION_DDL)
            current = await self._version(conn)
            if current > latest:
                raise StoreError(
                    f"database schema version {current} is newer than this Squall supports "
                    f"({latest}); upgrade Squall ({self.where}, schema {self.options.schema}, "
                    f"{self._component} tables)"
                )
            for migration in self._migrations[current:]:
                for statement in migration:
                    await conn.execute(statement)
            if current < latest:
                await conn.execute(
                    "INSERT INTO schema_version (component, version) VALUES (%s, %s) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (self._component, latest),
                )

    async def _version(self, conn: psycopg.AsyncConnection[Any]) -> int:
        cur = await conn.execute(
            "SELECT version FROM schema_version WHERE component = %s", (self._component,)
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


def _loads(text: Any) -> Any:
    return orjson.loads(text)


# ---------------------------------------------------------------------------------------------
# Entity store
# ---------------------------------------------------------------------------------------------

_ENTITY_GET = """SELECT revision, doc::text FROM entities
    WHERE namespace = %s AND name = %s AND collection = %s"""
_ENTITY_INSERT = """INSERT INTO entities
    (namespace, name, collection, revision, updated, seq, doc)
    VALUES (%s, %s, %s, %s, %s, nextval('entities_seq'), %s)"""
_ENTITY_REPLACE = """UPDATE entities
    SET revision = revision + 1, updated = %s, seq = nextval('entities_seq'), doc = %s
    WHERE namespace = %s AND name = %s AND collection = %s AND revision = %s"""
# Many replaces in one statement (one round trip): the rows at their expected revision are
# updated and returned; a missing one is a conflict. The batch travels as one JSON array: text
# arrays of documents would cost psycopg a regex escape per element.
_ENTITY_REPLACE_MANY = """UPDATE entities AS e
    SET revision = e.revision + 1, updated = %s, seq = nextval('entities_seq'), doc = w.doc
    FROM json_to_recordset(%s::json)
        AS w(namespace text, name text, collection text, revision integer, doc json)
    WHERE e.namespace = w.namespace AND e.name = w.name AND e.collection = w.collection
        AND e.revision = w.revision
    RETURNING e.namespace, e.name"""
_ENTITY_DELETE = "DELETE FROM entities WHERE namespace = %s AND name = %s AND collection = %s"
_SUBJECT_COLUMNS = "namespace, subject, uuid, key_hash, limits::text"
_SUBJECT_UPSERT = """INSERT INTO subjects (namespace, subject, uuid, key_hash, limits)
    VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (namespace) DO UPDATE SET subject = excluded.subject, uuid = excluded.uuid,
        key_hash = excluded.key_hash, limits = excluded.limits"""


class PostgresEntityStore(EntityStore):
    """Entities and namespaces' credentials in PostgreSQL."""

    def __init__(self, url: str, *, variable: str = "SQUALL_ENTITY_STORE") -> None:
        self._db = _Database(url, variable, "entities", ENTITY_MIGRATIONS)

    async def start(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def get(self, collection: str, namespace: str, name: str) -> StoredEntity | None:
        async def query(conn: psycopg.AsyncConnection[Any]) -> StoredEntity | None:
            cur = await conn.execute(_ENTITY_GET, (namespace, name, collection))
            row = await cur.fetchone()
            if row is None:
                return None
            return StoredEntity(collection, namespace, name, row[0], _loads(row[1]))

        return await self._db.run("reading an entity", query)

    async def put(
        self, collection: str, namespace: str, name: str, doc: JSONDict,
        expected_revision: int | None,
    ) -> StoredEntity:
        if expected_revision is None:
            return await self.restore(StoredEntity(collection, namespace, name, 1, doc))
        return await self._db.run(
            "replacing an entity",
            lambda conn: _entity_replace(conn, collection, namespace, name, doc, expected_revision),
        )

    async def put_many(self, writes: Sequence[EntityWrite]) -> list[StoredEntity | ConflictError]:
        """Alarm state arrives in batches of hundreds a second: the replaces of a batch are one
        statement (one round trip), with no transaction around it when the batch is only
        replaces (a statement is atomic by itself); creates go one by one in one transaction,
        each in its own savepoint, so a create that meets a taken name fails alone."""

        if not writes:
            return []
        if len({(w.namespace, w.name) for w in writes}) < len(writes):
            return await self._put_each(writes)  # the same entity twice: in order, one by one
        replaces = [w for w in writes if w.expected_revision is not None]
        if len(replaces) == len(writes):
            replaced = await self._db.run(
                "writing entities", lambda conn: _entity_replace_many(conn, replaces)
            )
            return [_replace_result(w, replaced) for w in writes]

        async def write_all(conn: psycopg.AsyncConnection[Any]) -> list[Result]:
            async with conn.transaction():
                replaced = await _entity_replace_many(conn, replaces)
                results: list[Result] = []
                for w in writes:
                    if w.expected_revision is not None:
                        results.append(_replace_result(w, replaced))
                    else:
                        results.append(await _write_or_conflict(conn, w))
            return results

        return await self._db.run("writing entities", write_all)

    async def _put_each(self, writes: Sequence[EntityWrite]) -> list[Result]:
        """One transaction on one connection, one statement per write, in order."""

        async def write_all(conn: psycopg.AsyncConnection[Any]) -> list[Result]:
            results: list[Result] = []
            async with conn.transaction():
                for w in writes:
                    results.append(await _write_or_conflict(conn, w))
            return results

        return await self._db.run("writing entities", write_all)

    async def restore(self, entity: StoredEntity) -> StoredEntity:
        """Create an entity at its stored revision (`put` creates at 1; copies keep theirs)."""

        async def insert(conn: psycopg.AsyncConnection[Any]) -> StoredEntity:
            params = (entity.namespace, entity.name, entity.collection, entity.revision,
                      now_ms(), dumps(entity.doc))  # fmt: skip
            try:
                await conn.execute(_ENTITY_INSERT, params)
            except psycopg.errors.UniqueViolation as exc:
                raise ConflictError(
                    f"an entity named {entity.namespace}/{entity.name} already exists"
                ) from exc
            return entity

        return await self._db.run("creating an entity", insert)

    async def delete(
        self, collection: str, namespace: str, name: str, expected_revision: int | None = None
    ) -> bool:
        return await self._db.run(
            "deleting an entity",
            lambda conn: _entity_delete(conn, collection, namespace, name, expected_revision),
        )

    async def list(
        self, collection: str, namespace: str, *, skip: int = 0, limit: int = 30,
        prefix_match: bool = False,
    ) -> list[StoredEntity]:
        where, params = entity_scope(collection, namespace, prefix_match, "%s")

        async def query(conn: psycopg.AsyncConnection[Any]) -> list[StoredEntity]:
            cur = await conn.execute(
                f"SELECT namespace, name, revision, doc::text FROM entities WHERE {where} "
                "ORDER BY updated DESC, seq DESC LIMIT %s OFFSET %s",
                (*params, max(limit, 0), max(skip, 0)),
            )
            return [StoredEntity(collection, ns, nm, rev, _loads(doc))
                    for ns, nm, rev, doc in await cur.fetchall()]  # fmt: skip

        return await self._db.run("listing entities", query)

    def scan(
        self, collection: str, namespace: str, *, prefix_match: bool = False, page: int = 1000
    ) -> AsyncIterator[builtins.list[StoredEntity]]:
        where, params = entity_scope(collection, namespace, prefix_match, "%s")
        return keyset_pages(lambda after: self._db.run(
            "scanning entities", partial(_entity_scan, where, params, collection, after, page),
        ), page)  # fmt: skip

    def scan_text(
        self, collection: str, namespace: str, *, prefix_match: bool = False, page: int = 1000
    ) -> AsyncIterator[builtins.list[StoredText]]:
        where, params = entity_scope(collection, namespace, prefix_match, "%s")
        return keyset_pages(lambda after: self._db.run(
            "scanning entities", partial(_entity_scan_text, where, params, collection, after, page),
        ), page)  # fmt: skip

    async def count(self, collection: str, namespace: str, *, prefix_match: bool = False) -> int:
        where, params = entity_scope(collection, namespace, prefix_match, "%s")

        async def query(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute(f"SELECT count(*) FROM entities WHERE {where}", params)
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self._db.run("counting entities", query)

    async def get_subject(self, uuid: str) -> SubjectRecord | None:
        return await self._subject("uuid", uuid)

    async def get_subject_by_namespace(self, namespace: str) -> SubjectRecord | None:
        return await self._subject("namespace", namespace)

    async def _subject(self, column: str, key: str) -> SubjectRecord | None:
        async def query(conn: psycopg.AsyncConnection[Any]) -> SubjectRecord | None:
            cur = await conn.execute(
                f"SELECT {_SUBJECT_COLUMNS} FROM subjects WHERE {column} = %s", (key,)
            )
            row = await cur.fetchone()
            if row is None:
                return None
            namespace, subject, uuid, key_hash, limits = row
            return SubjectRecord(namespace, subject, uuid, key_hash, _loads(limits))

        return await self._db.run("reading a subject", query)

    async def put_subject(self, record: SubjectRecord) -> None:
        async def upsert(conn: psycopg.AsyncConnection[Any]) -> None:
            params = (record.namespace, record.subject, record.uuid, record.key_hash,
                      dumps(record.limits))  # fmt: skip
            try:
                await conn.execute(_SUBJECT_UPSERT, params)
            except psycopg.errors.UniqueViolation as exc:
                raise ConflictError(
                    f"key uuid {record.uuid} already belongs to another namespace"
                ) from exc

        await self._db.run("writing a subject", upsert)

    async def delete_subject(self, namespace: str) -> bool:
        async def delete(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute("DELETE FROM subjects WHERE namespace = %s", (namespace,))
            return cur.rowcount > 0

        return await self._db.run("deleting a subject", delete)

    async def iter_entities(self) -> AsyncIterator[StoredEntity]:
        """Every entity, oldest write first (the order a copy must replay them in)."""
        last = -1
        while True:
            page = await self._db.run("exporting entities", partial(_entity_page, after_seq=last))
            if not page:
                return
            for seq, entity in page:
                last = seq
                yield entity

    async def iter_subjects(self) -> AsyncIterator[SubjectRecord]:
        async def query(conn: psycopg.AsyncConnection[Any]) -> list[SubjectRecord]:
            cur = await conn.execute(f"SELECT {_SUBJECT_COLUMNS} FROM subjects ORDER BY namespace")
            return [SubjectRecord(ns, s, u, k, _loads(lim))
                    for ns, s, u, k, lim in await cur.fetchall()]  # fmt: skip

        for record in await self._db.run("exporting subjects", query):
            yield record


async def _entity_page(
    conn: psycopg.AsyncConnection[Any], after_seq: int
) -> list[tuple[int, StoredEntity]]:
    cur = await conn.execute(
        "SELECT seq, collection, namespace, name, revision, doc::text FROM entities "
        "WHERE seq > %s ORDER BY seq LIMIT 1000",
        (after_seq,),
    )
    return [(seq, StoredEntity(coll, ns, name, rev, _loads(doc)))
            for seq, coll, ns, name, rev, doc in await cur.fetchall()]  # fmt: skip


async def _entity_write(conn: psycopg.AsyncConnection[Any], w: EntityWrite) -> StoredEntity:
    if w.expected_revision is not None:
        return await _entity_replace(
            conn, w.collection, w.namespace, w.name, w.doc, w.expected_revision
        )
    params = (w.namespace, w.name, w.collection, 1, now_ms(), dumps(w.doc))
    try:
        async with conn.transaction():  # a savepoint: a taken name must not abort the batch
            await conn.execute(_ENTITY_INSERT, params)
    except psycopg.errors.UniqueViolation as exc:
        raise ConflictError(f"an entity named {w.namespace}/{w.name} already exists") from exc
    return StoredEntity(w.collection, w.namespace, w.name, 1, w.doc)


async def _write_or_conflict(conn: psycopg.AsyncConnection[Any], w: EntityWrite) -> Result:
    """One write of a batch: a conflict is its result, not the batch's failure."""
    try:
        return await _entity_write(conn, w)
    except ConflictError as exc:
        return exc


async def _entity_replace_many(
    conn: psycopg.AsyncConnection[Any], writes: Sequence[EntityWrite]
) -> set[tuple[str, str]]:
    """Replace every entity of `writes` that is at its expected revision; those replaced."""
    if not writes:
        return set()
    rows = dumps([
        {"namespace": w.namespace, "name": w.name, "collection": w.collection,
         "revision": w.expected_revision, "doc": w.doc}
        for w in writes
    ])  # fmt: skip
    cur = await conn.execute(_ENTITY_REPLACE_MANY, (now_ms(), rows))
    return {(namespace, name) for namespace, name in await cur.fetchall()}


def _replace_result(w: EntityWrite, replaced: set[tuple[str, str]]) -> Result:
    assert w.expected_revision is not None
    if (w.namespace, w.name) not in replaced:
        return ConflictError(
            f"{w.collection} {w.namespace}/{w.name} is not at revision {w.expected_revision}"
        )
    return w.replaced()


async def _entity_replace(
    conn: psycopg.AsyncConnection[Any], collection: str, namespace: str, name: str,
    doc: JSONDict, expected_revision: int,
) -> StoredEntity:
    params = (now_ms(), dumps(doc), namespace, name, collection, expected_revision)
    cur = await conn.execute(_ENTITY_REPLACE, params)
    if cur.rowcount == 0:
        raise ConflictError(
            f"{collection} {namespace}/{name} is not at revision {expected_revision}"
        )
    return StoredEntity(collection, namespace, name, expected_revision + 1, doc)


async def _entity_delete(
    conn: psycopg.AsyncConnection[Any], collection: str, namespace: str, name: str,
    expected_revision: int | None,
) -> bool:
    key = (namespace, name, collection)
    if expected_revision is None:
        return (await conn.execute(_ENTITY_DELETE, key)).rowcount > 0
    async with conn.transaction():
        cur = await conn.execute(_ENTITY_GET + " FOR UPDATE", key)
        row = await cur.fetchone()
        if row is None:
            return False
        if row[0] != expected_revision:
            raise ConflictError(
                f"{collection} {namespace}/{name} is at revision {row[0]}, not {expected_revision}"
            )
        await conn.execute(_ENTITY_DELETE, key)
    return True


async def _entity_scan(
    where: str, params: tuple[str, ...], collection: str, after: tuple[str, str] | None,
    limit: int, conn: psycopg.AsyncConnection[Any],
) -> list[StoredEntity]:
    rows = await _entity_scan_rows(where, params, after, limit, conn)
    return [StoredEntity(collection, ns, nm, rev, _loads(doc)) for ns, nm, rev, doc in rows]


async def _entity_scan_text(
    where: str, params: tuple[str, ...], collection: str, after: tuple[str, str] | None,
    limit: int, conn: psycopg.AsyncConnection[Any],
) -> list[StoredText]:
    rows = await _entity_scan_rows(where, params, after, limit, conn)
    return [StoredText(collection, ns, nm, rev, text) for ns, nm, rev, text in rows]


async def _entity_scan_rows(
    where: str, params: tuple[str, ...], after: tuple[str, str] | None, limit: int,
    conn: psycopg.AsyncConnection[Any],
) -> list[tuple[str, str, int, str]]:
    if after is not None:
        where += " AND (namespace, name) > (%s, %s)"
        params = (*params, *after)
    cur = await conn.execute(
        f"SELECT namespace, name, revision, doc::text FROM entities WHERE {where} "
        "ORDER BY namespace, name LIMIT %s",
        (*params, max(limit, 1)),
    )
    return await cur.fetchall()


# ---------------------------------------------------------------------------------------------
# Activation store
# ---------------------------------------------------------------------------------------------

_ACTIVATION_UPSERT = """INSERT INTO activations
    (activation_id, namespace, name, path, entity_path, start_ms, end_ms, duration_ms,
     status_code, doc)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (activation_id) DO UPDATE SET namespace = excluded.namespace,
        name = excluded.name, path = excluded.path, entity_path = excluded.entity_path,
        start_ms = excluded.start_ms, end_ms = excluded.end_ms,
        duration_ms = excluded.duration_ms, status_code = excluded.status_code,
        doc = excluded.doc"""

_DURATION_STATS = """SELECT count(*), avg(d),
        percentile_disc(0.5) WITHIN GROUP (ORDER BY d),
        percentile_disc(0.99) WITHIN GROUP (ORDER BY d)
    FROM (SELECT duration_ms AS d FROM activations
          WHERE path = %s AND namespace = %s AND start_ms >= %s AND duration_ms IS NOT NULL
          ORDER BY start_ms DESC LIMIT %s) recent"""


class PostgresActivationStore(BatchedActivationStore):
    """Activation records in PostgreSQL, written in batches (one pipelined executemany each).

    Same listing rules as the SQLite store (see `SqliteActivationStore`); `percentile_disc` is
    the nearest-rank percentile SQLite's store computes in Python.
    """

    def __init__(
        self, url: str, *, variable: str = "SQUALL_ACTIVATION_STORE", **options: Any
    ) -> None:
        super().__init__(**options)
        self._db = _Database(url, variable, "activations", ACTIVATION_MIGRATIONS)

    @property
    def description(self) -> str:
        return f"activation store {self._db.where}"

    async def _connect(self) -> None:
        await self._db.open()

    async def _disconnect(self) -> None:
        await self._db.close()

    async def _write(self, batch: Sequence[JSONDict]) -> None:
        rows = _rows(batch)

        async def write(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(_ACTIVATION_UPSERT, rows)

        await self._db.run("writing activation records", write)

    async def _get(self, namespace: str, activation_id: str) -> JSONDict | None:
        async def query(conn: psycopg.AsyncConnection[Any]) -> JSONDict | None:
            cur = await conn.execute(
                "SELECT doc::text FROM activations WHERE activation_id = %s AND namespace = %s",
                (activation_id, namespace),
            )
            row = await cur.fetchone()
            return None if row is None else dict(_loads(row[0]))

        return await self._db.run("reading an activation", query)

    async def _list(self, query: ActivationQuery) -> list[JSONDict]:
        where, params = activation_filter(query, "%s")

        async def select(conn: psycopg.AsyncConnection[Any]) -> list[JSONDict]:
            cur = await conn.execute(
                f"SELECT doc::text FROM activations WHERE {where} "
                "ORDER BY start_ms DESC, activation_id DESC LIMIT %s OFFSET %s",
                (*params, max(query.limit, 0), max(query.skip, 0)),
            )
            return [_loads(doc) for (doc,) in await cur.fetchall()]

        return await self._db.run("listing activations", select)

    async def _count(self, query: ActivationQuery) -> int:
        where, params = activation_filter(query, "%s")

        async def select(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute(f"SELECT count(*) FROM activations WHERE {where}", params)
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self._db.run("counting activations", select)

    async def _duration_stats(
        self, namespace: str, path: str, since_ms: int
    ) -> DurationStats | None:
        async def select(conn: psycopg.AsyncConnection[Any]) -> DurationStats | None:
            cur = await conn.execute(_DURATION_STATS, (path, namespace, since_ms, STATS_WINDOW))
            row = await cur.fetchone()
            if row is None or not row[0]:
                return None
            count, avg, p50, p99 = row
            return DurationStats(int(count), float(avg), float(p50), float(p99))

        return await self._db.run("reading durations", select)

    async def _purge_before(self, before_ms: int) -> int:
        total = 0
        while True:
            deleted = await self._db.run("purging activations", lambda c: _purge(c, before_ms))
            total += deleted
            if deleted < PURGE_CHUNK:
                return total

    async def iter_records(self, page: int = 1000) -> AsyncIterator[RecordPage]:
        """Every record in pages, oldest start first (keyset paging, not OFFSET)."""
        await self._prepare_read()
        after: tuple[int, str] = (-(2**62), "")
        while True:
            rows = await self._db.run(
                "exporting activations", partial(_record_page, after=after, page=page)
            )
            if not rows:
                return
            after = (rows[-1][0], rows[-1][1])
            yield [_loads(doc) for _, _, doc in rows]


def _rows(batch: Sequence[JSONDict]) -> list[tuple[Any, ...]]:
    rows = []
    for record in batch:
        try:
            rows.append(activation_row(record))
        except (TypeError, ValueError) as exc:
            # A record that cannot be serialised would fail every batch it joins: drop it loudly.
            log.error("dropping activation %s, which cannot be serialised: %s",
                      record.get("activationId"), exc)
    return rows


async def _purge(conn: psycopg.AsyncConnection[Any], before_ms: int) -> int:
    cur = await conn.execute(
        "DELETE FROM activations WHERE activation_id IN (SELECT activation_id FROM activations "
        "WHERE start_ms < %s LIMIT %s)",
        (before_ms, PURGE_CHUNK),
    )
    return cur.rowcount


async def _record_page(
    conn: psycopg.AsyncConnection[Any], after: tuple[int, str], page: int
) -> list[tuple[int, str, str]]:
    cur = await conn.execute(
        "SELECT start_ms, activation_id, doc::text FROM activations "
        "WHERE (start_ms, activation_id) > (%s, %s) ORDER BY start_ms, activation_id LIMIT %s",
        (*after, page),
    )
    return await cur.fetchall()


