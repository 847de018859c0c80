"""Wiring: builds every component of one Squall process from its settings, starts and stops them.

Standalone runs all three roles in one process with the embedded backends; the invoke path is
still controller -> bus -> scheduler queue -> invoker -> sandbox, exactly as in a cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from starlette.types import ASGIApp

from squall.abc import ActivationStore, Coordinator, EntityStore, MessageBus, SandboxFactory
from squall.alarms import AlarmService
from squall.bus.memory import MemoryBus
from squall.config import Settings
from squall.controller.app import build_app
from squall.controller.auth import (
    Authenticator,
    FailureThrottle,
    generate_auth,
    subject_record,
    verify_key,
)
from squall.controller.feeds import AlarmFeeds
from squall.controller.service import ControllerService
from squall.coordination.local import LocalCoordinator
from squall.errors import DependencyUnavailable
from squall.invoker.service import InvokerService
from squall.ops.dependencies import DependencyMonitor, etcd_monitor, kafka_monitor
from squall.ops.metrics import Sources, metrics_registry
from squall.ops.readiness import Check, Readiness, scrub, store_fix
from squall.ops.routes import ops_routes
from squall.runtimes import load_manifest
from squall.sandbox.process import ProcessSandboxFactory
from squall.scheduler.service import SchedulerService
from squall.stores import select
from squall.stores.journal import JOURNAL_FILE, CrashJournal, JournaledBus
from squall.stores.retention import RetentionService
from squall.ui import ui_routes

log = logging.getLogger("squall")


class Closable(Protocol):
    async def close(self) -> None: ...

GUEST_NAMESPACE = "guest"
GUEST_AUTH_FILE = "guest.auth"


@dataclass
class Platform:
    """Every component of a standalone process, in start order."""

    settings: Settings
    entities: EntityStore
    activations: ActivationStore
    bus: MessageBus
    coordinator: Coordinator
    sandboxes: SandboxFactory
    scheduler: SchedulerService
    invoker: InvokerService
    controller: ControllerService
    auth: Authenticator
    alarms: AlarmService
    retention: RetentionService
    readiness: Readiness
    app: ASGIApp
    journal: CrashJournal | None = None
    guest_auth: str = field(default="", repr=False)
    warnings: list[str] = field(default_factory=list)
    _recovery: asyncio.Task[None] | None = field(default=None, repr=False)
    _started: list[Closable] = field(default_factory=list, repr=False)

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
        self._started.append(self.entities)  # a start cancelled while retrying closes its pool
        await start_with_retry(self.entities, "entity store", on_failure=self._entity_store_down)
        for component in (
            self.activations,  # an unreachable one buffers records and reconnects by itself
            self.bus,
            self.coordinator,
            self.sandboxes,
        ):
            self._started.append(component)
            await component.start()
        if self.journal is not None and self.journal.open_count:
            # Settled beside the start: it waits for the store when that is unreachable.
            self._recovery = asyncio.create_task(self.journal.recover(self.activations))
        await self.readiness.start()  # its probe reads the stores, which are open now
        self.guest_auth = await ensure_guest(self.settings, self.entities)
        # The alarms last: their fires go through the controller.
        for service in (self.retention, self.scheduler, self.invoker, self.controller, self.alarms):
            self._started.append(service)
            await service.start()

    def _entity_store_down(self, reason: str) -> None:
        url = self.settings.entity_store_url
        fix = store_fix("entity_store", url)
        self.readiness.note("entity_store", Check("unavailable", scrub(reason), fix))

    async def close(self) -> None:
        """Stop in reverse start order; every component is closed even if one fails (an
        activation store that cannot write its last records raises after the rest closed)."""
        first_error: BaseException | None = None
        if self._recovery is not None:
            self._recovery.cancel()
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


def build_platform(settings: Settings) -> Platform:
    """All components for `settings`, not yet started."""
    entities = select.entity_store(settings.entity_store_url, settings.data_dir)
    activations = select.activation_store(
        settings.activation_store_url, settings.data_dir, max_pending=settings.stores.buffer_max
    )
    # The in-process bus and the batched record writes live in memory: journal what they hold.
    journal = CrashJournal(settings.data_dir / JOURNAL_FILE)
    bus = JournaledBus(MemoryBus(), journal)
    activations.journal = journal
    coordinator = LocalCoordinator()
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
    )
    api_host = settings.api_host or f"http://{settings.host}:{settings.port}"
    invoker = InvokerService(
        bus=bus,
        factory=sandboxes,
        endpoint_for=lambda _scheduler_id: scheduler,
        activations=activations,
        settings=settings.invoker,
        limits=limits,
        api_host=api_host,
        runtimes=runtimes,
    )
    controller = ControllerService(
        entities=entities,
        activations=activations,
        bus=bus,
        coordinator=coordinator,
        limits=limits,
        kinds=frozenset(sandboxes.kinds()),
        kind_aliases=runtimes.aliases(),
    )
    auth = Authenticator(
        entities,
        FailureThrottle(burst=limits.auth_failure_burst),
        ttl_s=settings.access.identity_ttl_s,
    )
    feeds = AlarmFeeds(controller)
    # The scheduler role owns alarm timers; in one process they fire through the controller.
    alarms = AlarmService(
        entities,
        feeds.fire,
        on_delete_after_fire=feeds.delete_after_fire,
        on_throttled=feeds.record_throttled,
    )
    feeds.attach(alarms)
    monitors, warnings = dependency_monitors(settings)
    readiness = Readiness(
        settings,
        entities=entities,
        activations=activations,
        scheduler=scheduler,
        alarms=alarms,
        sandboxes=sandboxes,
        monitors=monitors,
    )
    sources = Sources(activations, scheduler, invoker, alarms, readiness)
    registry = metrics_registry(sources)
    routes = [*ops_routes(readiness, registry), *ui_routes(auth, sources)]
    app = build_app(controller, auth, routes, feeds, runtimes=runtimes.info())
    if getattr(sandboxes, "isolation_degraded", False):
        warnings.append(
            f"sandbox isolation is reduced: {getattr(sandboxes, 'isolation_reason', '')}"
        )
    if runtimes.missing:
        warnings.append("runtimes not installed, their kinds are not offered: "
                        + ", ".join(runtimes.missing))  # fmt: skip
    return Platform(
        settings,
        entities,
        activations,
        bus,
        coordinator,
        sandboxes,
        scheduler,
        invoker,
        controller,
        auth,
        alarms,
        RetentionService(activations, settings.stores.retention_s),
        readiness,
        app,
        journal=journal,
        warnings=warnings,
    )


def dependency_monitors(settings: Settings) -> tuple[list[DependencyMonitor], list[str]]:
    """Readiness monitors for Kafka and etcd when configured, and what to warn about.

    Until cluster mode brings the Kafka bus and the etcd coordinator, one process carries its
    messages and leases in-process; with `bus=kafka` or `coordination=etcd` it still checks
    those services, so readiness and `/readyz` tell the truth about them before the switch.
    """
    monitors: list[DependencyMonitor] = []
    warnings: list[str] = []
    if settings.bus == "kafka":
        from squall.bus.kafka_client import require_client

        require_client()
        monitors.append(kafka_monitor(settings.kafka))
        warnings.append("bus=kafka: the broker is checked for readiness; this process still "
                        "carries its messages in-process (the Kafka bus comes with cluster mode)")
    if settings.coordination == "etcd":
        monitors.append(etcd_monitor(settings.etcd))
        warnings.append("coordination=etcd: etcd is checked for readiness; this process still "
                        "coordinates in-process (the etcd coordinator comes with cluster mode)")
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
