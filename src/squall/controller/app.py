"""The OpenWhisk REST API v1 as a Starlette application."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from squall import __version__
from squall.abc import ActivationQuery
from squall.controller.auth import Authenticator, Identity, TooManyFailures
from squall.controller.errors import (
    INTERNAL_ERROR,
    MALFORMED_JSON,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    RETRY_AFTER,
    STORE_UNAVAILABLE,
    TIMEOUT_RANGE,
    TOO_MANY_AUTH_FAILURES,
    UNAUTHENTICATED,
    ApiError,
    not_authorized,
)
from squall.controller.feeds import AlarmFeeds, is_alarm_feed
from squall.controller.http import (
    CORS_HEADERS,
    empty_response,
    error_response,
    json_response,
    new_transaction_id,
    parse_json_object,
    query_bool,
    query_int,
    query_value,
    read_body,
)
from squall.controller.openapi import openapi_document
from squall.controller.service import ACTIONS, PACKAGES, RULES, TRIGGERS, ControllerService
from squall.controller.web import WebActions
from squall.entities.action import Action, InvalidEntity
from squall.entities.activation import brief, is_activation_id
from squall.entities.names import DEFAULT_NAMESPACE, EntityPath, IllegalName, check_name
from squall.entities.rule import parse_status_request
from squall.entities.trigger import Trigger
from squall.errors import DependencyUnavailable
from squall.logs import TRANSACTION

log = logging.getLogger("squall.controller")

Handler = Callable[[Request, Identity, str], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
WEB_PREFIX = "/api/v1/web/"
# Room for parameters and annotations (each up to the parameter limit) in a trigger/rule PUT.
_ENTITY_BODY_SLACK = 64 * 1024


class Api:
    """Route handlers bound to one controller service."""

    def __init__(
        self, service: ControllerService, auth: Authenticator, feeds: AlarmFeeds | None = None
    ) -> None:
        self.service, self.auth, self.feeds = service, auth, feeds
        self.limits = service.limits

    # -- plumbing --------------------------------------------------------------------------

    def endpoint(self, handler: Handler) -> Endpoint:
        """Authenticate, give the handler a transaction id, and shape every error."""

        async def run(request: Request) -> Response:
            tid = new_transaction_id()
            TRANSACTION.set(tid)  # every log line of this request carries it
            try:
                identity = await self.auth.identify(
                    request.headers.get("authorization"),
                    request.client.host if request.client else None,
                )
                if identity is None:
                    raise ApiError(
                        401,
                        UNAUTHENTICATED,
                        {"WWW-Authenticate": 'Basic realm="whisk rest service"'},
                    )
                return await handler(request, identity, tid)
            except ApiError as exc:
                return error_response(exc, tid)
            except TooManyFailures as exc:
                retry = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
                return error_response(ApiError(429, TOO_MANY_AUTH_FAILURES, retry), tid)
            except DependencyUnavailable as exc:
                # A store that is down is the operator's to fix and the client's to retry.
                log.warning("%s %s (tid %s): %s", request.method, request.url.path, tid, exc)
                return error_response(ApiError(503, STORE_UNAVAILABLE, dict(RETRY_AFTER)), tid)
            except Exception:
                log.exception(
                    "unexpected error in %s %s (tid %s)", request.method, request.url.path, tid
                )
                return error_response(ApiError(500, INTERNAL_ERROR), tid)

        return run

    def namespace(self, request: Request, identity: Identity) -> str:
        ns = request.path_params["ns"]
        if ns in (DEFAULT_NAMESPACE, identity.namespace):
            return identity.namespace
        raise ApiError(403, not_authorized(ns))

    def readable_namespace(self, request: Request, identity: Identity) -> str:
        """A namespace to read or invoke in: the caller's, or another one, whose published
        packages the entitlement checks (controller/packages.py) open to everyone."""
        ns = request.path_params["ns"]
        if ns in (DEFAULT_NAMESPACE, identity.namespace):
            return identity.namespace
        try:
            return check_name(ns, "namespace")
        except IllegalName as exc:
            raise ApiError(400, str(exc)) from exc

    def action_path(
        self, request: Request, identity: Identity, *, readable: bool = False
    ) -> EntityPath:
        if readable:
            ns = self.readable_namespace(request, identity)
        else:
            ns = self.namespace(request, identity)
        params = request.path_params
        try:
            package = check_name(params["pkg"], "package name") if "pkg" in params else None
            return EntityPath(ns, package, check_name(params["name"], "action name"))
        except IllegalName as exc:
            raise ApiError(400, str(exc)) from exc

    def simple_path(
        self, request: Request, identity: Identity, what: str, *, namespace: str | None = None
    ) -> EntityPath:
        """`/namespaces/{ns}/{triggers|rules|packages}/{name}`: entities never in a package."""
        ns = namespace or self.namespace(request, identity)
        try:
            return EntityPath(ns, None, check_name(request.path_params["name"], what))
        except IllegalName as exc:
            raise ApiError(400, str(exc)) from exc

    def list_window(self, request: Request) -> tuple[int, int]:
        """`skip` and `limit` of a listing."""
        limit = query_int(request, "limit", 30, 0, self.limits.query_limit) or 30
        return query_int(request, "skip", 0, 0, 2**31) or 0, limit

    async def entity_body(self, request: Request) -> dict[str, Any]:
        limit = 2 * self.limits.parameters_bytes + _ENTITY_BODY_SLACK
        return parse_json_object(await read_body(request, limit))

    # -- namespaces ------------------------------------------------------------------------

    async def namespaces(self, request: Request, identity: Identity, tid: str) -> Response:
        return json_response([identity.namespace], transaction_id=tid)

    async def namespace_limits(self, request: Request, identity: Identity, tid: str) -> Response:
        self.namespace(request, identity)
        limits = self.service.throttles.limits(identity.limits)
        return json_response(limits.to_json(), transaction_id=tid)

    # -- actions ---------------------------------------------------------------------------

    async def list_actions(self, request: Request, identity: Identity, tid: str) -> Response:
        ns = self.namespace(request, identity)
        skip, limit = self.list_window(request)  # checked with count too: a bad value is a 400
        if query_bool(request, "count"):
            total = await self.service.entities.count(ACTIONS, ns, prefix_match=True)
            return json_response({"actions": total}, transaction_id=tid)
        stored = await self.service.entities.list(
            ACTIONS, ns, skip=skip, limit=limit, prefix_match=True
        )
        views = [Action.from_json(s.doc).to_json(include_code=False) for s in stored]
        for view in views:
            view.pop("parameters", None)
        return json_response(views, transaction_id=tid)

    async def get_action(self, request: Request, identity: Identity, tid: str) -> Response:
        path = self.action_path(request, identity, readable=True)
        action = (await self.service.resolve_action(identity.namespace, path)).action
        include_code = query_bool(request, "code", True)
        return json_response(action.to_json(include_code=include_code), transaction_id=tid)

    async def put_action(self, request: Request, identity: Identity, tid: str) -> Response:
        path = self.action_path(request, identity)
        overwrite = query_bool(request, "overwrite")
        raw = await read_body(
            request, self.limits.code_bytes + 2 * self.limits.parameters_bytes, "action"
        )
        body = parse_json_object(raw, empty_ok=False)
        limits = self.service.throttles.limits(identity.limits)
        action = await self.service.put_action(path, body, overwrite, namespace_limits=limits)
        return json_response(action.to_json(), transaction_id=tid)

    async def delete_action(self, request: Request, identity: Identity, tid: str) -> Response:
        path = self.action_path(request, identity)
        action = await self.service.delete_action(path)
        return json_response(action.to_json(), transaction_id=tid)

    async def invoke_action(self, request: Request, identity: Identity, tid: str) -> Response:
        params = request.path_params
        if self.feeds is not None and is_alarm_feed(
            params["ns"], params.get("pkg"), params["name"]
        ):
            return await self.invoke_feed(request, identity, tid)
        path = self.action_path(request, identity, readable=True)
        blocking = query_bool(request, "blocking")
        result_only = query_bool(request, "result")
        max_wait = self.limits.max_blocking_wait_ms
        try:
            wait_ms = query_int(request, "timeout", max_wait, 1, max_wait) or max_wait
        except ApiError:
            raise ApiError(400, TIMEOUT_RANGE.format(max_ms=max_wait)) from None
        params = parse_json_object(await read_body(request, self.limits.payload_bytes))
        activation_id, record = await self.service.invoke(
            identity, path, params, blocking=blocking, wait_ms=wait_ms, transaction_id=tid
        )
        headers = {"x-openwhisk-activation-id": activation_id}
        if record is None:
            return json_response({"activationId": activation_id}, 202, tid, headers)
        status = {0: 200, 1: 502, 2: 502}.get(record["statusCode"], 500)
        body = record["response"]["result"] if result_only else record
        return json_response(body, status, tid, headers)

    async def invoke_feed(self, request: Request, identity: Identity, tid: str) -> Response:
        """`/whisk.system/alarms/{alarm,interval,once}`: built-in feed actions (see feeds.py)."""
        assert self.feeds is not None
        params = parse_json_object(await read_body(request, self.limits.payload_bytes))
        record = await self.feeds.invoke(identity, request.path_params["name"], params, tid)
        headers = {"x-openwhisk-activation-id": record["activationId"]}
        if not query_bool(request, "blocking"):
            return json_response({"activationId": record["activationId"]}, 202, tid, headers)
        status = 200 if record["statusCode"] == 0 else 502
        body = record["response"]["result"] if query_bool(request, "result") else record
        return json_response(body, status, tid, headers)

    async def list_package_actions(
        self, request: Request, identity: Identity, tid: str
    ) -> Response:
        """`GET /actions/{pkg}/`: the actions of a package (of a bound one, for a binding)."""
        ns = self.readable_namespace(request, identity)
        try:
            name = check_name(request.path_params["pkg"], "package name")
        except IllegalName as exc:
            raise ApiError(400, str(exc)) from exc
        view = await self.service.packages.view(identity.namespace, ns, name)
        return json_response(view["actions"] + view["feeds"], transaction_id=tid)

    # -- packages --------------------------------------------------------------------------

    async def list_packages(self, request: Request, identity: Identity, tid: str) -> Response:
        ns = self.readable_namespace(request, identity)
        skip, limit = self.list_window(request)
        if query_bool(request, "count"):
            if ns != identity.namespace:
                listed = await self.service.packages.list_packages(
                    identity.namespace, ns, skip=0, limit=2**31
                )
                return json_response({"packages": len(listed)}, transaction_id=tid)
            total = await self.service.entities.count(PACKAGES, ns)
            return json_response({"packages": total}, transaction_id=tid)
        views = await self.service.packages.list_packages(
            identity.namespace, ns, skip=skip, limit=limit
        )
        return json_response(views, transaction_id=tid)

    async def get_package(self, request: Request, identity: Identity, tid: str) -> Response:
        ns = self.readable_namespace(request, identity)
        name = self.simple_path(request, identity, "package name", namespace=ns).name
        view = await self.service.packages.view(identity.namespace, ns, name)
        return json_response(view, transaction_id=tid)

    async def put_package(self, request: Request, identity: Identity, tid: str) -> Response:
        path = self.simple_path(request, identity, "package name")
        overwrite = query_bool(request, "overwrite")
        body = await self.entity_body(request)
        package = await self.service.packages.put(path, body, overwrite)
        return json_response(package.to_json(), transaction_id=tid)

    async def delete_package(self, request: Request, identity: Identity, tid: str) -> Response:
        path = self.simple_path(request, identity, "package name")
        package = await self.service.delete_package(path, force=query_bool(request, "force"))
        return json_response(package.to_json(), transaction_id=tid)

    # -- triggers --------------------------------------------------------------------------

    async def list_triggers(self, request: Request, identity: Identity, tid: str) -> Response:
        ns = self.namespace(request, identity)
        skip, limit = self.list_window(request)
        if query_bool(request, "count"):
            total = await self.service.entities.count(TRIGGERS, ns)
            return json_response({"triggers": total}, transaction_id=tid)
        stored = await self.service.entities.list(TRIGGERS, ns, skip=skip, limit=limit)
        views = [Trigger.from_json(s.doc).brief() for s in stored]
        return json_response(views, transaction_id=tid)

    async def get_trigger(self, request: Request, identity: Identity, tid: str) -> Response:
        path = self.simple_path(request, identity, "trigger name")
        trigger = await self.service.get_trigger(path)
        return json_response(trigger.to_json(), transaction_id=tid)

    async def put_trigger(self, request: Request, identity: Identity, tid: str) -> Response:
        path = self.simple_path(request, identity, "trigger name")
        overwrite = query_bool(request, "overwrite")
        body = await self.entity_body(request)
        trigger = await self.service.put_trigger(path, body, overwrite)
        return json_response(trigger.to_json(), transaction_id=tid)

    async def delete_trigger(self, request: Request, identity: Identity, tid: str) -> Response:
        path = self.simple_path(request, identity, "trigger name")
        if self.feeds is not None:
            # wsk tells the feed first; a plain API delete must not leave a ticking alarm. Before
            # the trigger goes: when the alarm cannot be removed now (503), both stay, so the
            # client's retry removes both.
            await self.feeds.forget(path.namespace, path.name)
        trigger = await self.service.delete_trigger(path)
        return json_response(trigger.to_json(), transaction_id=tid)

    async def fire_trigger(self, request: Request, identity: Identity, tid: str) -> Response:
        path = self.simple_path(request, identity, "trigger name")
        payload = parse_json_object(await read_body(request, self.limits.payload_bytes))
        activation_id = await self.service.fire_trigger(identity, path, payload, transaction_id=tid)
        if activation_id is None:
            return empty_response(204, tid)
        headers = {"x-openwhisk-activation-id": activation_id}
        return json_response({"activationId": activation_id}, 202, tid, headers)

    # -- rules -----------------------------------------------------------------------------

    async def list_rules(self, request: Request, identity: Identity, tid: str) -> Response:
        ns = self.namespace(request, identity)
        skip, limit = self.list_window(request)
        if query_bool(request, "count"):
            total = await self.service.entities.count(RULES, ns)
            return json_response({"rules": total}, transaction_id=tid)
        rules = await self.service.list_rules(ns, skip=skip, limit=limit)
        return json_response([r.to_json() for r in rules], transaction_id=tid)

    async def get_rule(self, request: Request, identity: Identity, tid: str) -> Response:
        rule = await self.service.get_rule(self.simple_path(request, identity, "rule name"))
        return json_response(rule.to_json(), transaction_id=tid)

    async def put_rule(self, request: Request, identity: Identity, tid: str) -> Response:
        path = self.simple_path(request, identity, "rule name")
        overwrite = query_bool(request, "overwrite")
        body = await self.entity_body(request)
        rule = await self.service.put_rule(path, body, overwrite)
        return json_response(rule.to_json(), transaction_id=tid)

    async def delete_rule(self, request: Request, identity: Identity, tid: str) -> Response:
        rule = await self.service.delete_rule(self.simple_path(request, identity, "rule name"))
        return json_response(rule.to_json(), transaction_id=tid)

    async def rule_status(self, request: Request, identity: Identity, tid: str) -> Response:
        path = self.simple_path(request, identity, "rule name")
        body = parse_json_object(await read_body(request, self.limits.payload_bytes))
        try:
            status = parse_status_request(body)
        except InvalidEntity as exc:
            raise ApiError(400, MALFORMED_JSON.format(detail=str(exc))) from exc
        rule = await self.service.set_rule_status(path, status)
        return json_response(rule.to_json(), transaction_id=tid)

    # -- activations -----------------------------------------------------------------------

    async def list_activations(self, request: Request, identity: Identity, tid: str) -> Response:
        ns = self.namespace(request, identity)
        count, docs = query_bool(request, "count"), query_bool(request, "docs")
        if count and docs:
            raise ApiError(400, "The parameters 'count' and 'docs' cannot be combined.")
        query = ActivationQuery(
            namespace=ns,
            name=self._activation_name(request),
            skip=query_int(request, "skip", 0, 0, 2**31) or 0,
            limit=query_int(request, "limit", 30, 0, self.limits.query_limit) or 30,
            since=query_int(request, "since", None, 0, 2**62),
            upto=query_int(request, "upto", None, 0, 2**62),
        )
        if count:
            total = await self.service.activations.count(query)
            return json_response({"activations": total}, transaction_id=tid)
        records = await self.service.activations.list(query)
        return json_response(records if docs else [brief(r) for r in records], transaction_id=tid)

    def _activation_name(self, request: Request) -> str | None:
        name = query_value(request, "name")
        if not name:
            return None
        try:
            for part in name.strip("/").split("/"):
                check_name(part)
        except IllegalName as exc:
            raise ApiError(400, str(exc)) from exc
        return name.strip("/")

    async def _activation(self, request: Request, identity: Identity) -> dict[str, Any]:
        ns = self.namespace(request, identity)
        activation_id = request.path_params["aid"]
        if not is_activation_id(activation_id):
            raise ApiError(400, f"The activation id is not valid: {activation_id[:64]}")
        record = await self.service.activations.get(ns, activation_id)
        if record is None:
            raise ApiError(404, NOT_FOUND)
        return record

    async def get_activation(self, request: Request, identity: Identity, tid: str) -> Response:
        return json_response(await self._activation(request, identity), transaction_id=tid)

    async def activation_result(self, request: Request, identity: Identity, tid: str) -> Response:
        record = await self._activation(request, identity)
        return json_response(record["response"], transaction_id=tid)

    async def activation_logs(self, request: Request, identity: Identity, tid: str) -> Response:
        record = await self._activation(request, identity)
        return json_response({"logs": record.get("logs", [])}, transaction_id=tid)


def api_info(runtimes: dict[str, Any]) -> Callable[[Request], Awaitable[Response]]:
    """`GET /api/v1`; `runtimes` lists the kinds that can run here, as OpenWhisk's does."""
    info = {
        "description": "Squall: an OpenWhisk-compatible serverless platform",
        "api_version": "1.0.0",
        "api_version_path": "v1",
        "build": __version__,
        "buildno": __version__,
        "swagger_paths": {"ui": "/docs", "api-docs": "/api-docs"},
        "runtimes": runtimes,
    }

    async def answer(request: Request) -> Response:
        return json_response(info)

    return answer


