"""The invoker role: starts containers when a scheduler asks, each pulling from its queue.

Each container talks to the scheduler that asked for it (`ContainerCreation.scheduler_id`),
through the `QueueEndpoint` that `endpoint_for` gives for that id: the scheduler object itself
in one process, `invoker/remote.py` across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from squall.abc import (
    ActivationStore,
    MessageBus,
    QueueEndpoint,
    Sandbox,
    SandboxFactory,
    SandboxSpec,
)
from squall.config import InvokerSettings, SystemLimits
from squall.entities.action import Action
from squall.errors import QueueGone, StoreError
from squall.invoker.execute import execute
from squall.invoker.prewarm import PrewarmPool, PrewarmPools
from squall.logs import TRANSACTION
from squall.messages import (
    INVOKER_TOPIC,
    ActivationMessage,
    Completion,
    ContainerCreation,
    QueueKey,
    completed_topic,
)
from squall.ops.counters import ActivationCounts
from squall.runtimes import Manifest

log = logging.getLogger("squall.invoker")

MB = 1024 * 1024


@dataclass(slots=True)
class _Container:
    container_id: str
    creation: ContainerCreation
    memory_mb: int
    endpoint: QueueEndpoint  # of the scheduler that asked for it
    task: asyncio.Task[None] | None = None
    parked: bool = False
    activations: int = 0
    last_received: str | None = None  # the id of the last activation it was handed
    sandbox: Sandbox | None = field(default=None, repr=False)


class InvokerService:
    """Container pool with prewarmed stem cells, memory accounting and idle eviction."""

    def __init__(
        self,
        *,
        bus: MessageBus,
        factory: SandboxFactory,
        endpoint_for: Callable[[str], QueueEndpoint],
        activations: ActivationStore,
        settings: InvokerSettings,
        limits: SystemLimits,
        api_host: str,
        invoker_id: str = INVOKER_TOPIC,
        runtimes: Manifest | None = None,
        load_code: Callable[[Action], Awaitable[Action]] | None = None,
        send_directly: Callable[[Completion], None] | None = None,
    ) -> None:
        self._bus, self._factory, self._endpoint_for = bus, factory, endpoint_for
        # In a cluster: a blocking activation's completion straight to its controller.
        self._send_directly = send_directly
        self._activations, self._settings, self._limits = activations, settings, limits
        self._api_host, self.invoker_id = api_host, invoker_id
        self._containers: dict[str, _Container] = {}
        self._ids = itertools.count(1)
        # Container ids differ between runs of one invoker id: a restarted invoker's `c1` is not
        # taken by its schedulers for the `c1` its predecessor died with.
        self._boot = secrets.token_hex(2)
        # In a cluster, where an action's code is read from (as OpenWhisk's invokers read it
        # from the database): activation messages carry none.
        self._load_code = load_code
        self.prewarm = PrewarmPools(stem_cell_pools(factory, runtimes, settings, limits))
        self.counts = ActivationCounts()  # read by the metrics collector at scrape time

    async def start(self) -> None:
        await self.prewarm.start()
        # Schedulers publish a container creation to the topic named after the chosen invoker.
        self._subscription = self._bus.subscribe(self.invoker_id, self.invoker_id, self._received)

    def _store_record(self, record: dict[str, Any]) -> None:
        # A full buffer (the store unreachable for long) refuses the record loudly; the caller
        # still gets its result, so the completion is published either way.
        self.counts.observe(record)
        try:
            self._activations.store(record)
        except StoreError as exc:
            log.error("activation record not stored: %s", exc)

    def _complete(self, message: ActivationMessage, completion: Completion) -> None:
        if message.blocking and self._send_directly is not None:
            self._send_directly(completion)  # its caller waits: the shortest way
        else:
            self._bus.publish(completed_topic(message.controller_id), completion)

    async def close(self) -> None:
        await self._subscription.close()
        tasks = [c.task for c in self._containers.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.prewarm.close()

    def _received(self, message: object) -> None:
        if isinstance(message, ContainerCreation):
            self.create_container(message)

    # -- containers ------------------------------------------------------------------------

    def used_memory_mb(self) -> int:
        return sum(c.memory_mb for c in self._containers.values())

    def container_count(self) -> int:
        return len(self._containers)

    def container_states(self) -> dict[str, int]:
        """Containers by state: `starting` (no sandbox yet), `warm` (parked, waiting for work),
        `busy` (running an activation); prewarmed stem cells are counted by the pool."""
        states = {"starting": 0, "warm": 0, "busy": 0}
        for container in self._containers.values():
            if container.sandbox is None:
                states["starting"] += 1
            else:
                states["warm" if container.parked else "busy"] += 1
        return states

    def create_container(self, creation: ContainerCreation) -> None:
        memory = creation.action.limits.memory
        endpoint = self._endpoint_for(creation.scheduler_id)
        if not self._make_room(memory, creation.queue):
            endpoint.creation_failed(
                creation.queue,
                creation.creation_id,
                "No invoker has enough free memory for the action.",
                developer=False,
            )
            return
        container = _Container(
            f"{self.invoker_id}/{self._boot}c{next(self._ids)}", creation, memory, endpoint
        )
        self._containers[container.container_id] = container
        container.task = asyncio.create_task(self._run_container(container))

    def _make_room(self, memory_mb: int, queue: QueueKey) -> bool:
        """Evict parked (idle) containers of other queues, least used first, until `memory_mb`
        fits. A parked container of `queue` itself is never evicted for a new one of the same
        queue: it is about to take that queue's next activation, and replacing it would only
        add a cold start (under load that churn cut a cluster's throughput tenfold)."""
        budget = self._settings.user_memory_mb
        if self.used_memory_mb() + memory_mb <= budget:
            return True
        idle = sorted(
            (c for c in self._containers.values() if c.parked and c.creation.queue != queue),
            key=lambda c: c.activations,
        )
        for container in idle:
            if container.task is not None:
                container.task.cancel()
            self._containers.pop(container.container_id, None)
            if self.used_memory_mb() + memory_mb <= budget:
                return True
        return False

    def _creation_failed(self, container: _Container, exc: Exception) -> None:
        """Forget a container that never started; its scheduler retries (not the developer's
        fault)."""
        self._containers.pop(container.container_id, None)
        creation = container.creation
        container.endpoint.creation_failed(creation.queue, creation.creation_id, str(exc), False)

    async def _run_container(self, container: _Container) -> None:
        creation = container.creation
        action = creation.action
        if self._load_code is not None and not action.code:
            try:  # the scheduler knows the action from messages, which carry no code
                creation.action = action = await self._load_code(action)
            except Exception as exc:
                log.warning("the code of %s could not be read: %s", action.qualified, exc)
                self._creation_failed(container, exc)
                return
        spec = SandboxSpec(action.kind, action.limits.memory, action.limits.logs * MB)
        try:
            sandbox = self.prewarm.take(spec) or await self._factory.create(spec)
        except Exception as exc:
            log.warning("container creation for %s failed: %s", creation.queue, exc)
            self._creation_failed(container, exc)
            return
        container.sandbox = sandbox
        try:
            container.endpoint.container_started(
                creation.queue, creation.creation_id, container.container_id
            )
            await self._serve(container, sandbox)
        except QueueGone:
            pass
        finally:
            self._containers.pop(container.container_id, None)
            container.endpoint.container_stopped(
                creation.queue, container.container_id, container.last_received
            )
            await asyncio.shield(sandbox.destroy())

    async def _serve(self, container: _Container, sandbox: Sandbox) -> None:
        key, action = container.creation.queue, container.creation.action
        endpoint = container.endpoint
        last_duration: float | None = None
        while True:
            container.parked = True
            message = await endpoint.fetch(
                key, container.container_id, last_duration, self._settings.idle_container_s
            )
            container.parked = False
            if message is None:
                return  # idle for too long: give the memory back
            container.last_received = message.activation_id
            TRANSACTION.set(message.transaction_id)
            # Messages from another process carry no code: run the action this container was
            # made for (the same revision, as the queue key says).
            message.action = action
            executed = await execute(
                sandbox,
                message,
                needs_init=container.activations == 0,
                api_host=self._api_host,
                result_limit=self._limits.result_bytes,
            )
            container.activations += 1
            last_duration = executed.run_ms
            self._store_record(executed.record)
            self._complete(
                message, Completion(message.activation_id, message.controller_id, executed.record)
            )
            if container.activations == 1:
                self.prewarm.replenish()  # the cold start is answered: fork its replacement
            if executed.discard:
                return


def stem_cell_pools(
    factory: SandboxFactory,
    runtimes: Manifest | None,
    settings: InvokerSettings,
    limits: SystemLimits,
) -> list[PrewarmPool]:
    """A pool per stem-cell entry of the manifest's available kinds.

    Without a manifest (an invoker built by hand), Python cells as before. A cell without its
    own memory gets the largest action memory (Python cells narrow it at init).
    """
    logs = limits.logs_mb.default * MB
    if runtimes is None:
        spec = SandboxSpec("python:default", limits.memory_mb.maximum, logs)
        count = 2 if settings.prewarm_count is None else settings.prewarm_count
        return [PrewarmPool(factory, spec, count)]
    pools = []
    for kind in runtimes.kinds.values():
        for cell in kind.stem_cells:
            count = cell.count if settings.prewarm_count is None else settings.prewarm_count
            memory = cell.memory_mb or limits.memory_mb.maximum
            pools.append(PrewarmPool(factory, SandboxSpec(kind.kind, memory, logs), count))
    return pools
