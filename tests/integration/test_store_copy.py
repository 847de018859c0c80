"""`squall store copy` moves everything between real backends, and proves it with checksums."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

from click.testing import CliRunner, Result

from squall.abc import ActivationQuery, StoredEntity, SubjectRecord
from squall.cli.main import cli
from squall.stores.postgres import PostgresEntityStore
from squall.stores.sqlite import SqliteActivationStore, SqliteEntityStore
from squall.testing import LocalOsmem, LocalPostgres, free_port
from tests.contract.test_activation_store import record

ACTIVATIONS = 2_500  # more than one export page


def seed(db: Path) -> None:
    async def write() -> None:
        entities, activations = SqliteEntityStore(db), SqliteActivationStore(db)
        await entities.start()
        await activations.start()
        await entities.put_subject(SubjectRecord("guest", "guest", "u-1", "pbkdf2$x", {"a": 1}))
        for i in range(30):
            stored = await entities.put("actions", "guest", f"a{i}", {"n": i, "big": 2**70}, None)
            if i % 3 == 0:  # a few at later revisions: revisions must survive the copy
                await entities.put("actions", "guest", f"a{i}", {"n": -i}, stored.revision)
        await entities.put("rules", "guest/pkg", "r", {"trigger": "t"}, None)
        for i in range(ACTIVATIONS):
            activations.store(record(start=1_700_000_000_000 + i, name=f"a{i % 7}"))
        await activations.close()
        await entities.close()

    asyncio.run(write())


def copy(source: str, target: str, *extra: str) -> Result:
    return CliRunner().invoke(cli, ["store", "copy", "--from", source, "--to", target, *extra])


def test_sqlite_to_postgresql_and_back_loses_nothing(
    tmp_path: Path, postgres_server: LocalPostgres
) -> None:
    source = tmp_path / "laptop.db"
    seed(source)
    pg = postgres_server.url(schema=f"copy_{uuid.uuid4().hex[:8]}")

    there = copy(f"sqlite://{source}", pg)
    assert there.exit_code == 0, there.output
    assert there.output.count(" ok") == 3 and "DIFFERS" not in there.output
    assert f"{ACTIVATIONS:,}" in there.output

    back_file = tmp_path / "back.db"
    back = copy(pg, f"sqlite://{back_file}")
    assert back.exit_code == 0, back.output
    # The same checksums on every hop: the content is identical.
    assert checksums(there.output) == checksums(back.output)
    assert asyncio.run(entity_snapshot(back_file)) == asyncio.run(entity_snapshot(source))


def checksums(output: str) -> list[str]:
    return [line.split()[3] for line in output.splitlines() if line.endswith(" ok")]


async def entity_snapshot(db: Path) -> list[tuple[str, str, str, int, object]]:
    store = SqliteEntityStore(db)
    await store.start()
    try:
        return sorted([(e.collection, e.namespace, e.name, e.revision, repr(e.doc))
                       async for e in store.iter_entities()])  # fmt: skip
    finally:
        await store.close()


def test_copy_into_a_store_holding_different_data_refuses(
    tmp_path: Path, postgres_server: LocalPostgres
) -> None:
    source = tmp_path / "a.db"
    seed(source)
    pg = postgres_server.url(schema=f"copy_{uuid.uuid4().hex[:8]}")

    async def occupy() -> None:
        store = PostgresEntityStore(pg)
        await store.start()
        await store.restore(StoredEntity("actions", "guest", "a1", 9, {"other": True}))
        await store.close()

    asyncio.run(occupy())
    result = copy(f"sqlite://{source}", pg, "--only", "entities")
    assert result.exit_code == 1
    assert "already holds a different actions guest/a1" in result.output


def test_activations_to_opensearch(tmp_path: Path, osmem_server_process: LocalOsmem) -> None:
    source = tmp_path / "a.db"
    seed(source)
    host = osmem_server_process.url.removeprefix("http://")
    target = f"elasticsearch+http://{host}?index_pattern=c{uuid.uuid4().hex[:8]}-%s"
    result = copy(f"sqlite://{source}", target)
    assert result.exit_code == 0, result.output
    assert "activations" in result.output and "entities" not in result.output.split("\n", 1)[1]
    assert result.output.count(" ok") == 1

    async def count() -> int:
        store = SqliteActivationStore(source)
        await store.start()
        try:
            return await store.count(ActivationQuery("guest"))
        finally:
            await store.close()

    assert asyncio.run(count()) == ACTIVATIONS


def test_migrate_creates_the_schemas(tmp_path: Path, postgres_server: LocalPostgres) -> None:
    pg = postgres_server.url(schema=f"mig_{uuid.uuid4().hex[:8]}")
    pg = pg.replace("postgres@", "postgres:pw@")  # a password, to see it masked
    args = ["store", "migrate", "--entity-store", pg, "--activation-store", pg]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "schema up to date" in first.output and "pw" not in first.output
    assert CliRunner().invoke(cli, args).exit_code == 0  # idempotent


def test_a_missing_sqlite_source_is_an_error_not_an_empty_copy(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    result = copy(f"sqlite://{missing}", f"sqlite://{tmp_path / 'out.db'}")
    assert result.exit_code == 1 and "no such SQLite file" in result.output
    assert not missing.exists()


def test_standalone_refuses_a_newer_schema_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    seed(data / "squall.db")
    with sqlite3.connect(data / "squall.db") as conn:
        conn.execute("UPDATE schema_version SET version = 9 WHERE component = 'entities'")
    conn.close()
    completed = subprocess.run(
        [sys.executable, "-m", "squall.cli.main", "standalone", "--data-dir", str(data),
         "--port", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 1, completed.stderr
    assert completed.stderr.startswith("error: database schema version 9 is newer")
    assert "Traceback" not in completed.stderr


def test_an_unreachable_destination_is_one_error_line(tmp_path: Path) -> None:
    source = tmp_path / "a.db"
    seed(source)
    dead = f"postgresql://squall:pw@127.0.0.1:{free_port()}/squall?pool_timeout=0.3"
    result = copy(f"sqlite://{source}", dead)
    assert result.exit_code == 1
    assert "unreachable" in result.output and ":pw@" not in result.output


def test_entities_cannot_go_to_elasticsearch(tmp_path: Path) -> None:
    source = tmp_path / "a.db"
    seed(source)
    result = copy(f"sqlite://{source}", "elasticsearch+http://127.0.0.1:9", "--only", "entities")
    assert result.exit_code == 1 and "activations only" in result.output