async def api_docs(request: Request) -> Response:
    return json_response(openapi_document())


async def ping(request: Request) -> Response:
    return json_response({"status": "ok"})


def fallback(routes: list[BaseRoute]) -> Callable[[Request], Awaitable[Response]]:
    """CORS preflight for every path; otherwise 405 for a known path, 404 for anything else."""

    async def answer(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=200, headers=CORS_HEADERS)
        known = any(r.matches(request.scope)[0] != Match.NONE for r in routes)
        status = 405 if known else 404
        message = METHOD_NOT_ALLOWED if known else NOT_FOUND
        return error_response(ApiError(status, message), new_transaction_id())

    return answer


class ApiRouter:
    """Dispatches `/api/v1/namespaces/{ns}/...` by path shape, without scanning regexes.

    The invoke path is the hottest code in Squall; Starlette's router (a regex per route) and
    its middleware stack cost more per request than everything else the controller does.
    Anything this table does not match (other paths, wrong methods) falls through to the
    Starlette router, which answers 404 and 405 in OpenWhisk's shape.
    """

    def __init__(self, api: Api, fallback: ASGIApp, web: WebActions) -> None:
        ep = api.endpoint
        self._fallback, self._web = fallback, web
        action_handlers = {
            "GET": ep(api.get_action),
            "PUT": ep(api.put_action),
            "DELETE": ep(api.delete_action),
            "POST": ep(api.invoke_action),
        }
        self._table: dict[tuple[str, str, int], Endpoint] = {
            ("GET", "limits", 0): ep(api.namespace_limits),
            ("GET", "actions", 0): ep(api.list_actions),
            ("GET", "activations", 0): ep(api.list_activations),
            ("GET", "activations", 1): ep(api.get_activation),
        }
        for method, handler in action_handlers.items():
            self._table[(method, "actions", 1)] = handler
            self._table[(method, "actions", 2)] = handler
        named = {
            "triggers": (
                api.list_triggers,
                api.get_trigger,
                api.put_trigger,
                api.delete_trigger,
                api.fire_trigger,
            ),
            "rules": (api.list_rules, api.get_rule, api.put_rule, api.delete_rule, api.rule_status),
        }
        self._table[("GET", "packages", 0)] = ep(api.list_packages)
        for method, one in (
            ("GET", api.get_package),
            ("PUT", api.put_package),
            ("DELETE", api.delete_package),
        ):
            self._table[(method, "packages", 1)] = ep(one)
        self._package_actions = ep(api.list_package_actions)
        for collection, (listing, get, put, delete, post) in named.items():
            self._table[("GET", collection, 0)] = ep(listing)
            for method, one in (("GET", get), ("PUT", put), ("DELETE", delete), ("POST", post)):
                self._table[(method, collection, 1)] = ep(one)
        self._activation_parts = {
            "result": ep(api.activation_result),
            "logs": ep(api.activation_logs),
        }

    def _match(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
        parts = path.split("/")
        # ['', 'api', 'v1', 'namespaces', ns, collection, *rest]
        if len(parts) < 6 or parts[3] != "namespaces" or parts[1] != "api" or parts[2] != "v1":
            return None
        ns, collection, rest = parts[4], parts[5], parts[6:]
        # `actions/{pkg}/`: wsk's listing of one package's actions.
        if collection == "actions" and method == "GET" and rest[:1] != [""] and rest[1:] == [""]:
            return self._package_actions, {"ns": ns, "pkg": rest[0]}
        if not ns or any(not p for p in rest):
            return None
        if collection == "activations" and len(rest) == 2 and method == "GET":
            handler = self._activation_parts.get(rest[1])
            return (handler, {"ns": ns, "aid": rest[0]}) if handler else None
        handler = self._table.get((method, collection, len(rest)))
        if handler is None:
            return None
        params = {"ns": ns}
        if collection == "actions" and rest:
            params["name"] = rest[-1]
            if len(rest) == 2:
                params["pkg"] = rest[0]
        elif collection == "activations" and rest:
            params["aid"] = rest[0]
        elif rest:
            params["name"] = rest[0]
        return handler, params

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(WEB_PREFIX):
                scope["path_params"] = {"rest": path[len(WEB_PREFIX) :]}
                response = await self._web.handle(Request(scope, receive))
                await response(scope, receive, send)
                return
            found = self._match(scope["method"], path)
            if found is not None:
                handler, scope["path_params"] = found
                response = await handler(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self._fallback(scope, receive, send)


def build_app(
    service: ControllerService,
    auth: Authenticator,
    extra_routes: list[BaseRoute] | None = None,
    feeds: AlarmFeeds | None = None,
    runtimes: dict[str, Any] | None = None,
) -> ASGIApp:
    """The ASGI application serving `/api/v1`; `runtimes` is the manifest's `info()`."""
    api = Api(service, auth, feeds)
    ep = api.endpoint
    base = "/api/v1/namespaces/{ns}"
    routes: list[BaseRoute] = [
        Route("/ping", ping, methods=["GET"]),
        Route("/api/v1", api_info(runtimes or {}), methods=["GET"]),
        Route("/api/v1/api-docs", api_docs, methods=["GET"]),
        Route("/api/v1/namespaces", ep(api.namespaces), methods=["GET"]),
        Route(base + "/limits", ep(api.namespace_limits), methods=["GET"]),
        Route(base + "/actions", ep(api.list_actions), methods=["GET"]),
        *_action_routes(base + "/actions/{name}", api),
        *_action_routes(base + "/actions/{pkg}/{name}", api),
        Route(base + "/triggers", ep(api.list_triggers), methods=["GET"]),
        *_entity_routes(
            base + "/triggers/{name}",
            api,
            (api.get_trigger, api.put_trigger, api.delete_trigger, api.fire_trigger),
        ),
        Route(base + "/rules", ep(api.list_rules), methods=["GET"]),
        Route(base + "/packages", ep(api.list_packages), methods=["GET"]),
        Route(base + "/packages/{name}", ep(api.get_package), methods=["GET"]),
        Route(base + "/packages/{name}", ep(api.put_package), methods=["PUT"]),
        Route(base + "/packages/{name}", ep(api.delete_package), methods=["DELETE"]),
        *_entity_routes(
            base + "/rules/{name}",
            api,
            (api.get_rule, api.put_rule, api.delete_rule, api.rule_status),
        ),
        Route(base + "/activations", ep(api.list_activations), methods=["GET"]),
        Route(base + "/activations/{aid}", ep(api.get_activation), methods=["GET"]),
        Route(base + "/activations/{aid}/result", ep(api.activation_result), methods=["GET"]),
        Route(base + "/activations/{aid}/logs", ep(api.activation_logs), methods=["GET"]),
        *(extra_routes or []),
    ]
    every_method = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    web = WebActions(service, auth)
    routes.append(Route(WEB_PREFIX + "{rest:path}", web.handle, methods=every_method))
    routes.append(Route("/{path:path}", fallback(list(routes)), methods=every_method))
    return ApiRouter(api, Router(routes=routes), web)


def _action_routes(path: str, api: Api) -> list[Route]:
    handlers = (api.get_action, api.put_action, api.delete_action, api.invoke_action)
    return _entity_routes(path, api, handlers)


def _entity_routes(
    path: str, api: Api, handlers: tuple[Handler, Handler, Handler, Handler]
) -> list[Route]:
    """GET, PUT, DELETE and POST (invoke, fire, enable/disable) of one entity path."""
    methods = ("GET", "PUT", "DELETE", "POST")
    return [
        Route(path, api.endpoint(handler), methods=[method])
        for method, handler in zip(methods, handlers, strict=True)
    ]


__all__ = ["Api", "build_app"]
