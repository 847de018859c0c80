"""Store benchmarks (phase `stores`): activation writes, listing and duration statistics.

Per backend, in one run, with SQLite as the baseline the others are divided by:

1. Writes: `store_write_records` records handed to `store()` (the invoker's call) and flushed
   in the stores' own batches; records per second from the first `store()` to the end of
   `flush()`. SQLite, PostgreSQL and OpenSearch (osmem, an in-memory OpenSearch API server:
   its figure says how the adapter batches, not how fast a real cluster is).
2. Listing with `store_seed_records` (1,000,000) records in SQLite and PostgreSQL, seeded in
   bulk (SQLite executemany, PostgreSQL COPY) with the rows the stores themselves derive:
   100 actions in one namespace, starts spread over 30 days. Timed through the store API
   (query, driver, JSON decoding of 30 records): newest 30 of an action (`wsk activation list
   NAME`), and an action within a random 6-hour window (`--since/--upto`).
3. Duration statistics (what the scheduler asks when it creates a queue): one action over the
   last day.
4. OpenSearch answers the same queries over `store_write_records` records written through
   the store (not a million: osmem indexes about a thousand records a second).

PostgreSQL and osmem are started by the phase on 127.0.0.1 (free ports, temporary dirs) and
stopped by PID; a missing one is reported as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.stats import ratio, summarize_ms
from squall.abc import ActivationQuery, ActivationStore
from squall.errors import StoreError
from squall.stores.rows import activation_row
from squall.stores.sqlite import SqliteActivationStore
from squall.testing import LocalOsmem, LocalPostgres, osmem_binary, postgres_bin_dir

if TYPE_CHECKING:
    from bench.scenarios import Plan

NAMESPACE = "guest"
ACTIONS = 100
SPAN_MS = 30 * 86_400_000
WINDOW_MS = 6 * 3_600_000
SEED_CHUNK = 20_000
COLUMNS = ("activation_id, namespace, name, path, entity_path, start_ms, end_ms, duration_ms, "
           "status_code, doc")  # fmt: skip


def make_record(i: int, start: int, rng: random.Random) -> dict[str, Any]:
    """An action activation in OpenWhisk's stored shape, about 600 bytes of JSON."""
    name = f"action-{i % ACTIONS:03d}"
    duration = rng.randint(5, 400)
    return {
        "namespace": NAMESPACE, "name": name, "version": "0.0.1", "subject": NAMESPACE,
        "activationId": uuid.UUID(int=rng.getrandbits(128)).hex,
        "start": start, "end": start + duration, "duration": duration, "statusCode": 0,
        "response": {"statusCode": 0, "result": {"greeting": f"hello {i}"}},
        "logs": [f"2026-01-01T00:00:00.000Z stdout: run {i}"],
        "annotations": [
            {"key": "path", "value": f"{NAMESPACE}/{name}"},
            {"key": "kind", "value": "python:3.11"},
            {"key": "limits", "value": {"timeout": 60000, "memory": 256, "logs": 10,
                                        "concurrency": 1}},
            {"key": "waitTime", "value": 3},
        ],
        "publish": False,
    }  # fmt: skip


