"""A thin synchronous client for the OpenWhisk REST API v1.

One method per route the CLI needs; bodies and answers stay plain JSON (dicts and lists), in
OpenWhisk's shape, so what the server sends is what the caller sees. Every failure surfaces as
`WhiskError`; httpx exceptions never leak, so callers need a single `except`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from squall.cli.properties import normalize_apihost

if TYPE_CHECKING:
    import httpx

DEFAULT_NAMESPACE = "_"
ACTIVATION_ID_HEADER = "x-openwhisk-activation-id"

JSON = dict[str, Any]
Log = Callable[[str], None]
Query = dict[str, str | int]


class WhiskError(Exception):
    """The API refused a request, or could not be asked.

    `status` is the HTTP status, or 0 when no response came (bad name, network failure).
    `code` is OpenWhisk's transaction id from the error body, when there is one.
    """

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.message} (code {self.code})" if self.code else self.message


class WhiskUnreachable(WhiskError):
    """Nothing answered at the API host (connection refused, DNS failure, ...)."""

    def __init__(self, apihost: str, reason: str) -> None:
        super().__init__(0, f"cannot reach the API at {apihost}: {reason}")
        self.apihost = apihost


@dataclass(frozen=True, slots=True)
class Invocation:
    """What an invoke answered.

    `body` is `{"activationId": ...}` when the activation was only accepted (non-blocking, or
    blocking but not finished in time), else the activation record, or just its result when
    `result=True` was asked. `failed` is set when the action ran but did not succeed (502/500).
    """

    status: int
    activation_id: str | None
    body: Any

    @property
    def finished(self) -> bool:
        return self.status != 202

    @property
    def failed(self) -> bool:
        return self.status >= 400


class WhiskClient:
    """Synchronous client for `{apihost}/api/v1`, authenticating with `uuid:key`.

    `transport` replaces the network (tests pass `httpx.MockTransport`); `log` receives one
    line per request with the method, URL and status, and never any credential.
    """

    def __init__(
        self,
        apihost: str,
        auth: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 65.0,
        namespace: str = DEFAULT_NAMESPACE,
        log: Log | None = None,
    ) -> None:
        user, sep, key = auth.partition(":")
        if not sep or not user or not key:
            raise ValueError("auth must look like UUID:KEY")
        self.apihost = normalize_apihost(apihost)
        self.namespace = namespace
        self._log = log
        import httpx  # here, not at the top: `squall standalone` starts without it (~0.15 s)

        # 65 s by default: a blocking invoke may legitimately take the server's 60 s maximum.
        self._http = httpx.Client(
            base_url=f"{self.apihost}/api/v1",
            auth=httpx.BasicAuth(user, key),
            transport=transport,
            timeout=timeout,
            headers={"Accept": "application/json"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WhiskClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------------------- actions

    def list_actions(self, *, limit: int | None = None, skip: int | None = None) -> list[JSON]:
        query = _query(limit=limit, skip=skip)
        return _json_list(self._call("GET", self._collection("actions"), params=query))

    def get_action(self, name: str, *, code: bool = True) -> JSON:
        # OpenWhisk only reads `code=false`; the default already includes the code.
        query = {} if code else {"code": "false"}
        return _json_dict(self._call("GET", self._entity("actions", name), params=query))

    def put_action(self, name: str, body: Mapping[str, Any], *, overwrite: bool = False) -> JSON:
        query = {"overwrite": "true"} if overwrite else {}
        url = self._entity("actions", name)
        return _json_dict(self._call("PUT", url, params=query, json=dict(body)))

    def delete_action(self, name: str) -> JSON:
        return _json_dict(self._call("DELETE", self._entity("actions", name)))

    def invoke_action(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        blocking: bool = False,
        result: bool = False,
        timeout_ms: int | None = None,
    ) -> Invocation:
        query = _query(blocking=_bool(blocking), result=_bool(result), timeout=timeout_ms)
        response = self._send(
            "POST", self._entity("actions", name), params=query, json=dict(params or {})
        )
        return _invocation(response)

    # ---------------------------------------------------------------------------- packages

    def list_packages(
        self, namespace: str | None = None, *, limit: int | None = None, skip: int | None = None
    ) -> list[JSON]:
        """The caller's packages, or another namespace's published ones."""
        query = _query(limit=limit, skip=skip)
        url = f"/namespaces/{_segment(namespace or self.namespace)}/packages"
        return _json_list(self._call("GET", url, params=query))

    def get_package(self, name: str) -> JSON:
        return _json_dict(self._call("GET", self._entity("packages", name)))

    def put_package(self, name: str, body: Mapping[str, Any], *, overwrite: bool = False) -> JSON:
        query = {"overwrite": "true"} if overwrite else {}
        url = self._entity("packages", name)
        return _json_dict(self._call("PUT", url, params=query, json=dict(body)))

    def delete_package(self, name: str, *, force: bool = False) -> JSON:
        query = {"force": "true"} if force else {}
        return _json_dict(self._call("DELETE", self._entity("packages", name), params=query))

    # ---------------------------------------------------------------------------- triggers

    def list_triggers(self, *, limit: int | None = None, skip: int | None = None) -> list[JSON]:
        query = _query(limit=limit, skip=skip)
        return _json_list(self._call("GET", self._collection("triggers"), params=query))

    def get_trigger(self, name: str) -> JSON:
        return _json_dict(self._call("GET", self._entity("triggers", name)))

    def put_trigger(self, name: str, body: Mapping[str, Any], *, overwrite: bool = False) -> JSON:
        query = {"overwrite": "true"} if overwrite else {}
        url = self._entity("triggers", name)
        return _json_dict(self._call("PUT", url, params=query, json=dict(body)))

    def delete_trigger(self, name: str) -> JSON:
        return _json_dict(self._call("DELETE", self._entity("triggers", name)))

    def fire_trigger(self, name: str, params: Mapping[str, Any] | None = None) -> str | None:
        """The trigger activation id, or None when no rule is active (the API answers 204)."""
        response = self._send("POST", self._entity("triggers", name), json=dict(params or {}))
        if response.is_error:
            raise error_from_response(response)
        if response.status_code == 204:
            return None
        body = _decode(response)
        activation_id = response.headers.get(ACTIVATION_ID_HEADER) or (
            body.get("activationId") if isinstance(body, dict) else None
        )
        if not activation_id:
            raise WhiskError(response.status_code, "the API answered a fire without an id")
        return str(activation_id)

    # ------------------------------------------------------------------------------- rules

    def list_rules(self, *, limit: int | None = None, skip: int | None = None) -> list[JSON]:
        query = _query(limit=limit, skip=skip)
        return _json_list(self._call("GET", self._collection("rules"), params=query))

    def get_rule(self, name: str) -> JSON:
        return _json_dict(self._call("GET", self._entity("rules", name)))

    def put_rule(self, name: str, trigger: str, action: str, *, overwrite: bool = False) -> JSON:
        """Create (or update) a rule; trigger and action are sent fully qualified, as wsk does."""
        body = {
            "trigger": qualified_name(trigger, self.namespace),
            "action": qualified_name(action, self.namespace),
        }
        query = {"overwrite": "true"} if overwrite else {}
        return _json_dict(self._call("PUT", self._entity("rules", name), params=query, json=body))

    def delete_rule(self, name: str) -> JSON:
        return _json_dict(self._call("DELETE", self._entity("rules", name)))

    def set_rule_status(self, name: str, status: str) -> JSON:
        """`active` or `inactive`. Squall answers the rule; OpenWhisk may answer no JSON at all."""
        response = self._send("POST", self._entity("rules", name), json={"status": status})
        if response.is_error:
            raise error_from_response(response)
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        return body if isinstance(body, dict) else {}

    # -------------------------------------------------------------------------- namespaces

    def list_namespaces(self) -> list[str]:
        body = self._call("GET", "/namespaces")
        if not isinstance(body, list) or not all(isinstance(n, str) for n in body):
            raise WhiskError(200, "the API answered namespaces that are not a list of names")
        return body

    def namespace_limits(self) -> JSON:
        """`GET /namespaces/_/limits`: the caller's namespace limits."""
        return _json_dict(self._call("GET", "/namespaces/_/limits"))

    # ------------------------------------------------------------------------- activations

    def list_activations(
        self,
        *,
        name: str | None = None,
        limit: int | None = None,
        skip: int | None = None,
        since: int | None = None,
        upto: int | None = None,
        docs: bool = False,
    ) -> list[JSON]:
        """Newest first; briefs unless `docs`, then full records (with logs)."""
        query = _query(name=name, limit=limit, skip=skip, since=since, upto=upto, docs=_bool(docs))
        return _json_list(self._call("GET", self._collection("activations"), params=query))

    def count_activations(
        self, *, name: str | None = None, since: int | None = None, upto: int | None = None
    ) -> int:
        """The `count=true` form of the list: how many activations match."""
        query = _query(name=name, since=since, upto=upto, count="true")
        body = _json_dict(self._call("GET", self._collection("activations"), params=query))
        count = body.get("activations")
        if not isinstance(count, int):
            raise WhiskError(200, "the API answered a count without an 'activations' number")
        return count

    def get_activation(self, activation_id: str) -> JSON:
        return _json_dict(self._call("GET", self._activation(activation_id)))

    def activation_result(self, activation_id: str) -> JSON:
        """The response object: `{status, statusCode, success, result}`."""
        return _json_dict(self._call("GET", self._activation(activation_id, "result")))

    def activation_logs(self, activation_id: str) -> list[str]:
        body = _json_dict(self._call("GET", self._activation(activation_id, "logs")))
        logs = body.get("logs", [])
        if not isinstance(logs, list):
            raise WhiskError(200, "the API answered logs that are not a list")
        return [str(line) for line in logs]

    # ---------------------------------------------------------------------------- plumbing

    def _collection(self, collection: str) -> str:
        return f"/namespaces/{_segment(self.namespace)}/{collection}"

    def _entity(self, collection: str, name: str) -> str:
        namespace, parts = split_name(name, self.namespace)
        path = "/".join(_segment(p) for p in parts)
        return f"/namespaces/{_segment(namespace)}/{collection}/{path}"

    def _activation(self, activation_id: str, tail: str | None = None) -> str:
        if not activation_id or "/" in activation_id:
            raise WhiskError(0, f"invalid activation id '{activation_id}'")
        url = f"{self._collection('activations')}/{_segment(activation_id)}"
        return f"{url}/{tail}" if tail else url

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        """Send, raise on any status >= 400, and return the decoded JSON body."""
        response = self._send(method, url, **kwargs)
        if response.is_error:
            raise error_from_response(response)
        return _decode(response)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        import httpx

        request = self._http.build_request(method, url, **kwargs)
        started = time.monotonic()
        try:
            response = self._http.send(request)
        except httpx.HTTPError as exc:
            self._trace(request, "failed")
            raise _transport_error(self.apihost, exc) from exc
        elapsed_ms = round((time.monotonic() - started) * 1000)
        self._trace(request, f"{response.status_code} ({elapsed_ms} ms)")
        return response

    def _trace(self, request: httpx.Request, outcome: str) -> None:
        if self._log is not None:
            # The URL never holds the key (it travels in the Authorization header), but strip
            # any userinfo someone put into APIHOST all the same.
            url = request.url.copy_with(userinfo=b"")
            self._log(f"{request.method} {url} -> {outcome}")


