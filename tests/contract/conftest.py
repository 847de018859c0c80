"""Backends for the contract suites.

Every test in `tests/contract` runs once per entry of BACKENDS. Adding a backend is one factory
that builds its stores at a location private to the test (a file under `tmp_path` for SQLite,
a fresh schema or index prefix for a server) and one line in BACKENDS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from squall.abc import ActivationStore, EntityStore
from squall.stores.sqlite import SqliteActivationStore, SqliteEntityStore


class ActivationStoreFactory(Protocol):
    def __call__(self, **options: Any) -> ActivationStore: ...


@dataclass(frozen=True, slots=True)
class Backend:
    """Builds fresh store instances over one test's data; calling twice reopens the same data."""

    name: str
    entity_store: Callable[[], EntityStore]
    # Options are the batching knobs every activation store takes: flush_interval_s, batch_size.
    activation_store: ActivationStoreFactory


def sqlite_backend(tmp_path: Path) -> Backend:
    db = tmp_path / "data" / "squall.db"  # a missing directory: the store must create it
    return Backend(
        name="sqlite",
        entity_store=lambda: SqliteEntityStore(db),
        activation_store=lambda **options: SqliteActivationStore(db, **options),
    )


BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "sqlite": sqlite_backend,
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    factory: Callable[[Path], Backend] = BACKENDS[request.param]
    return factory(tmp_path)


@pytest.fixture
async def entity_store(backend: Backend) -> AsyncIterator[EntityStore]:
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
