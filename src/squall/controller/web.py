"""Web actions: `/api/v1/web/{ns}/{pkg|default}/{action}[.ext][/path]` without credentials.

OpenWhisk's WebActions.scala is the reference: the request becomes the action's parameters
(`__ow_method`, `__ow_headers`, `__ow_path`, `__ow_user`, and the query and body, merged or,
for `raw-http` actions, as `__ow_query` and `__ow_body`), the action runs as its owner, and
its result becomes the HTTP response according to the extension. Every error keeps
OpenWhisk's message and status.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from squall.controller.auth import Authenticator, Identity
from squall.controller.errors import (
    INTERNAL_ERROR,
    MALFORMED_JSON,
    NOT_FOUND,
    RESERVED_PARAMS,
    RETRY_AFTER,
    STORE_UNAVAILABLE,
    UNAUTHENTICATED,
    ApiError,
)
from squall.controller.http import error_response, new_transaction_id, read_body
from squall.controller.packages import ResolvedAction
from squall.controller.service import ControllerService
from squall.entities.activation import APPLICATION_ERROR, SUCCESS
from squall.entities.names import EntityPath, IllegalName, check_name
from squall.errors import DependencyUnavailable

log = logging.getLogger("squall.controller.web")

RESERVED = frozenset(f"__ow_{k}" for k in ("method", "headers", "path", "user", "query", "body"))
EXTENSIONS = (".http", ".json", ".html", ".svg", ".text")
DEFAULT_PACKAGE = "default"
PROPERTY_NOT_FOUND = "Response does not include requested property."
ERROR_PROCESSING = "There was an error processing your request."
UNKNOWN_CONTENT_TYPE = "Response did not specify a known content-type."
CONTENT_TYPE_MISMATCH = "Response type in header did not match generated content type."
NOT_READY = "Response not yet ready."
REQUIRE_AUTH_HEADER = "x-require-whisk-auth"
# Web actions answer CORS for every method, unless the action handles OPTIONS itself.
CORS_ORIGIN = ("access-control-allow-origin", "*")
CORS_METHODS = ("access-control-allow-methods", "OPTIONS, GET, DELETE, POST, PUT, HEAD, PATCH")
CORS_DEFAULT_HEADERS = "Authorization, Origin, X-Requested-With, Content-Type, Accept, User-Agent"
# Media types whose bodies travel as text; every other one is binary (base64 in __ow_body).
_TEXT_APPLICATION = frozenset(
    {"application/xml", "application/javascript", "application/x-www-form-urlencoded"}
)

Headers = list[tuple[str, str]]
_OWNER_CACHE_TTL_S = 60.0
_OWNER_CACHE_SIZE = 10_000


def invalid_media(media_type: str) -> str:
    return f"Response is not valid '{media_type}'."


def is_json_family(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def is_binary(media_type: str) -> bool:
    if media_type.startswith("text/") or media_type in _TEXT_APPLICATION:
        return False
    return not (media_type.endswith("+xml") or media_type.endswith("+json"))


@dataclass(slots=True, frozen=True)
class WebRequest:
    """The parts of a web action URL."""

    path: EntityPath
    extension: str
    unmatched: str  # `__ow_path`: what follows the action name and extension


def parse_web_path(rest: str) -> WebRequest:
    """`ns/pkg/action.ext/more`; a name without a known extension is `.http`."""
    segments = rest.split("/")
    if len(segments) < 3:
        raise ApiError(404, NOT_FOUND)
    namespace, package, last = segments[0], segments[1], segments[2]
    extension = next((e for e in EXTENSIONS if last.endswith(e)), ".http")
    name = last[: -len(extension)] if last.endswith(extension) else last
    unmatched = "/" + "/".join(segments[3:]) if len(segments) > 3 else ""
    try:
        check_name(namespace)
        check_name(name)
        pkg = None if package == DEFAULT_PACKAGE else check_name(package)
    except IllegalName as exc:
        raise ApiError(404, NOT_FOUND) from exc
    return WebRequest(EntityPath(namespace, pkg, name), extension, unmatched)


class WebActions:
    """The `/api/v1/web` endpoint."""

    def __init__(self, service: ControllerService, auth: Authenticator) -> None:
        self._service, self._auth = service, auth
        # Owners' identities, remembered briefly: looking one up is a store query, and web
        # requests carry no key to cache by (Authenticator caches the same way, 60 s).
        self._owners: dict[str, tuple[float, Identity | None]] = {}

    async def handle(self, request: Request) -> Response:
        tid = new_transaction_id()
        cors: Headers = []
        try:
            target = parse_web_path(request.path_params["rest"])
            owner, resolved = await self._find(target.path)
            if resolved.action.annotation("web-custom-options") is not True:
                cors = cors_headers(request)
                if request.method == "OPTIONS":
                    return _response(200, b"", None, cors, tid)
            return await self._run(request, target, owner, resolved, cors, tid)
        except ApiError as exc:
            exc.headers.update(dict(cors))
            return error_response(exc, tid)
        except DependencyUnavailable as exc:
            log.warning("web %s %s (tid %s): %s", request.method, request.url.path, tid, exc)
            return error_response(ApiError(503, STORE_UNAVAILABLE, dict(RETRY_AFTER)), tid)
        except Exception:
            log.exception(
                "unexpected error in web %s %s (tid %s)", request.method, request.url.path, tid
            )
            return error_response(ApiError(500, INTERNAL_ERROR), tid)

    async def _find(self, path: EntityPath) -> tuple[Identity, ResolvedAction]:
        """The owner and the exported action; anything else is 404, so nothing leaks."""
        owner = await self._owner(path.namespace)
        if owner is None:
            raise ApiError(404, NOT_FOUND)
        try:
            resolved = await self._service.resolve_action(owner.namespace, path)
        except ApiError as exc:
            if exc.status in (403, 404):
                raise ApiError(404, NOT_FOUND) from exc
            raise
        if resolved.action.annotation("web-export") is not True:
            raise ApiError(404, NOT_FOUND)
        return owner, resolved

    async def _owner(self, namespace: str) -> Identity | None:
        now = time.monotonic()
        cached = self._owners.get(namespace)
        if cached is not None and cached[0] > now:
            return cached[1]
        owner = await self._service.system_identity(namespace)
        if len(self._owners) > _OWNER_CACHE_SIZE:
            self._owners.clear()
        self._owners[namespace] = (now + _OWNER_CACHE_TTL_S, owner)
        return owner

    async def _run(
        self,
        request: Request,
        target: WebRequest,
        owner: Identity,
        resolved: ResolvedAction,
        cors: Headers,
        tid: str,
    ) -> Response:
        action = resolved.action
        caller = await self._auth.identify(request.headers.get("authorization"))
        if request.method != "OPTIONS" and not _authorized(
            action.annotation("require-whisk-auth"), request, caller
        ):
            raise ApiError(401, UNAUTHENTICATED)
        raw_http = action.annotation("raw-http") is True
        body = await read_body(request, self._service.limits.payload_bytes)
        params, supplied = _arguments(request, target, caller, body, raw_http)
        if not raw_http and not supplied.isdisjoint(RESERVED | resolved.immutable_parameters()):
            raise ApiError(400, RESERVED_PARAMS)
        wait_ms = self._service.limits.max_blocking_wait_ms
        activation_id, record = await self._service.invoke(
            owner, target.path, params, blocking=True, wait_ms=wait_ms, transaction_id=tid
        )
        headers = [*cors, ("x-openwhisk-activation-id", activation_id)]
        if record is None:
            raise ApiError(202, NOT_READY, dict(headers))
        return transcode(record, target.extension, headers, tid)


def cors_headers(request: Request) -> Headers:
    asked = request.headers.get("access-control-request-headers")
    allowed = ("access-control-allow-headers", asked or CORS_DEFAULT_HEADERS)
    return [CORS_ORIGIN, CORS_METHODS, allowed]


def _authorized(required: Any, request: Request, caller: Identity | None) -> bool:
    """OpenWhisk's `require-whisk-auth`: true needs credentials, a value needs that value in
    the X-Require-Whisk-Auth header."""
    if required is None or required is False:
        return True
    if required is True:
        return caller is not None
    if isinstance(required, str | int | float):
        expected = str(required)
        return request.headers.get(REQUIRE_AUTH_HEADER) == expected
    return False


# -- request to parameters --------------------------------------------------------------------


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _arguments(
    request: Request, target: WebRequest, caller: Identity | None, body: bytes, raw_http: bool
) -> tuple[dict[str, Any], set[str]]:
    """OpenWhisk's Context.toActionArgument: context, then query, then body (last wins).

    Also the names the request itself supplied (query and body fields), which may not
    override reserved or final parameters.
    """
    args: dict[str, Any] = {
        "__ow_method": request.method.lower(),
        "__ow_headers": {k.lower(): v for k, v in request.headers.items()},
        "__ow_path": target.unmatched,
    }
    if caller is not None:
        args["__ow_user"] = caller.namespace
    query = request.scope.get("query_string", b"").decode("latin-1")
    supplied: set[str] = set()
    if raw_http:
        args["__ow_query"] = query
    else:
        pairs = parse_qsl(query, keep_blank_values=True)
        supplied.update(k for k, _ in pairs)
        args.update(pairs)
    value = _body_value(_media_type(request), body, raw_http)
    if isinstance(value, dict) and not raw_http:
        supplied.update(value)
        args.update(value)
    elif value is not None:
        args["__ow_body"] = value
    elif raw_http:
        args["__ow_body"] = ""
    return args, supplied


def _body_value(media_type: str, body: bytes, raw_http: bool) -> Any:
    if not body:
        return None
    if is_json_family(media_type) and not raw_http:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, MALFORMED_JSON.format(detail=str(exc))) from exc
    if media_type == "application/x-www-form-urlencoded" and not raw_http:
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if not media_type or is_binary(media_type) or media_type == "application/json":
        return base64.b64encode(body).decode()
    return body.decode("utf-8", "replace")


# -- result to response -----------------------------------------------------------------------


def transcode(record: dict[str, Any], extension: str, headers: Headers, tid: str) -> Response:
    """The activation's result as the extension says; an application error's `error` field
    is answered the same way, any other failure with 400."""
    response = record["response"]
    status = response["statusCode"]
    result = response.get("result")
    if status == APPLICATION_ERROR:
        if not isinstance(result, dict) or "error" not in result:
            raise ApiError(404, PROPERTY_NOT_FOUND, dict(headers))
        result = result["error"]
    elif status != SUCCESS:
        raise ApiError(400, ERROR_PROCESSING, dict(headers))
    try:
        if extension == ".http":
            return _as_http(result, headers, tid)
        return _as_media(result, extension, headers, tid)
    except ApiError as exc:
        exc.headers.update(dict(headers))
        raise


def _as_media(result: Any, extension: str, headers: Headers, tid: str) -> Response:
    if extension == ".json":
        if not isinstance(result, dict | list):
            raise ApiError(400, invalid_media("application/json"))
        return _response(200, orjson.dumps(result), "application/json", headers, tid)
    if extension == ".text":
        return _as_text(result, headers, tid)
    field, media = ("html", "text/html") if extension == ".html" else ("svg", "image/svg+xml")
    if isinstance(result, dict):
        result = result.get("body", result.get(field))
    if not isinstance(result, str):
        raise ApiError(400, invalid_media(media))
    content_type = "text/html; charset=UTF-8" if field == "html" else media
    return _response(200, result.encode(), content_type, headers, tid)


def _as_text(result: Any, headers: Headers, tid: str) -> Response:
    if isinstance(result, dict):
        if "body" not in result and "text" not in result:
            raise ApiError(404, PROPERTY_NOT_FOUND)
        result = result["body"] if "body" in result else result["text"]
    if isinstance(result, str):
        text = result
    elif isinstance(result, dict | list):
        text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    else:
        text = orjson.dumps(result).decode()  # true, 12, null: JSON's spelling
    return _response(200, text.encode(), "text/plain; charset=UTF-8", headers, tid)


def _as_http(result: Any, headers: Headers, tid: str) -> Response:
    """OpenWhisk's resultAsHttp: `headers`, `statusCode` and `body` of the result."""
    if not isinstance(result, dict):
        raise ApiError(400, invalid_media("message/http"))
    own = _result_headers(result.get("headers"))
    code = _status_code(result)
    body = result.get("body")
    content_type = next((v for k, v in own if k.lower() == "content-type"), None)
    own = [(k, v) for k, v in own if k.lower() != "content-type"]
    every = [*headers, *own]
    if body is None or body == "":
        return _response(code or 204, b"", None, every, tid)
    if isinstance(body, str):
        data, content_type = _string_body(body, content_type or "text/html")
        return _response(code or 200, data, content_type, every, tid)
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if not is_json_family(media):
        raise ApiError(400, CONTENT_TYPE_MISMATCH)
    return _response(code or 200, orjson.dumps(body), content_type or media, every, tid)


