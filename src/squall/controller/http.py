"""HTTP plumbing for the API: JSON responses, transaction ids, bodies and query values."""

from __future__ import annotations

import itertools
import os
from typing import Any
from urllib.parse import unquote_plus

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from squall.controller.errors import MALFORMED_JSON, ApiError, too_large

TRANSACTION_HEADER = "X-Request-ID"
_PREFIX = os.urandom(4).hex()
_COUNTER = itertools.count(1)
# OpenWhisk answers CORS on every route so browser clients can call the API directly.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, DELETE, POST, PUT, HEAD",
    "Access-Control-Allow-Headers": (
        "Authorization, Origin, X-Requested-With, Content-Type, Accept, User-Agent"
    ),
}


def new_transaction_id() -> str:
    """Cheap unique ids: a per-process random prefix and a counter."""
    return f"{_PREFIX}{next(_COUNTER):012x}"


_STATIC_HEADERS: list[tuple[bytes, bytes]] = [
    *((k.lower().encode(), v.encode()) for k, v in CORS_HEADERS.items()),
    (b"content-type", b"application/json"),
]


class JSONResponse(Response):
    """A JSON answer with its headers encoded once per process, not once per request.

    Starlette's Response rebuilds and re-encodes every header on each request; on the invoke
    path that was a measurable share of the controller's CPU.
    """

    def __init__(self, body: bytes, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.body = body
        self.status_code = status
        self.background = None
        self.raw_headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": self.body})


def json_response(
    content: Any, status: int = 200, transaction_id: str = "", headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps(content)
    raw = [*_STATIC_HEADERS, (b"content-length", str(len(body)).encode())]
    if transaction_id:
        raw.append((b"x-request-id", transaction_id.encode()))
    if headers:
        raw.extend((k.lower().encode(), v.encode("latin-1")) for k, v in headers.items())
    return JSONResponse(body, status, raw)


def empty_response(status: int, transaction_id: str) -> Response:
    """An answer without a body (204), with the same CORS and transaction headers."""
    raw = [
        *((k.lower().encode(), v.encode()) for k, v in CORS_HEADERS.items()),
        (b"x-request-id", transaction_id.encode()),
    ]
    return JSONResponse(b"", status, raw)


def query_value(request: Request, name: str) -> str | None:
    """One query parameter, parsed without building Starlette's QueryParams (hot path)."""
    parsed = request.scope.get("squall.query")
    if parsed is None:
        parsed = request.scope["squall.query"] = _parse_query(request.scope["query_string"])
    return parsed.get(name)


def _parse_query(raw: bytes) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in raw.decode("latin-1").split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if "%" in pair or "+" in pair:
            key, value = unquote_plus(key), unquote_plus(value)
        values.setdefault(key, value)  # the first occurrence wins, as in Starlette
    return values


def error_response(error: ApiError, transaction_id: str) -> Response:
    body = {"error": error.message, "code": transaction_id}
    return json_response(body, error.status, transaction_id, error.headers)


async def read_body(request: Request, limit: int, what: str = "request") -> bytes:
    """The body, refusing (413) more than `limit` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, too_large(what, int(declared), limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, too_large(what, size, limit))
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_object(raw: bytes, *, empty_ok: bool = True) -> dict[str, Any]:
    """A JSON object body; empty counts as `{}` where allowed."""
    if not raw.strip():
        if empty_ok:
            return {}
        raise ApiError(400, MALFORMED_JSON.format(detail="the body is empty"))
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, MALFORMED_JSON.format(detail=str(exc))) from exc
    if not isinstance(value, dict):
        raise ApiError(400, MALFORMED_JSON.format(detail="the body must be a JSON object"))
    return value


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    raw = query_value(request, name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise ApiError(400, f"The parameter '{name}' must be true or false, not '{raw}'.")


def query_int(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = query_value(request, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"The parameter '{name}' must be an integer, not '{raw}'.") from None
    if not low <= value <= high:
        raise ApiError(
            400, f"The value '{value}' is not in the range of {low} to {high} for {name}."
        )
    return value
