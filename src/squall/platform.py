"""Wiring: builds every component of one Squall process from its settings, starts and stops them.

Standalone runs all three roles in one process with the embedded backends; the invoke path is
still controller -> bus -> scheduler queue -> invoker -> sandbox, exactly as in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.types import ASGIApp

from squall.abc import ActivationStore, Coordinator, EntityStore, MessageBus, SandboxFactory
from squall.alarms import AlarmService
from squall.alarms.remote import RemoteAlarms
from squall.alarms.routes import alarm_routes
from squall.alarms.shards import ShardOwnership
from squall.bus.memory import MemoryBus
from squall.cluster.internal import InternalClient
from squall.cluster.placement import (
    ALL_ROLES,
    ROLES,
    Member,
    MembersChanged,
    Placement,
    Role,
    default_member_id,
)
from squall.config import Settings
from squall.controller.app import build_app
from squall.controller.auth import (
    Authenticator,
    FailureThrottle,
    generate_auth,
    subject_record,
    verify_key,
)
from squall.controller.completions import completion_routes
from squall.controller.feeds import AlarmFeeds
from squall.controller.service import ControllerService
from squall.coordination.local import LocalCoordinator
from squall.entities.action import Action
from squall.errors import ConfigurationError, DependencyUnavailable, NotFoundError, SquallError
from squall.invoker.remote import DirectCompletions, RemoteEndpoints
from squall.invoker.service import InvokerService
from squall.ops.dependencies import DependencyMonitor, etcd_monitor, kafka_monitor
from squall.ops.metrics import Sources, StandaloneSources, metrics_registry
from squall.ops.readiness import Check, Readiness, scrub, store_fix
from squall.ops.routes import ops_routes
from squall.runtimes import load_manifest
from squall.sandbox.process import ProcessSandboxFactory
from squall.scheduler.endpoint import queue_routes
from squall.scheduler.service import SchedulerService
from squall.stores import select
from squall.stores.journal import JOURNAL_FILE, CrashJournal, JournaledBus
from squall.stores.retention import RetentionService
from squall.ui import ui_routes

log = logging.getLogger("squall")


class Closable(Protocol):
    async def close(self) -> None: ...


class Component(Closable, Protocol):
    async def start(self) -> None: ...


GUEST_NAMESPACE = "guest"
GUEST_AUTH_FILE = "guest.auth"


@dataclass
class Platform:
    """Every component of one process, in start order.

    One wiring for every shape: `squall standalone` runs all three roles, a role process
    (`squall controller|scheduler|invoker`) the one it names. Every component object is built
    either way (they are cheap); `roles` decides which ones start, which routes are served and
    which readiness checks and metrics apply.
    """

    settings: Settings
    roles: frozenset[Role]
    entities: EntityStore
    activations: ActivationStore
    bus: MessageBus
    coordinator: Coordinator
    placement: Placement
    sandboxes: SandboxFactory
    scheduler: SchedulerService
    invoker: InvokerService
    controller: ControllerService
    auth: Authenticator
    alarms: AlarmService
    retention: RetentionService
    readiness: Readiness
    app: ASGIApp
    members: list[Member] = field(default_factory=list)
    # Clients of other members' internal endpoints: closed after the services that use them.
    internal: list[Closable] = field(default_factory=list)
    rebalancer: AlarmRebalancer | None = None
    journal: CrashJournal | None = None
    guest_auth: str = field(default="", repr=False)
    warnings: list[str] = field(default_factory=list)
    _recovery: asyncio.Task[None] | None = field(default=None, repr=False)
    _started: list[Closable] = field(default_factory=list, repr=False)
    _capacity: asyncio.Task[None] | None = field(default=None, repr=False)

    def runs(self, role: Role) -> bool:
        return role in self.roles

    async def start(self) -> None:
        """Start every component in order. Whatever started is closed by `close`, also after a
        start that failed or was cancelled (e.g. SIGTERM while the entity store is down)."""
        prepare_data_dir(self.settings.data_dir)
        if self.journal is not None:
            self.journal.open()
        self._started.append(self.readiness)  # closes the monitors and the probe
        await self.readiness.start_monitors()
        url = self.settings.entity_store_url
        self.readiness.note("entity_store", Check("starting", f"connecting to {url.redacted}"))
        self._started.append(self.entities)  # a start cancelled while retrying closes it
        await start_with_retry(self.entities, "entity store", on_failure=self._store_down)
        for component in self._backends():
            self._started.append(component)
            await component.start()
        self.placement.start()
        self._started.append(self.placement)
        if self.journal is not None and self.journal.open_count:
            # Settled beside the start: it waits for the store when that is unreachable.
            self._recovery = asyncio.create_task(self.journal.recover(self.activations))
        await self.readiness.start()  # its probe reads the stores, which are open now
        if self.runs("controller"):
            self.guest_auth = await ensure_guest(self.settings, self.entities)
        self._started.extend(self.internal)
        for service in self._services():
            self._started.append(service)
            await service.start()
        await self._register()
        self.readiness.started = True

    def _backends(self) -> list[Component]:
        # An unreachable activation store buffers records and reconnects by itself.
        backends: list[Component] = [self.activations, self.bus, self.coordinator]
        if self.runs("invoker"):
            backends.append(self.sandboxes)
        return backends

    def _services(self) -> list[Component]:
        """Role services in start order; the alarms last, as their fires go through the
        controller (a scheduler process has a controller object for its fires, no API)."""
        services: list[Component] = []
        if self.runs("controller"):
            services.append(self.retention)
        if self.runs("scheduler"):
            services.append(self.scheduler)
        if self.runs("invoker"):
            services.append(self.invoker)
        if self.runs("controller") or self.runs("scheduler"):
            services.append(self.controller)
        if self.runs("scheduler"):
            services.append(self.alarms)
        return services

    async def _register(self) -> None:
        """Join the membership once the services consume their topics, so no member is sent
        work before it listens; an invoker then reports its free memory as it changes."""
        for member in self.members:
            try:
                await self.placement.register(self._with_capacity(member))
            except DependencyUnavailable as exc:  # written by the coordinator once etcd is back
                log.warning("%s %s registers when etcd answers: %s", member.role, member.id, exc)
        if self.rebalancer is not None:  # the alarms run now: take this scheduler's shards
            self.rebalancer.members_changed("scheduler", set(), set())
        if self.runs("invoker") and self.settings.coordination != "local":
            self._capacity = asyncio.create_task(self._report_capacity(), name="squall-capacity")

    def _with_capacity(self, member: Member) -> Member:
        if member.role != "invoker":
            return member
        free = self.settings.invoker.user_memory_mb - self.invoker.used_memory_mb()
        return replace(member, free_mb=free, containers=self.invoker.container_count())

    async def _report_capacity(self) -> None:
        invoker = next(m for m in self.members if m.role == "invoker")
        reported = self._with_capacity(invoker)
        while True:
            await asyncio.sleep(self.settings.cluster.capacity_interval_s)
            current = self._with_capacity(invoker)
            if current == reported:
                continue
            try:
                await self.placement.register(current)
                reported = current
            except SquallError as exc:  # etcd down: readiness says so; report when back
                log.debug("capacity not reported: %s", exc)

    def _store_down(self, reason: str) -> None:
        url = self.settings.entity_store_url
        fix = store_fix("entity_store", url)
        self.readiness.note("entity_store", Check("unavailable", scrub(reason), fix))

    async def close(self) -> None:
        """Leave the membership first (the others stop sending work at once instead of after a
        lease TTL), then stop in reverse start order; every component is closed even if one
        fails (an activation store that cannot write its last records raises after the rest)."""
        first_error: BaseException | None = None
        for task in (self._recovery, self._capacity):
            if task is not None:
                task.cancel()
        if any(component is self.placement for component in self._started):
            for member in self.members:
                with contextlib.suppress(SquallError):
                    await self.placement.deregister(member)
        while self._started:
            component = self._started.pop()
            try:
                await component.close()
            except Exception as exc:
                log.error("closing %s failed: %s", type(component).__name__, exc)
                first_error = first_error or exc
        if self.journal is not None:
            self.journal.close()  # kept when records could not be written: the next start
        if first_error is not None:
            raise first_error


def build_platform(settings: Settings, roles: frozenset[Role] = ALL_ROLES) -> Platform:
    """All components for `settings`, not yet started; `roles` are the ones this process runs."""
    check_roles(settings, roles)
    member_ids = {role: member_id(settings, role, roles) for role in ROLES}
    # Everything in one process on the in-process bus: the one scheduler gets every activation.
    one_process = roles == ALL_ROLES and settings.bus == "memory"
    entities = select.entity_store(settings.entity_store_url, settings.data_dir)
    activations = select.activation_store(
        settings.activation_store_url, settings.data_dir, max_pending=settings.stores.buffer_max
    )
    # Batched record writes (and the in-process bus) live in memory: journal what they hold.
    journal = CrashJournal(settings.data_dir / JOURNAL_FILE)
    activations.journal = journal
    bus = message_bus(settings, journal, "-".join(member_ids[r] for r in ROLES if r in roles))
    coordinator = coordination(settings)
    placement = Placement(coordinator, settings.cluster.alarm_shards)
    source = settings.source("runtimes.manifest")
    runtimes = load_manifest(settings.runtimes.manifest, settings.runtimes.variable(source))
    sandboxes = ProcessSandboxFactory(sandbox_root(), runtimes=runtimes)
    limits = settings.limits
    scheduler = SchedulerService(
        bus=bus,
        coordinator=coordinator,
        activations=activations,
        settings=settings.scheduler,
        # A namespace's own concurrent limit once the controller has seen it (its throttles).
        namespace_limit=lambda ns: controller.throttles.concurrent_limit(ns),
        scheduler_id=member_ids["scheduler"],
        **scheduler_placement(placement, coordinator, one_process, member_ids["invoker"]),
    )
    internal = InternalClient(settings.cluster.token, max_connections=None)
    endpoints = RemoteEndpoints(lambda sid: placement.url_of("scheduler", sid), internal)
    # A scheduler process's controller fires its alarms under the scheduler's id.
    completions = DirectCompletions(
        lambda cid: placement.url_of("controller", cid) or placement.url_of("scheduler", cid),
        internal,
        bus,
    )
    own_scheduler = member_ids["scheduler"] if "scheduler" in roles else None
    api_host = settings.api_host or f"http://{settings.host}:{settings.port}"
    invoker = InvokerService(
        bus=bus,
        factory=sandboxes,
        # Its own process's scheduler in-process; any other over its internal endpoint.
        endpoint_for=lambda sid: scheduler if sid == own_scheduler else endpoints(sid),
        activations=activations,
        settings=settings.invoker,
        limits=limits,
        api_host=api_host,
        runtimes=runtimes,
        invoker_id=member_ids["invoker"],
        load_code=None if one_process else CodeLoader(entities).load,
        send_directly=None if one_process else completions.send,
    )
    controller = ControllerService(
        entities=entities,
        activations=activations,
        bus=bus,
        coordinator=coordinator,
        limits=limits,
        kinds=frozenset(sandboxes.kinds()),
        kind_aliases=runtimes.aliases(),
        # A scheduler process's controller only fires its alarms: its own id for completions.
        controller_id=member_ids["controller" if "controller" in roles else "scheduler"],
        route=None if one_process else placement.scheduler_for,
    )
    if not one_process:  # each controller (or scheduler, for alarm fires) admits its share
        sharing: Role = "controller" if "controller" in roles else "scheduler"
        controller.throttles.share = lambda: len(placement.live(sharing)) or 1
    auth = Authenticator(
        entities,
        FailureThrottle(burst=limits.auth_failure_burst),
        ttl_s=settings.access.identity_ttl_s,
    )
    feeds = AlarmFeeds(controller)
    # In a cluster each scheduler holds the alarms of the shards it owns, and fires none
    # without a sure lease; feed operations go to the owner's internal endpoint.
    ownership = None if one_process else ShardOwnership(settings.cluster.alarm_shards)
    # The scheduler role owns alarm timers; they fire through the controller object.
    alarms = AlarmService(
        entities,
        feeds.fire,
        on_delete_after_fire=feeds.delete_after_fire,
        on_throttled=feeds.record_throttled,
        owns=ownership,
        may_fire=None if one_process else (lambda: coordinator.lease_valid),
        max_concurrent_fires=settings.scheduler.alarm_fires_in_flight,
    )
    feeds.attach(alarms if one_process else remote_alarms(placement, internal))
    monitors, warnings = dependency_monitors(settings)
    readiness = Readiness(
        settings,
        entities=entities,
        activations=activations,
        scheduler=scheduler if "scheduler" in roles else None,
        alarms=alarms if "scheduler" in roles else None,
        sandboxes=sandboxes if "invoker" in roles else None,
        monitors=monitors,
        cluster=None if roles == ALL_ROLES else membership_checks(placement, coordinator, roles),
    )
    sources = Sources(
        activations,
        scheduler if "scheduler" in roles else None,
        invoker if "invoker" in roles else None,
        alarms if "scheduler" in roles else None,
        readiness,
    )
    routes = ops_routes(readiness, metrics_registry(sources))
    if "scheduler" in roles and not one_process:
        routes += queue_routes(scheduler, settings.cluster.token)
        routes += alarm_routes(alarms, settings.cluster.token)
    if roles & {"controller", "scheduler"} and not one_process:
        routes += completion_routes(controller, settings.cluster.token)
    placement.on_change(membership_listener(roles, scheduler))
    rebalancer = None
    if ownership is not None and "scheduler" in roles:
        rebalancer = AlarmRebalancer(placement, ownership, alarms, member_ids["scheduler"])
        placement.on_change(rebalancer.members_changed)
    if roles == ALL_ROLES:  # the dashboard reads every role's state in-process
        full = StandaloneSources(activations, scheduler, invoker, alarms, readiness)
        routes += ui_routes(auth, full)
    if "controller" in roles:
        app = build_app(controller, auth, routes, feeds, runtimes=runtimes.info())
    else:
        app = Starlette(routes=routes)
    if getattr(sandboxes, "isolation_degraded", False) and "invoker" in roles:
        warnings.append(
            f"sandbox isolation is reduced: {getattr(sandboxes, 'isolation_reason', '')}"
        )
    if runtimes.missing:
        warnings.append("runtimes not installed, their kinds are not offered: "
                        + ", ".join(runtimes.missing))  # fmt: skip
    url = advertised_url(settings)
    return Platform(
        settings,
        roles,
        entities,
        activations,
        bus,
        coordinator,
        placement,
        sandboxes,
        scheduler,
        invoker,
        controller,
        auth,
        alarms,
        RetentionService(activations, settings.stores.retention_s),
        readiness,
        app,
        members=[Member(role, member_ids[role], url) for role in ROLES if role in roles],
        internal=[internal, endpoints, completions],
        rebalancer=rebalancer,
        journal=journal,
        warnings=warnings,
    )


def check_roles(settings: Settings, roles: frozenset[Role]) -> None:
    """A role process shares its work with others: it needs a bus, coordination and stores
    that other processes can reach. Said before anything starts, with what to set."""
    if roles == ALL_ROLES:
        return
    named = "/".join(sorted(roles))
    problems = []
    if settings.bus != "kafka":
        problems.append("SQUALL_BUS=kafka (and SQUALL_KAFKA_BOOTSTRAP)")
    if settings.coordination != "etcd":
        problems.append("SQUALL_COORDINATION=etcd (and SQUALL_ETCD_ENDPOINTS)")
    if settings.entity_store_url.kind == "sqlite":
        problems.append(f"{settings.stores.entity_variable} to a PostgreSQL URL")
    if settings.activation_store_url.kind == "sqlite":
        problems.append(f"{settings.stores.activation_variable} to a PostgreSQL or "
                        "Elasticsearch/OpenSearch URL")  # fmt: skip
    if problems:
        raise ConfigurationError(
            f"squall {named} runs one role of a cluster and shares its work through services "
            f"every process reaches; set {'; '.join(problems)}. One process with every role "
            "and the embedded defaults: squall standalone"
        )


def member_id(settings: Settings, role: Role, roles: frozenset[Role]) -> str:
    """`controller0`, `scheduler0`, `invoker0` in one process (OpenWhisk's names); in a role
    process, `cluster.id` or `{role}-{hostname}`."""
    if roles == ALL_ROLES and settings.cluster.id is None:
        return f"{role}0"
    if settings.cluster.id is None:
        return default_member_id(role)
    return settings.cluster.id if len(roles) == 1 else f"{role}-{settings.cluster.id}"


def advertised_url(settings: Settings) -> str:
    if settings.cluster.url:
        return settings.cluster.url.rstrip("/")
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError as exc:
            raise ConfigurationError(
                f"listening on {settings.host!r}, this process cannot tell the others where to "
                f"reach it ({socket.gethostname()!r} does not resolve: {exc}); set "
                "SQUALL_CLUSTER_URL, e.g. http://10.0.0.7:3233"
            ) from exc
    return f"http://{host}:{settings.port}"


def scheduler_placement(
    placement: Placement, coordinator: Coordinator, one_process: bool, own_invoker: str
) -> dict[str, Any]:
    """How a scheduler picks invokers, finds its queues' owners and is fenced."""
    if one_process:
        return {"choose_invoker": lambda _action: own_invoker}
    return {
        "choose_invoker": lambda action: placement.choose_invoker(action.limits.memory),
        "route": placement.scheduler_for,
        "may_dispatch": lambda: coordinator.lease_valid,
    }


class CodeLoader:
    """An action's code for an invoker in a cluster, read from the entity store once per
    version (the action's `updated` time) and kept for the next containers."""

    KEPT = 256

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities
        self._kept: dict[tuple[str, int], Action] = {}

    async def load(self, action: Action) -> Action:
        key = (action.qualified, action.updated)
        kept = self._kept.get(key)
        if kept is not None:
            return kept
        stored = await self._entities.get("actions", action.namespace, action.name)
        if stored is None:
            raise NotFoundError(f"the action {action.qualified} was deleted")
        loaded = Action.from_json(stored.doc)
        if len(self._kept) >= self.KEPT:
            self._kept.pop(next(iter(self._kept)))
        self._kept[key] = loaded
        return loaded


def remote_alarms(placement: Placement, client: InternalClient) -> RemoteAlarms:
    """Feed operations sent to the scheduler owning the alarm's shard."""

    def owner_url(namespace: str, trigger: str) -> str | None:
        owner = placement.alarm_owner(namespace, trigger)
        return placement.url_of("scheduler", owner) if owner is not None else None

    def scheduler_urls() -> list[str]:
        urls = (placement.url_of("scheduler", sid) for sid in placement.live("scheduler"))
        return [url for url in urls if url]

    return RemoteAlarms(client, owner_url, scheduler_urls=scheduler_urls)


@dataclass
class AlarmRebalancer:
    """Gives this scheduler the alarm shards the membership assigns it, one rebalance at a
    time (a change during a rebalance runs another one after it)."""

    placement: Placement
    ownership: ShardOwnership
    alarms: AlarmService
    scheduler_id: str
    _running: asyncio.Task[None] | None = None
    _again: bool = False

    def members_changed(self, role: Role, joined: set[str], left: set[str]) -> None:
        if role != "scheduler":
            return
        if self._running is not None and not self._running.done():
            self._again = True
            return
        self._running = asyncio.ensure_future(self._rebalance())

    async def _rebalance(self) -> None:
        while True:
            self._again = False
            owned = self.placement.shards_of(self.scheduler_id)
            if owned != self.ownership.owned and self.alarms.state == "running":
                self.ownership.assign(owned)
                log.info("alarm shards: %d of %d here", len(owned), self.ownership.shards)
                try:
                    await self.alarms.rebalance()
                except SquallError as exc:  # the store is down: the next change retries
                    log.warning("alarm rebalance failed: %s", exc)
            if not self._again:
                return


def membership_listener(roles: frozenset[Role], scheduler: SchedulerService) -> MembersChanged:
    """What a change of members means for this process's roles."""

    def changed(role: Role, joined: set[str], left: set[str]) -> None:
        if role == "invoker" and "scheduler" in roles:
            for invoker_id in left:  # what ran there ends with a record; waiting work moves
                scheduler.invoker_gone(invoker_id)

    return changed


def membership_checks(
    placement: Placement, coordinator: Coordinator, roles: frozenset[Role]
) -> Callable[[], dict[str, Check]]:
    """Readiness of a role process: its lease, and the members it cannot work without."""

    def checks() -> dict[str, Check]:
        found: dict[str, Check] = {}
        if not coordinator.lease_valid:
            found["lease"] = Check(
                "unavailable",
                "this process cannot confirm its etcd lease; it owns no queue or alarm meanwhile",
                "see the etcd check; the lease is renewed by itself once etcd answers",
            )
        if "controller" in roles and not placement.live("scheduler"):
            found["schedulers"] = Check(
                "unavailable", "no scheduler is registered", "start squall scheduler"
            )
        if "scheduler" in roles and not placement.live("invoker"):
            found["invokers"] = Check(
                "degraded", "no invoker is registered: activations wait", "start squall invoker"
            )
        return found

    return checks


def message_bus(settings: Settings, journal: CrashJournal, client_id: str) -> MessageBus:
    if settings.bus == "kafka":
        from squall.bus.kafka import KafkaBus

        return KafkaBus(settings.kafka, client_id=client_id)
    return JournaledBus(MemoryBus(), journal)  # it journals what only memory holds


def coordination(settings: Settings) -> Coordinator:
    if settings.coordination == "etcd":
        from squall.coordination.etcd import EtcdCoordinator

        return EtcdCoordinator(settings.etcd)
    return LocalCoordinator()


def dependency_monitors(settings: Settings) -> tuple[list[DependencyMonitor], list[str]]:
    """Readiness monitors for Kafka and etcd when configured, and what to warn about.

    They check the services independently of the bus and the coordinator (connect, log in,
    metadata or a lease round trip), so `/readyz` names the broker or endpoint, the mechanism
    and the settings to fix even before the bus's own clients have connected.
    """
    monitors: list[DependencyMonitor] = []
    warnings: list[str] = []
    if settings.bus == "kafka":
        from squall.bus.kafka_client import require_client

        require_client()
        monitors.append(kafka_monitor(settings.kafka))
    if settings.coordination == "etcd":
        monitors.append(etcd_monitor(settings.etcd))
    return monitors, warnings


async def start_with_retry(
    component: EntityStore,
    what: str,
    *,
    max_backoff_s: float = 10.0,
    on_failure: Callable[[str], None] | None = None,
) -> None:
    """Start a component whose server may not be up yet: not ready, never dead.

    Only DependencyUnavailable is retried (with backoff); a wrong schema or configuration is
    raised at once, since waiting will not fix it.
    """
    delay = 0.5
    logged: str | None = None
    while True:
        try:
            await component.start()
            return
        except DependencyUnavailable as exc:
            if on_failure is not None:
                on_failure(str(exc))
            if str(exc) != logged:  # once per reason, not once per retry
                logged = str(exc)
                log.warning("%s; the %s is retried with backoff (up to %.0f s), the platform is "
                            "not ready until then", exc, what, max_backoff_s)  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff_s)


