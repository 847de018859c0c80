"""`squall store migrate` and `squall store copy`: operate on the stores directly, offline.

Both read the same settings as the server (`SQUALL_ENTITY_STORE`, `SQUALL_ACTIVATION_STORE`,
`SQUALL_DATA_DIR`); URLs are printed with their passwords masked.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from squall.abc import ActivationStore, EntityStore
from squall.cli.commands import CliError, cli
from squall.config import Settings, load_settings
from squall.errors import ConfigurationError, SquallError
from squall.stores import select
from squall.stores.base import BatchedActivationStore
from squall.stores.copy import CopyReport, copy_activations, copy_entities

T = TypeVar("T")


@cli.group("store")
def store_group() -> None:
    """Bring store schemas up to date, or copy data between stores."""


@store_group.command("migrate")
@click.option("--entity-store", "entity_url", metavar="URL",
              help="Entity store URL (default: SQUALL_ENTITY_STORE, else SQLite in the data dir).")
@click.option("--activation-store", "activation_url", metavar="URL",
              help="Activation store URL (default: SQUALL_ACTIVATION_STORE, else SQLite).")
def store_migrate(entity_url: str | None, activation_url: str | None) -> None:
    """Create or upgrade the schemas (tables, indexes, index templates); safe to repeat."""
    settings = _settings()
    entity = settings.entity_store_url
    if entity_url:
        entity = _configured(lambda: select.parse_store_url(entity_url, "--entity-store", "entity"))
    activation = settings.activation_store_url
    if activation_url:
        activation = _configured(
            lambda: select.parse_store_url(activation_url, "--activation-store", "activation")
        )
    entities = _configured(lambda: select.entity_store(entity, settings.data_dir))
    activations = _configured(lambda: select.activation_store(activation, settings.data_dir))
    _run(_migrate(entities, activations))
    click.echo(f"entity store {entity.redacted}: schema up to date")
    click.echo(f"activation store {activation.redacted}: schema up to date")


async def _migrate(entities: EntityStore, activations: ActivationStore) -> None:
    try:
        await entities.start()
        await _start_activations(activations)
    finally:
        await activations.close()
        await entities.close()


@store_group.command("copy")
@click.option("--from", "source_url", required=True, metavar="URL", help="Store to read.")
@click.option("--to", "target_url", required=True, metavar="URL", help="Store to write.")
@click.option("--only", type=click.Choice(["entities", "activations"]),
              help="Copy one kind only (default: everything both stores can hold).")
def store_copy(source_url: str, target_url: str, only: str | None) -> None:
    """Copy entities, credentials and activations from one store to another.

    Prints per kind the count and checksum read from the source and found in the destination;
    exits 1 when they differ. Entities need a SQLite or PostgreSQL URL on both sides;
    Elasticsearch takes part in activation copies only.
    """
    settings = _settings()
    source = _activation_or_entity_url(source_url, "--from")
    target = _activation_or_entity_url(target_url, "--to")
    if source.kind == "sqlite" and not select.sqlite_path(source, settings.data_dir).exists():
        # Opening it would create an empty database and "copy" nothing.
        raise CliError(f"--from {source.redacted}: no such SQLite file")
    kinds = {only} if only else {"entities", "activations"}
    if "elasticsearch" in (source.kind, target.kind):
        if only == "entities":
            raise CliError("Elasticsearch holds activations only; entities need SQLite or "
                           "PostgreSQL on both sides")  # fmt: skip
        kinds.discard("entities")
    click.echo(f"copying {', '.join(sorted(kinds))} from {source.redacted} to {target.redacted}")
    report = _run(_copy(source, target, kinds, settings.data_dir))
    for line in report.lines():
        click.echo(line)
    if not report.matches:
        raise CliError("the destination does not match the source (see DIFFERS above)")


def _activation_or_entity_url(url: str, option: str) -> select.StoreURL:
    return _configured(lambda: select.parse_store_url(url, option, "activation"))


async def _copy(
    source: select.StoreURL, target: select.StoreURL, kinds: set[str], data_dir: Path
) -> CopyReport:
    report = CopyReport()
    if "entities" in kinds:
        src = select.entity_store(_as_entity(source), data_dir)
        dst = select.entity_store(_as_entity(target), data_dir)
        await _with_started((src, dst), lambda: copy_entities(src, dst, report))
    if "activations" in kinds:
        src_a = select.activation_store(source, data_dir)
        dst_a = select.activation_store(target, data_dir)
        await _with_started((src_a, dst_a), lambda: copy_activations(src_a, dst_a, report))
    return report


def _as_entity(store: select.StoreURL) -> select.StoreURL:
    return select.parse_store_url(store.url, store.variable, "entity")


async def _with_started(
    stores: tuple[EntityStore, EntityStore] | tuple[ActivationStore, ActivationStore],
    work: Callable[[], Awaitable[None]],
) -> None:
    """Run `work` with both stores started; every started store is closed afterwards."""
    started: list[EntityStore | ActivationStore] = []
    try:
        for store in stores:
            started.append(store)
            if isinstance(store, ActivationStore):
                await _start_activations(store)
            else:
                await store.start()
        await work()
    finally:
        for store in reversed(started):
            await store.close()


async def _start_activations(store: ActivationStore) -> None:
    await store.start()
    if isinstance(store, BatchedActivationStore):
        await store.wait_ready()  # an offline command must fail, not buffer


def _settings() -> Settings:
    return _configured(load_settings)


def _configured(build: Callable[[], T]) -> T:
    """Build from configuration; a ConfigurationError is one line and exit status 2."""
    try:
        return build()
    except ConfigurationError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except SquallError as exc:
        raise CliError(str(exc)) from exc
