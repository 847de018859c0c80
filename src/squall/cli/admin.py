"""`squall admin`: namespaces, their keys and their limits, written to the entity store offline.

Like OpenWhisk's `wskadmin`, these commands talk to the store, not to the API: they read the
same settings as the server (`SQUALL_ENTITY_STORE`, else SQLite in `SQUALL_DATA_DIR`) and work
on SQLite and PostgreSQL alike through the EntityStore interface. A running server sees a
change within SQUALL_IDENTITY_TTL (2 s; alarm fires within 10 s): it reads a namespace's record
again once its cached copy is that old.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import click

from squall.abc import EntityStore, SubjectRecord
from squall.cli.commands import CliError, cli
from squall.cli.store import _configured, _run, _settings
from squall.controller.auth import generate_auth, subject_record
from squall.controller.limits import MB, InvalidLimits, NamespaceLimits, updated_limits
from squall.entities.names import IllegalName, check_name
from squall.stores import select

T = TypeVar("T")


@cli.group("admin")
def admin_group() -> None:
    """Administer namespaces, keys and limits directly in the entity store (offline)."""


@admin_group.group("user")
def user_group() -> None:
    """Create and delete namespaces, rotate their keys."""


@admin_group.group("limits")
def limits_group() -> None:
    """Show and change a namespace's limits."""


# -- users ------------------------------------------------------------------------------------


@user_group.command("create")
@click.argument("namespace")
@click.option("--auth", metavar="UUID:KEY", help="Use this key instead of a generated one.")
def user_create(namespace: str, auth: str | None) -> None:
    """Create NAMESPACE with a new key; prints its `uuid:key` (shown only now)."""
    _check_namespace(namespace)
    if auth is not None and not _valid_auth(auth):
        raise CliError("--auth must be 'uuid:key' (a uuid, a colon, then letters and digits)")
    credentials = auth or generate_auth()

    async def create(store: EntityStore) -> None:
        if await store.get_subject_by_namespace(namespace) is not None:
            raise CliError(f"namespace {namespace} exists already")
        if await store.get_subject(credentials.partition(":")[0]) is not None:
            raise CliError("that key's uuid belongs to another namespace")
        await store.put_subject(subject_record(namespace, credentials))

    _with_store(create)
    click.echo(credentials)


@user_group.command("delete")
@click.argument("namespace")
def user_delete(namespace: str) -> None:
    """Delete NAMESPACE's credentials: its key stops working (its entities stay)."""

    async def delete(store: EntityStore) -> None:
        if not await store.delete_subject(namespace):
            raise CliError(f"namespace {namespace} does not exist")

    _with_store(delete)
    click.echo(f"namespace {namespace} deleted")


@user_group.command("rotate")
@click.argument("namespace")
def user_rotate(namespace: str) -> None:
    """Give NAMESPACE a new key; prints it. The old key stops working; limits are kept."""
    credentials = generate_auth()

    async def rotate(store: EntityStore) -> None:
        current = await _subject(store, namespace)
        fresh = subject_record(namespace, credentials, current.limits)
        await store.put_subject(fresh)

    _with_store(rotate)
    click.echo(credentials)


@user_group.command("get")
@click.argument("namespace")
def user_get(namespace: str) -> None:
    """Show NAMESPACE's key uuid (the key itself is stored only as a hash)."""
    record = _with_store(lambda store: _subject(store, namespace))
    click.echo(f"{record.namespace}\t{record.uuid}")


# -- limits -----------------------------------------------------------------------------------

# option name -> (UserLimits key, multiplier from the option's unit to the stored unit)
_LIMIT_OPTIONS: dict[str, tuple[str, int]] = {
    "invocations_per_minute": ("invocationsPerMinute", 1),
    "concurrent_invocations": ("concurrentInvocations", 1),
    "fires_per_minute": ("firesPerMinute", 1),
    "min_action_memory": ("minActionMemory", MB),
    "max_action_memory": ("maxActionMemory", MB),
    "min_action_timeout": ("minActionTimeout", 1),
    "max_action_timeout": ("maxActionTimeout", 1),
    "min_action_logs": ("minActionLogs", MB),
    "max_action_logs": ("maxActionLogs", MB),
    "min_action_concurrency": ("minActionConcurrency", 1),
    "max_action_concurrency": ("maxActionConcurrency", 1),
}


