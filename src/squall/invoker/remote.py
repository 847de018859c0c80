"""A scheduler in another process as a `QueueEndpoint`: OpenWhisk FPC's FetchActivation over
the scheduler's internal HTTP endpoint (`scheduler/endpoint.py`).

A container long-polls `fetch`; a scheduler that answers 410, cannot be reached, refuses the
call or is no longer a member ends the container like `QueueGone`: the queue's new owner makes
its own containers. The notifications (started, stopped, creation failed) are sync in the
protocol, so they are sent by one task per scheduler, in order (a `stopped` never overtakes
its `started`), from a bounded backlog; a failed one is logged and dropped, since the
scheduler it was for is gone or will forget the container with its invoker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from squall.abc import MessageBus
from squall.bus import codec
from squall.cluster.internal import InternalCallFailed, InternalClient
from squall.errors import DependencyUnavailable, QueueGone, SquallError
from squall.messages import ActivationMessage, Completion, QueueKey, completed_topic

log = logging.getLogger("squall.invoker")

FETCH_PATH = "/queues/fetch"
STARTED_PATH = "/queues/started"
STOPPED_PATH = "/queues/stopped"
CREATION_FAILED_PATH = "/queues/creation-failed"
COMPLETIONS_PATH = "/completions"  # a controller's, see controller/completions.py
DIRECT_TIMEOUT_S = 2.0  # then the completion goes through Kafka after all
MAX_DIRECT_IN_FLIGHT = 2  # more completions on their way than this: the rest through Kafka

# The HTTP call waits this much longer than the scheduler holds a fetch, so an empty long poll
# ends with the scheduler's 204 and only a scheduler that stopped answering hits the timeout.
FETCH_GRACE_S = 2.0
MAX_PENDING_NOTIFICATIONS = 1000
CLOSE_DRAIN_S = 2.0

UrlFor = Callable[[str], str | None]


class RemoteQueueEndpoint:
    """The queues of one scheduler (`scheduler_id`), found at the URL `url_for` gives now."""

    def __init__(
        self,
        scheduler_id: str,
        url_for: UrlFor,
        client: InternalClient,
        *,
        max_pending: int = MAX_PENDING_NOTIFICATIONS,
        fetch_grace_s: float = FETCH_GRACE_S,
    ) -> None:
        self.scheduler_id = scheduler_id
        self._url_for, self._client, self._grace_s = url_for, client, fetch_grace_s
        self._pending: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(max_pending)
        self._sender: asyncio.Task[None] | None = None
        self._dropping = False  # logged once per episode of a full backlog, not per message

    # -- QueueEndpoint ---------------------------------------------------------------------

    async def fetch(
        self, key: QueueKey, container_id: str, last_duration_ms: float | None, timeout_s: float
    ) -> ActivationMessage | None:
        body = {
            "queue": codec.queue_key_json(key),
            "container_id": container_id,
            "last_duration_ms": last_duration_ms,
            "timeout_s": timeout_s,
        }
        try:
            reply = await self._client.call(
                self._url(), FETCH_PATH, body, timeout_s=timeout_s + self._grace_s
            )
        except InternalCallFailed as exc:
            if exc.status != 410:
                log.warning("scheduler %s refused a fetch for %s (HTTP %d): %s; the container "
                            "stops", self.scheduler_id, key, exc.status, exc)  # fmt: skip
            raise QueueGone(f"{key}: {exc}") from exc
        except DependencyUnavailable as exc:
            log.info("scheduler %s unreachable (%s); its containers stop", self.scheduler_id, exc)
            raise QueueGone(f"{key}: {exc}") from exc
        if reply is None:
            return None  # 204: nothing came within timeout_s
        return _activation(reply, self.scheduler_id)

    def container_started(self, key: QueueKey, creation_id: str, container_id: str) -> None:
        body = {"queue": codec.queue_key_json(key), "creation_id": creation_id,
                "container_id": container_id}  # fmt: skip
        self._notify(STARTED_PATH, body)

    def container_stopped(
        self, key: QueueKey, container_id: str, last_received: str | None
    ) -> None:
        body = {"queue": codec.queue_key_json(key), "container_id": container_id,
                "last_received": last_received}  # fmt: skip
        self._notify(STOPPED_PATH, body)

    def creation_failed(self, key: QueueKey, creation_id: str, error: str, developer: bool) -> None:
        self._notify(CREATION_FAILED_PATH, {"queue": codec.queue_key_json(key),
                                            "creation_id": creation_id, "error": error,
                                            "developer": developer})  # fmt: skip

    # -- notifications ---------------------------------------------------------------------

    def _url(self) -> str:
        url = self._url_for(self.scheduler_id)
        if url is None:
            raise QueueGone(f"scheduler {self.scheduler_id} is no longer a member")
        return url

    def _notify(self, path: str, body: dict[str, Any]) -> None:
        try:
            self._pending.put_nowait((path, body))
        except asyncio.QueueFull:
            if not self._dropping:
                log.warning("scheduler %s is not taking notifications (%d waiting); dropping "
                            "them until it does",
                            self.scheduler_id, self._pending.qsize())  # fmt: skip
            self._dropping = True
            return
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(
                self._send_forever(), name=f"notify-{self.scheduler_id}"
            )

    async def _send_forever(self) -> None:
        while True:
            path, body = await self._pending.get()
            try:
                await self._client.call(self._url(), path, body)
                self._dropping = False
            except SquallError as exc:  # QueueGone, DependencyUnavailable, InternalCallFailed
                log.info("notification %s to scheduler %s dropped: %s",
                         path, self.scheduler_id, exc)  # fmt: skip
            finally:
                self._pending.task_done()

    async def close(self) -> None:
        """Send what is waiting (for at most CLOSE_DRAIN_S), then stop the sender."""
        if self._sender is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending.join(), CLOSE_DRAIN_S)
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender


class RemoteEndpoints:
    """`endpoint_for` of an invoker in a cluster: one `RemoteQueueEndpoint` per scheduler id."""

    def __init__(self, url_for: UrlFor, client: InternalClient) -> None:
        self._url_for, self._client = url_for, client
        self._endpoints: dict[str, RemoteQueueEndpoint] = {}

    def __call__(self, scheduler_id: str) -> RemoteQueueEndpoint:
        endpoint = self._endpoints.get(scheduler_id)
        if endpoint is None:
            endpoint = RemoteQueueEndpoint(scheduler_id, self._url_for, self._client)
            self._endpoints[scheduler_id] = endpoint
        return endpoint

    async def close(self) -> None:
        """After the invoker closed: deliver its last `stopped` notifications."""
        await asyncio.gather(*(e.close() for e in self._endpoints.values()))


class DirectCompletions:
    """A blocking activation's completion, sent straight to the controller waiting for it over
    its internal endpoint: one Kafka hop fewer on the path its caller waits on (~2.5 ms of the
    ~12 ms a warm invoke took through Tansu). When that controller is unknown or the call
    fails, the completion goes through Kafka after all (the controller ignores a second)."""

    def __init__(self, url_for: UrlFor, client: InternalClient, bus: MessageBus) -> None:
        self._url_for, self._client, self._bus = url_for, client, bus
        self._sending: set[asyncio.Task[None]] = set()

    def send(self, completion: Completion) -> None:
        url = self._url_for(completion.controller_id)
        # Under load, Kafka is the cheaper way: what one turn publishes is one record, where
        # each direct completion is an HTTP request of its own (measured at 32 clients: ~300
        # invokes/s all direct, ~450 through Kafka). The direct way is for the caller waiting
        # alone, where it saves a broker hop.
        if url is None or len(self._sending) >= MAX_DIRECT_IN_FLIGHT:
            self._bus.publish(completed_topic(completion.controller_id), completion)
            return
        task = asyncio.ensure_future(self._send(url, completion))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, url: str, completion: Completion) -> None:
        body = {"message": codec.to_json(completion)}
        try:
            await self._client.call(url, COMPLETIONS_PATH, body, timeout_s=DIRECT_TIMEOUT_S)
        except SquallError as exc:  # DependencyUnavailable, InternalCallFailed
            log.debug("completion %s to %s through Kafka instead: %s",
                      completion.activation_id, completion.controller_id, exc)  # fmt: skip
            self._bus.publish(completed_topic(completion.controller_id), completion)

    async def close(self) -> None:
        """Let the completions on their way arrive (or fall back to Kafka)."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


def _activation(reply: Any, scheduler_id: str) -> ActivationMessage:
    try:
        message = codec.from_json(reply["message"])
    except (KeyError, TypeError, SquallError) as exc:  # MessageError is a SquallError
        log.error("scheduler %s sent an unreadable activation: %s", scheduler_id, exc)
        raise QueueGone(f"unreadable activation from scheduler {scheduler_id}") from exc
    if not isinstance(message, ActivationMessage):
        raise QueueGone(f"scheduler {scheduler_id} answered a fetch with a {type(message)}")
    return message
