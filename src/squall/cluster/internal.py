"""The internal endpoints role processes call on each other (invokers fetching work from a
scheduler, controllers managing a scheduler's alarms), and the client they call them with.

Both sides check one shared bearer token (`SQUALL_CLUSTER_TOKEN`) when it is set. The token is
compared in constant time and never logged or echoed. Errors are OpenWhisk-shaped like the
public API's, so a failing call says what went wrong.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from squall.errors import DependencyUnavailable, SquallError

if TYPE_CHECKING:
    import aiohttp

INTERNAL_PREFIX = "/internal/v1"
Handler = Callable[[Request], Awaitable[Response]]


class InternalCallFailed(SquallError):
    """Another member answered an internal call with an error (status and message kept)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_reply(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


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
    """Calls to other members' internal endpoints over one pooled HTTP client (aiohttp).

    aiohttp rather than httpx, which the rest of Squall uses: this client carries every
    activation an invoker fetches, and measured on this machine a small JSON POST costs about
    0.4 ms of CPU with aiohttp against 2.6 ms with httpx (see docs/dependencies.md).
    """

    def __init__(
        self, token: str | None, *, timeout_s: float = 5.0, max_connections: int | None = 100
    ) -> None:
        self._headers = {"content-type": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        # An invoker holds one long-poll fetch per parked container: it lifts the pool bound
        # (max_connections None), which its memory budget bounds instead.
        self._limit = max_connections or 0  # aiohttp: 0 is no bound
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None  # made on the event loop

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        import aiohttp  # here, not at the top: one process (standalone) starts without it

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            )
        return self._session

    async def call(
        self, base_url: str, path: str, body: Any = None, *, timeout_s: float | None = None
    ) -> Any:
        """POST `body` to `base_url + INTERNAL_PREFIX + path`; the JSON answer, None for 204.

        DependencyUnavailable when the member cannot be reached (it may have just died: the
        caller re-reads the membership), InternalCallFailed when it answered with an error.
        """
        import aiohttp

        url = f"{base_url.rstrip('/')}{INTERNAL_PREFIX}{path}"
        timeout = None if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._http().post(url, data=orjson.dumps(body), timeout=timeout) as reply:
                status, content = reply.status, await reply.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DependencyUnavailable(f"member at {base_url} unreachable: {exc!r}") from exc
        if status == 204:
            return None
        if status >= 400:
            raise InternalCallFailed(status, _error_text(status, content))
        return orjson.loads(content)


def _error_text(status: int, content: bytes) -> str:
    try:
        return str(orjson.loads(content)["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}"
