"""A scheduler's internal endpoint for the alarms of the shards it owns (cluster mode).

Controllers run the feed actions; the alarms live in the schedulers. A controller sends each
feed lifecycle operation to the scheduler that owns the alarm's shard (`RemoteAlarms`), which
answers here. Every call is a POST of a JSON object to `{INTERNAL_PREFIX}/alarms/{operation}`
with `namespace` and `trigger` (`list`: `namespace` only; `create`: `kind` and `params`;
`update`: `params`), behind the cluster token. Answers:

* 200 with the alarm's view (`AlarmService.read_view`); `delete`: {"deleted": bool};
  `list`: {"alarms": [view, ...]} of the alarms this scheduler holds;
* 400 for invalid alarm parameters, with the message the standalone API gives;
* 404 when the trigger has no alarm; 412 on `create` when it has one already (the request's
  precondition, "no alarm yet", failed: distinct from 409, which means "ask someone else");
* 409 when this scheduler does not own the alarm's shard (now): the caller re-resolves the
  owner and retries; 503 when the alarm service or its store is not available.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from squall.abc import JSONDict
from squall.alarms.admin import LocalAlarms
from squall.alarms.schedule import AlarmValidationError
from squall.alarms.service import AlarmService, NotOwner
from squall.cluster.internal import INTERNAL_PREFIX, error_reply, guarded, json_reply
from squall.errors import ConflictError, DependencyUnavailable, NotFoundError, StoreError

__all__ = ["ALARMS_PATH", "alarm_routes"]

ALARMS_PATH = "/alarms"  # under INTERNAL_PREFIX
Operation = Callable[[LocalAlarms, str, str, JSONDict], Awaitable[Any]]


async def _create(admin: LocalAlarms, namespace: str, trigger: str, body: JSONDict) -> Any:
    return await admin.create(namespace, trigger, _text(body, "kind"), _object(body, "params"))


async def _read(admin: LocalAlarms, namespace: str, trigger: str, body: JSONDict) -> Any:
    view = await admin.read(namespace, trigger)
    if view is None:
        raise NotFoundError(f"trigger /{namespace}/{trigger} has no alarm")
    return view


async def _update(admin: LocalAlarms, namespace: str, trigger: str, body: JSONDict) -> Any:
    return await admin.update(namespace, trigger, _object(body, "params"))


async def _delete(admin: LocalAlarms, namespace: str, trigger: str, body: JSONDict) -> Any:
    return {"deleted": await admin.delete(namespace, trigger)}


async def _pause(admin: LocalAlarms, namespace: str, trigger: str, body: JSONDict) -> Any:
    return await admin.pause(namespace, trigger)


async def _resume(admin: LocalAlarms, namespace: str, trigger: str, body: JSONDict) -> Any:
    return await admin.resume(namespace, trigger)


OPERATIONS: dict[str, Operation] = {
    "create": _create,
    "read": _read,
    "update": _update,
    "delete": _delete,
    "pause": _pause,
    "resume": _resume,
}


def alarm_routes(alarms: AlarmService, token: str | None) -> list[Route]:
    """The internal alarm endpoints of a scheduler, behind the cluster token."""
    admin = LocalAlarms(alarms)
    routes = [
        Route(
            f"{INTERNAL_PREFIX}{ALARMS_PATH}/{name}",
            guarded(token, _endpoint(admin, operation)),
            methods=["POST"],
        )
        for name, operation in OPERATIONS.items()
    ]
    routes.append(
        Route(
            f"{INTERNAL_PREFIX}{ALARMS_PATH}/list",
            guarded(token, _list_endpoint(admin)),
            methods=["POST"],
        )
    )
    return routes


def _endpoint(admin: LocalAlarms, operation: Operation) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        body = await _body(request)
        namespace, trigger = _text(body, "namespace"), _text(body, "trigger")
        try:
            if not admin.service.owns(namespace, trigger):
                raise NotOwner(namespace, trigger)
            return json_reply(await operation(admin, namespace, trigger, body))
        except Exception as exc:  # the known ones become statuses; the rest propagate
            return _error(exc)

    return endpoint


def _list_endpoint(admin: LocalAlarms) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        namespace = _text(await _body(request), "namespace")
        try:
            return json_reply({"alarms": await admin.list(namespace)})
        except Exception as exc:
            return _error(exc)

    return endpoint


def _error(exc: Exception) -> Response:
    if isinstance(exc, NotOwner):
        return error_reply(409, str(exc))
    if isinstance(exc, NotFoundError):
        return error_reply(404, str(exc))
    if isinstance(exc, ConflictError):
        return error_reply(412, str(exc))
    if isinstance(exc, AlarmValidationError):
        return error_reply(400, str(exc))
    if isinstance(exc, DependencyUnavailable | StoreError):
        return error_reply(503, f"the alarms' store is not available: {exc}")
    if isinstance(exc, RuntimeError):  # not started yet, or closing
        return error_reply(503, f"the alarm service is not available: {exc}")
    raise exc


async def _body(request: Request) -> JSONDict:
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _text(body: JSONDict, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} must be a non-empty string")
    return value


def _object(body: JSONDict, key: str) -> JSONDict:
    value = body.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{key!r} must be a JSON object")
    return value