def sandbox_root() -> Path:
    """Sandboxes' work dirs live outside the data dir, which sandbox users must not enter.

    Mode 0711: a sandbox can reach its own (0700) dir by name but cannot list the others.
    """
    root = Path(tempfile.mkdtemp(prefix="squall-sandboxes-"))
    os.chmod(root, 0o711)
    return root


def prepare_data_dir(path: Path) -> None:
    """The data dir holds the database and keys: only the platform's user may enter it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


async def ensure_guest(settings: Settings, store: EntityStore) -> str:
    """The guest namespace's `uuid:key`: from SQUALL_GUEST_AUTH, else generated once and kept."""
    key_file = settings.data_dir / GUEST_AUTH_FILE
    auth = settings.guest_auth
    if auth is None and key_file.exists():
        auth = key_file.read_text().strip()
    if auth is None:
        auth = generate_auth()
    if not key_file.exists() or key_file.read_text().strip() != auth:
        key_file.write_text(auth + "\n")
        os.chmod(key_file, 0o600)
    current = await store.get_subject_by_namespace(GUEST_NAMESPACE)
    uid = auth.partition(":")[0]
    if (
        current is None
        or current.uuid != uid
        or not verify_key(auth.partition(":")[2], current.key_hash)
    ):
        if current is not None:
            await store.delete_subject(GUEST_NAMESPACE)
        # Limits an admin set for guest stay; only the key follows SQUALL_GUEST_AUTH.
        limits = current.limits if current is not None else None
        await store.put_subject(subject_record(GUEST_NAMESPACE, auth, limits))
    return auth