def split_name(name: str, default_namespace: str = DEFAULT_NAMESPACE) -> tuple[str, list[str]]:
    """Split `name`, `pkg/name`, `/ns/name` or `/ns/pkg/name` into namespace and path parts."""
    if name.startswith("/"):
        namespace, _, rest = name[1:].partition("/")
    else:
        namespace, rest = default_namespace, name
    parts = rest.split("/")
    if not namespace or not rest or len(parts) > 2 or not all(p.strip() for p in parts):
        raise WhiskError(0, f"invalid entity name '{name}'")
    return namespace, parts


def qualified_name(name: str, default_namespace: str = DEFAULT_NAMESPACE) -> str:
    """`hello` → `/_/hello`, as wsk prints it; already qualified names are kept."""
    namespace, parts = split_name(name, default_namespace)
    return "/" + "/".join([namespace, *parts])


def error_from_response(response: httpx.Response) -> WhiskError:
    """Build the error from OpenWhisk's `{"error": ..., "code": ...}`, else from the text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        code = body.get("code")
        return WhiskError(response.status_code, str(body["error"]), str(code) if code else None)
    text = response.text.strip()
    reason = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    # Proxies answer with whole HTML pages; one line of them is enough to recognise the cause.
    message = f"{reason}: {text.splitlines()[0][:200]}" if text else reason
    return WhiskError(response.status_code, message)


def _transport_error(apihost: str, exc: httpx.HTTPError) -> WhiskError:
    import httpx

    if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol):
        return WhiskUnreachable(apihost, str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.TimeoutException):
        return WhiskError(0, f"the API at {apihost} did not answer in time ({type(exc).__name__})")
    return WhiskError(0, f"request to the API at {apihost} failed: {exc or type(exc).__name__}")


def _invocation(response: httpx.Response) -> Invocation:
    header_id = response.headers.get(ACTIVATION_ID_HEADER)
    if response.is_error and not _is_activation_answer(response, header_id):
        raise error_from_response(response)
    body = _decode(response)
    body_id = body.get("activationId") if isinstance(body, dict) else None
    activation_id = header_id or (str(body_id) if body_id else None)
    return Invocation(response.status_code, activation_id, body)


def _is_activation_answer(response: httpx.Response, header_id: str | None) -> bool:
    """A failed action (502, or 500 for a whisk error) still answers with its record/result.

    The activation id header tells those apart from the API's own errors; without it, a body
    that is a record (has `activationId` and `response`) does too.
    """
    if response.status_code not in (500, 502):
        return False
    if header_id:
        return True
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "activationId" in body and "response" in body


def _decode(response: httpx.Response) -> Any:
    if not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        raise WhiskError(
            response.status_code, "the API answered with a body that is not JSON"
        ) from None


def _json_dict(value: Any) -> JSON:
    if not isinstance(value, dict):
        raise WhiskError(200, "the API answered with JSON that is not an object")
    return value


def _json_list(value: Any) -> list[JSON]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise WhiskError(200, "the API answered with JSON that is not a list of objects")
    return value


def _query(**values: str | int | None) -> Query:
    return {key: value for key, value in values.items() if value is not None}


def _bool(flag: bool) -> str | None:
    # OpenWhisk defaults both `blocking` and `result` to false, so only `true` needs sending.
    return "true" if flag else None


def _segment(part: str) -> str:
    # Entity names may contain spaces and `@`; quote everything but keep the path readable.
    return quote(part, safe="@")