def _limit_options(f: Callable[..., Any]) -> Callable[..., Any]:
    units = {MB: "MB"}
    for option, (key, unit) in reversed(_LIMIT_OPTIONS.items()):
        what = "ms" if "timeout" in option else units.get(unit, "")
        flag = "--" + option.replace("_", "-")
        f = click.option(flag, option, type=click.IntRange(min=0), metavar="N",
                         help=f"{key}{f' in {what}' if what else ''}")(f)  # fmt: skip
    return f


@limits_group.command("set")
@click.argument("namespace")
@_limit_options
@click.option("--allowed-kinds", "allowed_kinds", multiple=True, metavar="KIND",
              help="Kinds the namespace may use (repeat, or comma-separated); 'all' clears.")
def limits_set(namespace: str, allowed_kinds: Sequence[str], **values: int | None) -> None:
    """Set limits of NAMESPACE; limits not given keep their current value."""
    changes: dict[str, Any] = {
        key: value * unit
        for option, (key, unit) in _LIMIT_OPTIONS.items()
        if (value := values.get(option)) is not None
    }
    kinds = [k.strip() for text in allowed_kinds for k in text.split(",") if k.strip()]
    if kinds:
        changes["allowedKinds"] = None if kinds == ["all"] else kinds
    if not changes:
        raise CliError("nothing to set: give at least one limit (see --help)")

    async def update(store: EntityStore) -> dict[str, Any]:
        current = await _subject(store, namespace)
        try:
            merged = updated_limits(current.limits, changes)
        except InvalidLimits as exc:
            raise CliError(str(exc)) from exc
        await store.put_subject(_with_limits(current, merged))
        return merged

    merged = _with_store(update)
    click.echo(json.dumps(_report(namespace, merged), indent=2, sort_keys=True))


@limits_group.command("get")
@click.argument("namespace")
def limits_get(namespace: str) -> None:
    """Show NAMESPACE's limits: those set for it, and every effective value."""
    record = _with_store(lambda store: _subject(store, namespace))
    click.echo(json.dumps(_report(namespace, record.limits), indent=2, sort_keys=True))


@limits_group.command("delete")
@click.argument("namespace")
def limits_delete(namespace: str) -> None:
    """Remove every limit set for NAMESPACE: the system's apply again."""

    async def clear(store: EntityStore) -> None:
        current = await _subject(store, namespace)
        await store.put_subject(_with_limits(current, {}))

    _with_store(clear)
    click.echo(f"limits of {namespace} reset to the system's")


# -- helpers ----------------------------------------------------------------------------------


def _report(namespace: str, stored: dict[str, Any]) -> dict[str, Any]:
    effective = NamespaceLimits.resolve(_settings().limits, stored).to_json()
    return {"namespace": namespace, "set": stored, "effective": effective}


def _with_limits(record: SubjectRecord, limits: dict[str, Any]) -> SubjectRecord:
    return SubjectRecord(record.namespace, record.subject, record.uuid, record.key_hash, limits)


async def _subject(store: EntityStore, namespace: str) -> SubjectRecord:
    record = await store.get_subject_by_namespace(namespace)
    if record is None:
        raise CliError(f"namespace {namespace} does not exist")
    return record


def _with_store(work: Callable[[EntityStore], Awaitable[T]]) -> T:
    settings = _settings()
    store = _configured(lambda: select.entity_store(settings.entity_store_url, settings.data_dir))

    async def run() -> T:
        await store.start()
        try:
            return await work(store)
        finally:
            await store.close()

    return _run(run())


def _check_namespace(namespace: str) -> None:
    try:
        check_name(namespace, "namespace")
    except IllegalName as exc:
        raise CliError(str(exc)) from exc
    if namespace in ("_", "default") or namespace.startswith("#"):
        raise CliError(f"{namespace!r} cannot name a namespace")


def _valid_auth(auth: str) -> bool:
    uid, sep, key = auth.partition(":")
    return bool(sep) and len(uid) == 36 and key.isalnum() and len(key) >= 8
