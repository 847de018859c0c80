"""The scheduler's internal endpoint for invokers' containers (OpenWhisk FPC's FetchActivation
over HTTP): the `QueueEndpoint` methods of `SchedulerService` for other processes.

    POST /internal/v1/queues/fetch            {queue, container_id, last_duration_ms, timeout_s}
         200 {"message": <activation>} | 204 nothing within timeout_s | 410 the queue is gone
    POST /internal/v1/queues/started          {queue, creation_id, container_id}      204 | 410
    POST /internal/v1/queues/stopped          {queue, container_id, last_received}    204
    POST /internal/v1/queues/creation-failed  {queue, creation_id, error, developer}  204

`queue` is `codec.queue_key_json`; the activation is `codec.to_json` (without its code: the
container runs the action of its creation). Every route wants the cluster token; a malformed
body is a 400 with an OpenWhisk-shaped error.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from squall.bus import codec
from squall.cluster.internal import INTERNAL_PREFIX, Handler, error_reply, guarded, json_reply
from squall.errors import QueueGone
from squall.messages import QueueKey
from squall.scheduler.service import SchedulerService

# A fetch holds a request open at most this long, whatever the invoker asks (its idle timeout,
# 600 s by default): it bounds what a stuck container keeps parked here. A longer ask is served
# for this long, and its 204 ends the container as an idle one, a little early.
MAX_FETCH_TIMEOUT_S = 600.0
NO_CONTENT = 204


def queue_routes(scheduler: SchedulerService, token: str | None) -> list[Route]:
    """The routes under INTERNAL_PREFIX that invokers' containers call."""
    handlers: dict[str, Handler] = {
        "fetch": _fetch(scheduler),
        "started": _started(scheduler),
        "stopped": _stopped(scheduler),
        "creation-failed": _creation_failed(scheduler),
    }
    return [
        Route(f"{INTERNAL_PREFIX}/queues/{name}", guarded(token, handler), methods=["POST"])
        for name, handler in handlers.items()
    ]


def _fetch(scheduler: SchedulerService) -> Handler:
    async def fetch(request: Request) -> Response:
        body = await _body(request)
        key, container_id = _queue(body), _text(body, "container_id")
        last = body.get("last_duration_ms")
        last_ms = None if last is None else _number(last, "last_duration_ms", 0, math.inf)
        timeout_s = min(_number(body.get("timeout_s"), "timeout_s", 0, math.inf),
                        MAX_FETCH_TIMEOUT_S)  # fmt: skip
        try:
            message = await scheduler.fetch_remote(
                key, container_id, last_ms, timeout_s, _disconnected(request)
            )
        except QueueGone as exc:
            return _gone(exc)
        if message is None:
            return Response(status_code=NO_CONTENT)
        return json_reply({"message": codec.to_json(message)})

    return fetch


async def _disconnected(request: Request) -> None:
    """Returns when the caller's connection closes (the body was read: nothing else comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _started(scheduler: SchedulerService) -> Handler:
    async def started(request: Request) -> Response:
        body = await _body(request)
        key = _queue(body)
        creation_id, container_id = _text(body, "creation_id"), _text(body, "container_id")
        try:
            scheduler.container_started(key, creation_id, container_id)
        except QueueGone as exc:
            return _gone(exc)
        return Response(status_code=NO_CONTENT)

    return started


def _stopped(scheduler: SchedulerService) -> Handler:
    async def stopped(request: Request) -> Response:
        body = await _body(request)
        last = body.get("last_received")
        if last is not None and not isinstance(last, str):
            raise ValueError("last_received must be an activation id or null")
        scheduler.container_stopped(_queue(body), _text(body, "container_id"), last)
        return Response(status_code=NO_CONTENT)

    return stopped


def _creation_failed(scheduler: SchedulerService) -> Handler:
    async def creation_failed(request: Request) -> Response:
        body = await _body(request)
        key, creation_id, error = _queue(body), _text(body, "creation_id"), _text(body, "error")
        developer = body.get("developer")
        if not isinstance(developer, bool):
            raise ValueError("developer must be true or false")
        scheduler.creation_failed(key, creation_id, error, developer)
        return Response(status_code=NO_CONTENT)

    return creation_failed


# -- reading bodies: ValueError/KeyError/TypeError become a 400 in `guarded` -------------------


async def _body(request: Request) -> dict[str, Any]:
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _queue(body: dict[str, Any]) -> QueueKey:
    doc = body["queue"]
    if not isinstance(doc, dict):
        raise ValueError("queue must be an object {ns, action, rev}")
    if not all(isinstance(doc.get(k), str) and doc[k] for k in ("ns", "action")):
        raise ValueError("queue.ns and queue.action must be non-empty strings")
    if not isinstance(doc.get("rev"), int) or isinstance(doc["rev"], bool):
        raise ValueError("queue.rev must be an integer")
    return codec.queue_key_from(doc)


def _text(body: dict[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _number(value: object, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def _gone(exc: QueueGone) -> Response:
    return error_reply(410, f"The queue is gone: {exc}")
