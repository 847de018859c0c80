"""PostgreSQL specifics the contract suite does not cover: schema versions and concurrency."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from squall.errors import StoreError
from squall.stores.postgres import PostgresActivationStore, PostgresEntityStore
from squall.testing import LocalPostgres


def fresh_url(server: LocalPostgres) -> tuple[str, str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    return server.url(schema=schema), schema


async def test_refuses_a_newer_schema(postgres_server: LocalPostgres) -> None:
    url, schema = fresh_url(postgres_server)
    store = PostgresEntityStore(url)
    await store.start()
    await store.close()
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.schema_version SET version = 7 "
                     "WHERE component = 'entities'")  # fmt: skip

    newer = PostgresEntityStore(url)
    with pytest.raises(StoreError, match=r"schema version 7 is newer than this Squall supports "
                                         r"\(1\); upgrade Squall"):  # fmt: skip
        await newer.start()
    await newer.close()


async def test_replicas_starting_together_migrate_once(postgres_server: LocalPostgres) -> None:
    url, schema = fresh_url(postgres_server)
    stores = [PostgresActivationStore(url) for _ in range(4)]
    await asyncio.gather(*(store.start() for store in stores))
    try:
        with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT component, version FROM {schema}.schema_version"
            ).fetchall()
        assert rows == [("activations", 1)]
        assert all(store.unavailable_reason is None for store in stores)
    finally:
        for store in stores:
            await store.close()


async def test_entities_and_activations_share_one_schema(postgres_server: LocalPostgres) -> None:
    url, schema = fresh_url(postgres_server)
    entities, activations = PostgresEntityStore(url), PostgresActivationStore(url)
    await entities.start()
    await activations.start()
    await activations.close()
    await entities.close()
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT component, version FROM {schema}.schema_version ORDER BY component"
        ).fetchall()
    assert rows == [("activations", 1), ("entities", 1)]
