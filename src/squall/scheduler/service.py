"""The scheduler role: consumes activations, keeps a queue per action, decides on containers.

It also answers the invokers' containers when they pull work (`fetch`), the in-process form of
OpenWhisk's FetchActivation; in a cluster the same methods sit behind the scheduler's endpoint
(`scheduler/endpoint.py`), and `invoker_gone` settles what a dead invoker was running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from squall.abc import ActivationStore, Coordinator, MessageBus
from squall.config import SchedulerSettings
from squall.entities.action import Action
from squall.entities.activation import (
    DEVELOPER_ERROR,
    WHISK_ERROR,
    ActivationResponse,
)
from squall.errors import QueueGone, SquallError
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
from squall.scheduler.decision import QueueSnapshot, decide
from squall.scheduler.queue import MemoryQueue, PendingCreation

log = logging.getLogger("squall.scheduler")

TOO_MANY_IN_FLIGHT = "Too many concurrent requests in flight."
INVOKER_GONE = "The invoker running the activation stopped before it finished."

InvokerChoice = Callable[[Action], str | None]


def only_invoker(_action: Action) -> str:
    """Standalone's choice: its one invoker, which consumes the topic named after it."""
    return INVOKER_TOPIC

__all__ = ["QueueGone", "SchedulerService"]


