"""HTTP plumbing for the API: JSON responses, transaction ids, bodies and query values."""

from __future__ import annotations

import itertools
import os
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

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


def json_response(
    content: Any, status: int = 200, transaction_id: str = "", headers: dict[str, str] | None = None
) -> Response:
    all_headers = dict(CORS_HEADERS)
    if transaction_id:
        all_headers[TRANSACTION_HEADER] = transaction_id
    if headers:
        all_headers.update(headers)
    return Response(orjson.dumps(content), status, all_headers, media_type="application/json")


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
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise ApiError(400, f"The parameter '{name}' must be true or false, not '{raw}'.")


def query_int(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
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