def records(count: int, now_ms: int, seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(count):
        yield make_record(i, now_ms - rng.randrange(SPAN_MS), rng)


# -- servers -------------------------------------------------------------------------------------


class Servers:
    """PostgreSQL and osmem for the phase, whichever can run here."""

    def __init__(self) -> None:
        self.postgres: LocalPostgres | None = None
        self.osmem: LocalOsmem | None = None
        self.skipped: dict[str, str] = {}

    def __enter__(self) -> Servers:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            self.skipped["postgresql"] = "PostgreSQL binaries not found"
        else:
            self.postgres = LocalPostgres(bin_dir)
            self.postgres.init()
            self.postgres.start()
        binary = osmem_binary()
        if binary is None:
            self.skipped["opensearch"] = "osmem-server not installed"
        else:
            self.osmem = LocalOsmem(binary)
            self.osmem.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.osmem is not None:
            self.osmem.stop()
        if self.postgres is not None:
            self.postgres.remove()

    def stores(self, workdir: Path) -> dict[str, Callable[[], ActivationStore]]:
        """Fresh-store factories per backend; each call to a factory reopens the same data."""
        db = workdir / f"{uuid.uuid4().hex[:8]}.db"
        made: dict[str, Callable[[], ActivationStore]] = {
            "sqlite": lambda: SqliteActivationStore(db),
        }
        if self.postgres is not None:
            from squall.stores.postgres import PostgresActivationStore

            url = self.postgres.url(schema=f"b_{uuid.uuid4().hex[:8]}")
            made["postgresql"] = lambda: PostgresActivationStore(url)
        if self.osmem is not None:
            from squall.stores.elasticsearch import ElasticsearchActivationStore

            host = self.osmem.url.removeprefix("http://")
            es = f"elasticsearch+http://{host}?index_pattern=b{uuid.uuid4().hex[:8]}-%s"
            made["opensearch"] = lambda: ElasticsearchActivationStore(es)
        return made


# -- measurements ----------------------------------------------------------------------------------


async def measure_writes(store: ActivationStore, count: int) -> dict[str, Any]:
    batch = list(records(count, int(time.time() * 1000), seed=7))
    await store.start()
    try:
        began = time.perf_counter()
        for record in batch:
            store.store(record)
        accepted = time.perf_counter()
        await store.flush()
        done = time.perf_counter()
    finally:
        await store.close()
    return {
        "records": count,
        "records_per_s": round(count / (done - began), 1),
        "store_call_us": round((accepted - began) / count * 1e6, 3),
    }


async def timed(calls: int, call: Callable[[random.Random], Awaitable[object]]) -> dict[str, Any]:
    rng = random.Random(11)
    await call(rng)  # warm caches and connections once, not counted
    samples = []
    for _ in range(calls):
        began = time.perf_counter()
        await call(rng)
        samples.append((time.perf_counter() - began) * 1000)
    return summarize_ms(samples)


async def measure_queries(store: ActivationStore, calls: int, now_ms: int) -> dict[str, Any]:
    def name(rng: random.Random) -> str:
        return f"action-{rng.randrange(ACTIONS):03d}"

    async def newest(rng: random.Random) -> object:
        return await store.list(ActivationQuery(NAMESPACE, name=name(rng), limit=30))

    async def window(rng: random.Random) -> object:
        upto = now_ms - rng.randrange(SPAN_MS - WINDOW_MS)
        query = ActivationQuery(NAMESPACE, name=name(rng), since=upto - WINDOW_MS, upto=upto)
        return await store.list(query)

    async def stats(rng: random.Random) -> object:
        path = f"{NAMESPACE}/{name(rng)}"
        return await store.duration_stats(NAMESPACE, path, now_ms - 86_400_000)

    await store.start()
    try:
        return {
            "list_by_name": await timed(calls, newest),
            "list_by_name_and_time": await timed(calls, window),
            "duration_stats": await timed(calls, stats),
        }
    finally:
        await store.close()


# -- seeding 1,000,000 records in bulk -------------------------------------------------------


def seed_sqlite(db: Path, chunk: list[tuple[Any, ...]]) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany(f"INSERT INTO activations ({COLUMNS}) VALUES "
                         "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", chunk)  # fmt: skip
    conn.close()


def seed_postgres(conninfo: str, schema: str, chunk: list[tuple[Any, ...]]) -> None:
    import psycopg

    with psycopg.connect(conninfo, options=f"-c search_path={schema}") as conn:
        with conn.cursor() as cur, cur.copy(f"COPY activations ({COLUMNS}) FROM STDIN") as copy:
            for row in chunk:
                copy.write_row(row)
        conn.commit()


def seed(targets: dict[str, Callable[[list[tuple[Any, ...]]], None]], count: int,
         now_ms: int) -> dict[str, float]:  # fmt: skip
    """The same rows into every target, generated once per chunk; seconds spent per target."""
    spent = dict.fromkeys(targets, 0.0)
    chunk: list[tuple[Any, ...]] = []
    for record in records(count, now_ms, seed=3):
        chunk.append(activation_row(record))
        if len(chunk) == SEED_CHUNK:
            _write_chunk(targets, chunk, spent)
            chunk = []
    if chunk:
        _write_chunk(targets, chunk, spent)
    return {name: round(seconds, 1) for name, seconds in spent.items()}


def _write_chunk(targets: dict[str, Callable[[list[tuple[Any, ...]]], None]],
                 chunk: list[tuple[Any, ...]], spent: dict[str, float]) -> None:  # fmt: skip
    for name, write in targets.items():
        began = time.perf_counter()
        write(chunk)
        spent[name] += time.perf_counter() - began


def analyze(db: Path, servers: Servers, schema: str) -> None:
    """Fresh planner statistics, as a long-running database would have."""
    with sqlite3.connect(db) as conn:
        conn.execute("ANALYZE")
    conn.close()
    if servers.postgres is not None:
        import psycopg

        conninfo = servers.postgres.url()
        with psycopg.connect(conninfo, options=f"-c search_path={schema}", autocommit=True) as pg:
            pg.execute("VACUUM ANALYZE activations")


# -- the phase -----------------------------------------------------------------------------------


def phase_stores(plan: Plan) -> dict[str, Any]:
    return asyncio.run(_phase(plan))


async def _phase(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {"baseline": "sqlite"}
    with tempfile.TemporaryDirectory(prefix="squall-bench-stores-") as tmp, Servers() as servers:
        workdir = Path(tmp)
        out["skipped"] = servers.skipped
        out["failed"] = {}
        out["writes"] = {}
        for name, make in servers.stores(workdir).items():
            async with osmem_may_fail(out["failed"], name):
                out["writes"][name] = await measure_writes(make(), plan.store_write_records)
        out["seeded"] = await _seeded(plan, servers, workdir)
        opensearch = servers.stores(workdir).get("opensearch")
        if opensearch is not None and "opensearch" not in out["failed"]:
            async with osmem_may_fail(out["failed"], "opensearch"):
                out["opensearch_queries"] = await _opensearch_queries(opensearch, plan)
    out["ratios"] = ratios(out)
    return out


@contextlib.asynccontextmanager
async def osmem_may_fail(failed: dict[str, str], name: str) -> AsyncIterator[None]:
    """osmem is an in-memory test server that times out on a busy machine: its failure is
    recorded and the phase keeps SQLite's and PostgreSQL's figures; any other backend's
    failure fails the phase."""
    try:
        yield
    except StoreError as exc:
        if name != "opensearch":
            raise
        failed[name] = f"{type(exc).__name__}: {exc}"[:500]


async def _seeded(plan: Plan, servers: Servers, workdir: Path) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    db = workdir / "seeded.db"
    schema = f"seed_{uuid.uuid4().hex[:8]}"
    stores: dict[str, Callable[[], ActivationStore]] = {"sqlite": lambda: SqliteActivationStore(db)}
    targets: dict[str, Callable[[list[tuple[Any, ...]]], None]] = {
        "sqlite": lambda chunk: seed_sqlite(db, chunk),
    }
    if servers.postgres is not None:
        from squall.stores.postgres import PostgresActivationStore

        url = servers.postgres.url(schema=schema)
        stores["postgresql"] = lambda: PostgresActivationStore(url)
        conninfo = servers.postgres.url()
        targets["postgresql"] = lambda chunk: seed_postgres(conninfo, schema, chunk)
    for make in stores.values():  # create the schemas through the stores' own migrations
        store = make()
        await store.start()
        await store.close()
    result: dict[str, Any] = {"records": plan.store_seed_records}
    result["seed_s"] = seed(targets, plan.store_seed_records, now_ms)
    analyze(db, servers, schema)
    for name, make in stores.items():
        result[name] = await measure_queries(make(), plan.store_query_calls, now_ms)
    return result


async def _opensearch_queries(make: Callable[[], ActivationStore], plan: Plan) -> dict[str, Any]:
    """The same queries on OpenSearch, over `store_write_records` records written by the store."""
    now_ms = int(time.time() * 1000)
    writer = make()
    await writer.start()
    try:
        for record in records(plan.store_write_records, now_ms, seed=5):
            writer.store(record)
    finally:
        await writer.close()
    measured = await measure_queries(make(), plan.store_query_calls, now_ms)
    return {"records": plan.store_write_records, **measured}


def ratios(out: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Each backend's figures divided by SQLite's from the same run."""
    writes = out.get("writes", {})
    seeded = out.get("seeded", {})
    base_w = (writes.get("sqlite") or {}).get("records_per_s")
    table: dict[str, dict[str, float | None]] = {}
    for name in ("postgresql", "opensearch"):  # OpenSearch's queries ran on other data: none
        row: dict[str, float | None] = {
            "writes_per_s": ratio((writes.get(name) or {}).get("records_per_s"), base_w)
        }
        for key in ("list_by_name", "list_by_name_and_time", "duration_stats"):
            mine = ((seeded.get(name) or {}).get(key) or {}).get("p50_ms")
            base = ((seeded.get("sqlite") or {}).get(key) or {}).get("p50_ms")
            row[f"{key}_p50"] = ratio(mine, base)
        table[name] = row
    return table
