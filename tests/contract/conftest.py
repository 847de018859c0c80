"""Backends for the contract suites.

Every test in `tests/contract` runs once per entry of BACKENDS that serves its seam. Adding a
backend is one factory that builds its stores at a location private to the test (a file under
`tmp_path` for SQLite, a fresh schema or index prefix for a server) and one line in BACKENDS.

The servers (PostgreSQL, osmem) are session fixtures of tests/conftest.py: started once on
127.0.0.1 and stopped by PID; locally a missing binary skips its backend, under CI=true it fails.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from squall.abc import ActivationStore, EntityStore
from squall.stores.sqlite import SqliteActivationStore, SqliteEntityStore
from squall.testing import LocalOsmem, LocalPostgres


class ActivationStoreFactory(Protocol):
    def __call__(self, **options: Any) -> ActivationStore: ...


@dataclass(frozen=True, slots=True)
class Backend:
    """Builds fresh store instances over one test's data; calling twice reopens the same data."""

    name: str
    entity_store: Callable[[], EntityStore] | None
    # Options are the batching knobs every activation store takes: flush_interval_s, batch_size.
    activation_store: ActivationStoreFactory


def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    db = tmp_path / "data" / "squall.db"  # a missing directory: the store must create it
    return Backend(
        name="sqlite",
        entity_store=lambda: SqliteEntityStore(db),
        activation_store=lambda **options: SqliteActivationStore(db, **options),
    )


def postgresql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    from squall.stores.postgres import PostgresActivationStore, PostgresEntityStore

    server: LocalPostgres = request.getfixturevalue("postgres_server")
    url = server.url(schema=f"t_{uuid.uuid4().hex[:12]}", pool_timeout="2")
    return Backend(
        name="postgresql",
        entity_store=lambda: PostgresEntityStore(url),
        activation_store=lambda **options: PostgresActivationStore(url, **options),
    )


def opensearch_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    from squall.stores.elasticsearch import ElasticsearchActivationStore

    server: LocalOsmem = request.getfixturevalue("osmem_server_process")
    host = server.url.removeprefix("http://")
    url = f"elasticsearch+http://{host}?index_pattern=t{uuid.uuid4().hex[:12]}-%s"
    return Backend(
        name="opensearch",
        entity_store=None,  # activation records only
        activation_store=lambda **options: ElasticsearchActivationStore(url, **options),
    )


BackendFactory = Callable[[pytest.FixtureRequest, Path], Backend]
BACKENDS: dict[str, BackendFactory] = {
    "sqlite": sqlite_backend,
    "postgresql": postgresql_backend,
    "opensearch": opensearch_backend,
}
ENTITY_BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Entity-store tests run on the backends that hold entities; the rest on all."""
    if "backend" not in metafunc.fixturenames:
        return
    entity_seam = metafunc.module.__name__.endswith("test_entity_store")
    names = ENTITY_BACKENDS if entity_seam else tuple(BACKENDS)
    metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
async def entity_store(backend: Backend) -> AsyncIterator[EntityStore]:
    assert backend.entity_store is not None
    store = backend.entity_store()
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def activation_store(backend: Backend) -> AsyncIterator[ActivationStore]:
    # A long interval: tests flush explicitly, or rely on reads seeing pending records.
    store = backend.activation_store(flush_interval_s=3600.0)
    await store.start()
    yield store
    await store.close()