class SchedulerService:
    """Queues keyed by (invocation namespace, action path); one revision live per queue."""

    def __init__(
        self,
        *,
        bus: MessageBus,
        coordinator: Coordinator,
        activations: ActivationStore,
        settings: SchedulerSettings,
        namespace_limit: Callable[[str], int],
        scheduler_id: str = "scheduler0",
        choose_invoker: InvokerChoice = only_invoker,
        route: Callable[[QueueKey], str | None] | None = None,
        may_dispatch: Callable[[], bool] | None = None,
    ) -> None:
        self._bus, self._coordinator, self._activations = bus, coordinator, activations
        self._settings = settings
        self._namespace_limit = namespace_limit
        self.scheduler_id = scheduler_id
        # Which invoker gets a new container (its id is also its topic); None: none can now,
        # the next tick asks again.
        self._choose_invoker = choose_invoker
        # In a cluster: which scheduler owns a queue now (activations for another's queue are
        # passed on), and whether this one may still hand out work (its etcd lease is sure).
        self._route = route
        self._may_dispatch = may_dispatch
        self._queues: dict[tuple[str, str], MemoryQueue] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._lookups: set[asyncio.Task[None]] = set()
        # The activation each container was last handed, until it asks again or stops: what
        # fails with a record when its invoker dies (container ids are `{invoker_id}/c{n}`).
        # Container id -> the activation it was handed, and when (for `_busy_ms`).
        self._in_flight: dict[str, tuple[ActivationMessage, float]] = {}
        # Fetches of containers in other processes, parked here: cancelled when their invoker
        # is declared gone, so no activation is handed to a container that is no more.
        self._remote_fetches: dict[str, asyncio.Future[ActivationMessage | None]] = {}
        # Why the activation store cannot answer duration statistics (None when it can): the
        # scheduler then decides on the durations invokers report, and readiness is degraded.
        self.durations_degraded: str | None = None
        self.counts = ActivationCounts()  # activations failed here, read by metrics

    def queue_stats(self) -> tuple[int, int, int]:
        """(queues, queued activations, container creations in progress), for metrics."""
        queues = self._queues.values()
        return (
            len(self._queues),
            sum(len(q.entries) for q in queues),
            sum(len(q.creations) for q in queues),
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # Its own topic (OpenWhisk's `scheduler{N}`); `scheduler0` in one process.
        self._subscription = self._bus.subscribe(
            self.scheduler_id, self.scheduler_id, self._received
        )
        self._tasks = [asyncio.create_task(self._tick_forever(), name="scheduler-tick")]

    async def close(self) -> None:
        await self._subscription.close()
        for task in [*self._tasks, *self._lookups]:
            task.cancel()
        for task in [*self._tasks, *self._lookups]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for queue in list(self._queues.values()):
            self._fail_all(
                queue.remove(), "The scheduler shut down before the activation ran.", WHISK_ERROR
            )
        self._queues.clear()

    def _received(self, message: object) -> None:
        if not isinstance(message, ActivationMessage):
            return
        if self._route is not None:
            owner = self._route(message.queue_key)
            if owner is not None and owner != self.scheduler_id:
                # Sent before the membership changed: the queue lives elsewhere now.
                self._bus.publish(owner, message)
                return
        self.accept(message)

    # -- activations -----------------------------------------------------------------------

    def accept(self, message: ActivationMessage) -> None:
        """Queue one activation, creating the queue (and its first container) when needed."""
        queue = self._queue_for(message)
        if queue.throttled or len(queue.entries) >= self._settings.max_retention_size:
            self._throttle(queue, True)
            self._fail(message, TOO_MANY_IN_FLIGHT, DEVELOPER_ERROR)
            return
        queue.enqueue(message)
        if not queue.containers and not queue.creations:
            self._schedule(queue)  # a cold start must not wait for the next tick

    def _queue_for(self, message: ActivationMessage) -> MemoryQueue:
        key = message.queue_key
        slot = (key.invocation_namespace, key.action_path)
        queue = self._queues.get(slot)
        if queue is not None and queue.key.revision >= key.revision:
            return queue
        fresh = MemoryQueue(
            key=key,
            memory_mb=message.action.limits.memory,
            instances=message.action.limits.instances,
            concurrency=message.action.limits.concurrency,
            duration_buffer_size=self._settings.duration_buffer_size,
        )
        self._queues[slot] = fresh
        self._look_up_durations(fresh)
        if queue is not None:  # a newer revision retires the old queue's containers
            for left in queue.remove():
                fresh.enqueue(left)
        return fresh

    def _look_up_durations(self, queue: MemoryQueue) -> None:
        """Ask the store for the action's past durations, off the hot path (OpenWhisk's
        DurationChecker, which only its Elasticsearch store could answer; every store can here).
        """
        task = asyncio.ensure_future(self._stored_durations(queue))
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _stored_durations(self, queue: MemoryQueue) -> None:
        since = int((time.time() - self._settings.duration_window_s) * 1000)
        key = queue.key
        try:
            stats = await self._activations.duration_stats(
                key.invocation_namespace, key.action_path, since
            )
        except SquallError as exc:
            if self.durations_degraded is None:
                log.warning("duration statistics unavailable (%s); scheduling on the durations "
                            "invokers report until the activation store answers", exc)  # fmt: skip
            self.durations_degraded = str(exc)
            return
        if self.durations_degraded is not None:
            log.warning("duration statistics available again from the activation store")
            self.durations_degraded = None
        if stats is not None:
            queue.stored_average_ms = stats.average_ms

    def _throttle(self, queue: MemoryQueue, on: bool) -> None:
        if queue.throttled == on:
            return
        queue.throttled = on
        flag = f"throttling/{queue.key.invocation_namespace}/{queue.key.action_path}"
        coro = self._coordinator.put(flag, "true") if on else self._coordinator.delete(flag)
        task = asyncio.ensure_future(coro)
        task.add_done_callback(_log_failure)

    # -- what containers call --------------------------------------------------------------

    async def fetch(
        self, key: QueueKey, container_id: str, last_duration_ms: float | None, timeout_s: float
    ) -> ActivationMessage | None:
        """The next activation for a container of `key`; QueueGone when it should stop."""
        # It asks again: its last activation ended.
        last_duration_ms = self._busy_ms(self._in_flight.pop(container_id, None), last_duration_ms)
        queue = self._live_queue(key)
        fenced = self._may_dispatch is not None and not self._may_dispatch()
        # Without a sure lease another scheduler may own this queue by now: hold the container.
        if fenced and self._may_dispatch and not await _wait_for(self._may_dispatch, timeout_s):
            return None
        message = await queue.fetch(last_duration_ms, timeout_s)
        if message is not None:
            self._in_flight[container_id] = (message, time.monotonic())
        if queue.throttled and len(queue.entries) <= (
            self._settings.max_retention_size * self._settings.throttling_fraction
        ):
            self._throttle(queue, False)
        return message

    @staticmethod
    def _busy_ms(
        handed: tuple[ActivationMessage, float] | None, run_ms: float | None
    ) -> float | None:
        """How long the container was busy with its last activation: from its hand-out to this
        fetch, when that is longer than the run the container reports. The decisions divide
        the stale threshold by this; in a cluster a container's turn also holds the fetch's
        round trip and the completion, and counting the bare run made one container look
        able to serve a hundred waiting activations (too few containers under load)."""
        if run_ms is None or handed is None:
            return run_ms
        return max(run_ms, (time.monotonic() - handed[1]) * 1000)

    async def fetch_remote(
        self,
        key: QueueKey,
        container_id: str,
        last_duration_ms: float | None,
        timeout_s: float,
        disconnected: Awaitable[object],
    ) -> ActivationMessage | None:
        """`fetch` for a container in another process, given an awaitable that completes when
        its connection drops: an activation taken for a caller that is gone goes back to the
        queue's head instead of into a closed socket. QueueGone also when the container's
        invoker was declared gone while it waited."""
        fetching = asyncio.ensure_future(self.fetch(key, container_id, last_duration_ms, timeout_s))
        watching = asyncio.ensure_future(disconnected)
        self._remote_fetches[container_id] = fetching
        try:
            await asyncio.wait((fetching, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            if self._remote_fetches.get(container_id) is fetching:
                del self._remote_fetches[container_id]
            if not fetching.done():
                fetching.cancel()  # the queue gives a message it had handed over back
                await asyncio.wait((fetching,))
        if fetching.cancelled():
            raise QueueGone(f"{key}: the invoker of {container_id} is gone")
        message = fetching.result()
        if watching.done() and not watching.cancelled() and message is not None:
            self._put_back(key, container_id, message)
            return None
        return message

    def _put_back(self, key: QueueKey, container_id: str, message: ActivationMessage) -> None:
        handed = self._in_flight.get(container_id)
        if handed is not None and handed[0] is message:
            del self._in_flight[container_id]
        queue = self._queues.get((key.invocation_namespace, key.action_path))
        if queue is not None and queue.key == key and not queue.removed:
            queue.put_back(message)
        else:  # its queue went meanwhile: whoever took its other entries took this one too
            self.accept(message)

    def container_started(self, key: QueueKey, creation_id: str, container_id: str) -> None:
        queue = self._live_queue(key)
        queue.creations.pop(creation_id, None)
        queue.containers.add(container_id)

    def container_stopped(
        self, key: QueueKey, container_id: str, last_received: str | None
    ) -> None:
        handed = self._in_flight.pop(container_id, None)
        if handed is not None and handed[0].activation_id != last_received:
            # Taken for it, but the answer never reached it (its connection dropped with the
            # answer in flight): it never ran, so it waits again, first in line.
            self._put_back(key, container_id, handed[0])
        queue = self._queues.get((key.invocation_namespace, key.action_path))
        if queue is not None and queue.key == key:
            queue.containers.discard(container_id)
            if queue.entries and not queue.containers and not queue.creations:
                self._schedule(queue)

    def creation_failed(self, key: QueueKey, creation_id: str, error: str, developer: bool) -> None:
        """A container could not be made; developer errors fail what waits, others retry."""
        queue = self._queues.get((key.invocation_namespace, key.action_path))
        if queue is None or queue.key != key:
            return
        queue.creations.pop(creation_id, None)
        if developer and not queue.containers:
            self._fail_all(list(_drain(queue)), error, DEVELOPER_ERROR)

    def invoker_gone(self, invoker_id: str) -> None:
        """An invoker died (its membership key vanished): what ran there ends with a whisk
        error record, its containers and pending creations are forgotten, and queues that
        still hold activations get new containers elsewhere at once."""
        prefix = f"{invoker_id}/"
        failed: list[str] = []
        for container_id in [c for c in self._in_flight if c.startswith(prefix)]:
            message, _ = self._in_flight.pop(container_id)
            self._fail(message, INVOKER_GONE, WHISK_ERROR)
            failed.append(message.activation_id)
        if failed:  # one line, not one per activation: a busy invoker runs hundreds
            more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
            shown = ", ".join(failed[:5]) + more
            log.warning("invoker %s is gone; the %d activations running there end with a "
                        "whisk error: %s", invoker_id, len(failed), shown)  # fmt: skip
        for container_id, fetching in list(self._remote_fetches.items()):
            if container_id.startswith(prefix):
                fetching.cancel()
        for queue in list(self._queues.values()):
            lost = {c for c in queue.containers if c.startswith(prefix)}
            creations = [i for i, c in queue.creations.items() if c.invoker_id == invoker_id]
            if not lost and not creations:
                continue
            queue.containers -= lost
            for creation_id in creations:
                del queue.creations[creation_id]
            if queue.entries:
                self._schedule(queue)

    def _live_queue(self, key: QueueKey) -> MemoryQueue:
        queue = self._queues.get((key.invocation_namespace, key.action_path))
        if queue is None or queue.key != key or queue.removed:
            raise QueueGone(str(key))
        return queue

    # -- decisions -------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.check_interval_s)
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed; continuing")

    def tick(self) -> None:
        """One decision round over every queue: drop too-old entries, scale, retire idle queues."""
        now = time.monotonic()
        for slot, queue in list(self._queues.items()):
            expired = queue.drop_older_than(now, self._settings.max_retention_ms / 1000)
            self._fail_all(
                expired,
                f"Activation processing is not initiated for {self._settings.max_retention_ms} ms",
                WHISK_ERROR,
            )
            self._schedule(queue)
            if self._is_idle(queue, now):
                queue.remove()
                del self._queues[slot]

    def _is_idle(self, queue: MemoryQueue, now: float) -> bool:
        return (
            not queue.entries
            and not queue.creations
            and not queue.containers
            and now - queue.last_activity > self._settings.idle_grace_s
        )

    def _schedule(self, queue: MemoryQueue) -> None:
        decision = decide(self._snapshot(queue))
        for _ in range(decision.add):
            self._create_container(queue)

    def _snapshot(self, queue: MemoryQueue) -> QueueSnapshot:
        namespace = queue.key.invocation_namespace
        ns_existing = ns_progress = 0
        for other in self._queues.values():
            if other.key.invocation_namespace == namespace:
                ns_existing += len(other.containers)
                ns_progress += len(other.creations)
        limit = self._namespace_limit(namespace)
        instances = queue.instances
        return QueueSnapshot(
            existing=len(queue.containers),
            in_progress=len(queue.creations),
            queued=len(queue.entries),
            stale=queue.stale_count(time.monotonic(), self._settings.stale_threshold_ms / 1000),
            namespace_existing=ns_existing,
            namespace_in_progress=ns_progress,
            namespace_limit=limit,
            action_limit=min(instances, limit) if instances is not None else limit,
            concurrency=queue.concurrency,
            average_duration_ms=queue.average_duration(),
            stale_threshold_ms=self._settings.stale_threshold_ms,
        )

    def _create_container(self, queue: MemoryQueue) -> None:
        if not queue.entries:
            return
        # The newest message's action is the revision this queue serves.
        action = queue.entries[-1].message.action
        invoker_id = self._choose_invoker(action)
        if invoker_id is None:
            return  # no invoker can take it now; the next tick decides again
        creation_id = uuid.uuid4().hex
        queue.creations[creation_id] = PendingCreation(invoker_id, time.monotonic())
        self._bus.publish(
            invoker_id, ContainerCreation(creation_id, queue.key, action, self.scheduler_id)
        )

    # -- failing activations the scheduler cannot run ----------------------------------------

    def _fail_all(self, messages: list[ActivationMessage], error: str, status: int) -> None:
        for message in messages:
            self._fail(message, error, status)

    def _fail(self, message: ActivationMessage, error: str, status: int) -> None:
        TRANSACTION.set(message.transaction_id)
        now = int(time.time() * 1000)
        record = message.record(
            start=now,
            end=now,
            response=ActivationResponse(status, {"error": error}),
            logs=[],
            annotations=[],
        )
        self.counts.count(record)
        try:
            self._activations.store(record)
        except SquallError as exc:  # refused loudly (buffer full); the caller is still answered
            log.error("activation record not stored: %s", exc)
        self._bus.publish(
            completed_topic(message.controller_id),
            Completion(message.activation_id, message.controller_id, record),
        )


async def _wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def _drain(queue: MemoryQueue) -> list[ActivationMessage]:
    messages = [e.message for e in queue.entries]
    queue.entries.clear()
    return messages


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not update a throttling flag: %s", task.exception())
