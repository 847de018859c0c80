"""The internal endpoints role processes call on each other (invokers fetching work from a
scheduler, controllers managing a scheduler's alarms), and the client they call them with.

Both sides check one shared bearer token (`SQUALL_CLUSTER_TOKEN`) when it is set. The token is
compared in constant time and never logged or echoed. Errors are OpenWhisk-shaped like the
public API's, so a failing call says what went wrong.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from squall.errors import DependencyUnavailable, SquallError

INTERNAL_PREFIX = "/internal/v1"
Handler = Callable[[Request], Awaitable[Response]]


class InternalCallFailed(SquallError):
    """Another member answered an internal call with an error (status and message kept)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_reply(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status, media_type="application/json")


def error_reply(status: int, message: str) -> Response:
    return json_reply({"error": message, "code": "internal"}, status)


def guarded(token: str | None, handler: Handler) -> Handler:
    """`handler` behind the cluster token: 401 without the right one, 400 for a body that is not
    JSON (handlers raise ValueError or KeyError on bad input), never a stack trace."""

    async def endpoint(request: Request) -> Response:
        if token is not None and not _token_matches(request, token):
            return error_reply(401, "The internal endpoint needs the cluster token "
                               "(SQUALL_CLUSTER_TOKEN) as a bearer token.")  # fmt: skip
        try:
            return await handler(request)
        except (ValueError, KeyError, TypeError) as exc:
            return error_reply(400, f"The request content was malformed: {exc!r}")

    return endpoint


def _token_matches(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


class InternalClient:
    """Calls to other members' internal endpoints over one pooled HTTP client."""

    def __init__(
        self, token: str | None, *, timeout_s: float = 5.0, max_connections: int | None = 100
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        # An invoker holds one long-poll fetch per parked container: it lifts the pool bound
        # (max_connections None), which its memory budget bounds instead.
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.AsyncClient(headers=headers, timeout=timeout_s, limits=limits)

    async def close(self) -> None:
        await self._http.aclose()

    async def call(
        self, base_url: str, path: str, body: Any = None, *, timeout_s: float | None = None
    ) -> Any:
        """POST `body` to `base_url + INTERNAL_PREFIX + path`; the JSON answer, None for 204.

        DependencyUnavailable when the member cannot be reached (it may have just died: the
        caller re-reads the membership), InternalCallFailed when it answered with an error.
        """
        url = f"{base_url.rstrip('/')}{INTERNAL_PREFIX}{path}"
        timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s
        try:
            reply = await self._http.post(url, json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(f"member at {base_url} unreachable: {exc!r}") from exc
        if reply.status_code == 204:
            return None
        if reply.status_code >= 400:
            raise InternalCallFailed(reply.status_code, _error_text(reply))
        return reply.json()


def _error_text(reply: httpx.Response) -> str:
    try:
        return str(reply.json()["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {reply.status_code}"