def _string_body(body: str, content_type: str) -> tuple[bytes, str]:
    media = content_type.split(";", 1)[0].strip().lower()
    if "/" not in media or media.startswith("/") or media.endswith("/"):
        raise ApiError(400, UNKNOWN_CONTENT_TYPE)
    if not is_binary(media) or is_json_family(media):
        if "charset" not in content_type.lower():
            content_type += "; charset=UTF-8"
        return body.encode(), content_type
    try:
        return base64.b64decode(body, validate=True), content_type
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, CONTENT_TYPE_MISMATCH) from exc


def _result_headers(value: Any) -> Headers:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ApiError(400, invalid_media("message/http"))
    out: Headers = []
    for key, item in value.items():
        out.extend((key, v) for v in _header_values(item))
    return out


def _header_values(value: Any) -> list[str]:
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, str):
        return [value]
    if isinstance(value, int | float):
        return [str(value)]
    if isinstance(value, list):
        return [v for item in value for v in _header_values(item)]
    raise ApiError(400, invalid_media("message/http"))


def _status_code(result: dict[str, Any]) -> int | None:
    raw = result.get("statusCode")
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ApiError(400, invalid_media("message/http"))
    try:
        code = int(raw) if not isinstance(raw, float) or raw.is_integer() else -1
    except ValueError:
        code = -1
    # 1xx are not final responses: a client would wait for the real one forever.
    if not 200 <= code <= 599:
        raise ApiError(400, invalid_media("message/http"))
    return code


def _response(
    status: int, body: bytes, content_type: str | None, headers: Headers, tid: str
) -> Response:
    response = Response(body, status_code=status)
    raw = [(b"content-length", str(len(body)).encode())]
    if content_type is not None and body:
        raw.append((b"content-type", content_type.encode("latin-1")))
    raw.append((b"x-request-id", tid.encode()))
    raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers)
    response.raw_headers = raw
    return response
