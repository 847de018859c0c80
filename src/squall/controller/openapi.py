"""The OpenAPI 3 description of the REST API, served at `/api/v1/api-docs` as OpenWhisk serves
its Swagger there.

Written as data built by small functions rather than generated from handlers: the handlers
parse requests by hand for speed, so there is nothing to introspect. `tests/unit/test_openapi.py`
keeps it true: every route of the app is described and nothing else, and the fuzzing tests
(schemathesis) check real responses against these schemas.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from squall import __version__

JSON = dict[str, Any]
NS = "/api/v1/namespaces/{namespace}"
ERROR_STATUSES = {
    "400": "Malformed request, illegal name or out-of-range value",
    "401": "Missing or wrong credentials",
    "403": "Another namespace's entity",
    "404": "No such entity",
    "405": "Method not allowed",
    "409": "Exists already, or changed concurrently",
    "413": "Payload too large",
    "429": "Throttled (queue full, too many requests or too many failed logins)",
    "503": "A store is unreachable; retry (Retry-After)",
}


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(items: JSON) -> JSON:
    return {"type": "array", "items": items}


def _obj(required: list[str], **properties: JSON) -> JSON:
    return {"type": "object", "required": required, "properties": properties}


def _json(schema: JSON, description: str) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str) -> JSON:
    return {code: {"$ref": f"#/components/responses/{code}"} for code in codes}


def _param(name: str, where: str, schema: JSON, description: str, required: bool = False) -> JSON:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


def _path_name(what: str) -> JSON:
    return _param("name", "path", _ref("Name"), f"The {what}'s name")


# What `http.query_bool` accepts, in any letter case; empty means the default.
FLAG = {
    "type": "string",
    "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo]|1|0)?$",
}


def _query_flag(name: str, description: str) -> JSON:
    return _param(name, "query", FLAG, description)


PAGING = [
    _param("skip", "query", {"type": "integer", "minimum": 0}, "Entries to skip"),
    _param("limit", "query", {"type": "integer", "minimum": 0, "maximum": 200}, "At most"),
    _query_flag("count", "Answer only the number of entries"),
]
OVERWRITE = _query_flag("overwrite", "Replace an existing entity")
COMMON_ERRORS = ("400", "401", "403", "503")


def _operation(
    summary: str,
    responses: JSON,
    *,
    parameters: list[JSON] | None = None,
    body: JSON | None = None,
    errors: tuple[str, ...] = COMMON_ERRORS,
) -> JSON:
    operation: JSON = {
        "summary": summary,
        "parameters": parameters or [],
        "responses": {**responses, **_errors(*errors)},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def _listing(kind: str, schema: str) -> JSON:
    return {
        "get": _operation(
            f"List {kind}",
            {"200": _json({"oneOf": [_array(_ref(schema)), _ref("Count")]}, f"The {kind}")},
            parameters=PAGING,
        )
    }


def _entity(kind: str, schema: str, put: str, post: JSON | None, extra: list[JSON]) -> JSON:
    params = [_path_name(kind), *extra]
    found = ("400", "401", "403", "404", "503")
    return {
        "get": _operation(
            f"Get a {kind}", {"200": _json(_ref(schema), kind)}, parameters=params, errors=found
        ),
        "put": _operation(
            f"Create or update a {kind}",
            {"200": _json(_ref(schema), f"The stored {kind}")},
            parameters=[*params, OVERWRITE],
            body=_ref(put),
            errors=("400", "401", "403", "404", "409", "413", "503"),
        ),
        "delete": _operation(
            f"Delete a {kind}",
            {"200": _json(_ref(schema), f"The {kind}")},
            parameters=params,
            errors=found,
        ),
        **(
            {"post": {**post, "parameters": [*params, *post.get("parameters", [])]}} if post else {}
        ),
    }


def _package() -> JSON:
    item = _entity("package", "Package", "PackagePut", None, [])
    force = _query_flag("force", "Delete the package's actions too")
    item["delete"]["parameters"].append(force)
    item["delete"]["responses"].update(_errors("409"))
    return item


def _web() -> JSON:
    """Web actions answer what the action says: any status, any content type."""
    params = [
        _param("namespace", "path", {"type": "string", "minLength": 1}, "The owner namespace"),
        _param("package", "path", {"type": "string", "minLength": 1}, "Package, or default"),
        _param(
            "action",
            "path",
            {"type": "string", "minLength": 1},
            "The action with an extension: .http, .json, .html, .svg or .text",
        ),
    ]
    operation = {
        "summary": "Call a web action (annotation web-export)",
        "security": [{}, {"basic": []}],  # credentials only for require-whisk-auth: true
        "parameters": params,
        "responses": {"default": {"description": "The action's response, or an error"}},
    }
    methods = ("get", "post", "put", "delete", "patch", "options")
    return {method: {**operation, "parameters": list(params)} for method in methods}


def _invoke() -> JSON:
    return _operation(
        "Invoke an action",
        {
            "200": _json({}, "Blocking: the activation record, or its result with result=true"),
            "202": _json(_ref("ActivationId"), "Accepted (non-blocking, or blocking timed out)"),
            "502": _json({}, "Blocking: the action failed (record or result)"),
        },
        parameters=[
            _query_flag("blocking", "Wait for the result"),
            _query_flag("result", "With blocking: answer only the result"),
            _param("timeout", "query", {"type": "integer", "minimum": 0}, "Blocking wait, ms"),
        ],
        body={"type": "object"},
        errors=("400", "401", "403", "404", "413", "429", "503"),
    )


def _fire() -> JSON:
    return _operation(
        "Fire a trigger",
        {
            "202": _json(_ref("ActivationId"), "The trigger activation id"),
            "204": {"description": "No active rule: nothing fired"},
        },
        body={"type": "object"},
        errors=("400", "401", "403", "404", "413", "429", "503"),
    )


def _rule_status() -> JSON:
    body = _obj(["status"], status={"type": "string", "enum": ["active", "inactive"]})
    return _operation(
        "Enable or disable a rule",
        {"200": _json(_ref("Rule"), "The rule")},
        body=body,
        errors=("400", "401", "403", "404", "409", "503"),
    )


def _public(summary: str, responses: JSON) -> JSON:
    """A GET anyone may call (no credentials), like OpenWhisk's info and health routes."""
    return {"get": {"summary": summary, "security": [], "parameters": [], "responses": responses}}


def _activation_paths() -> JSON:
    aid = _param("activationid", "path", _ref("ActivationIdString"), "An activation id")
    found = ("400", "401", "403", "404", "503")
    filters = [
        _param("name", "query", {"type": "string"}, "Only this action (or pkg/action)"),
        _param("since", "query", {"type": "integer", "minimum": 0}, "Started at or after (ms)"),
        _param("upto", "query", {"type": "integer", "minimum": 0}, "Started at or before (ms)"),
        _query_flag("docs", "Full records instead of summaries"),
    ]
    return {
        f"{NS}/activations": {
            "get": _operation(
                "List activations, newest first",
                {"200": _json({"oneOf": [_array(_ref("ActivationBrief")), _ref("Count")]}, "")},
                parameters=[*PAGING, *filters],
            )
        },
        f"{NS}/activations/{{activationid}}": {
            "get": _operation(
                "Get an activation record",
                {"200": _json(_ref("Activation"), "The record")},
                parameters=[aid],
                errors=found,
            )
        },
        f"{NS}/activations/{{activationid}}/result": {
            "get": _operation(
                "Get an activation's response",
                {"200": _json(_ref("Response"), "The response")},
                parameters=[aid],
                errors=found,
            )
        },
        f"{NS}/activations/{{activationid}}/logs": {
            "get": _operation(
                "Get an activation's logs",
                {"200": _json(_obj(["logs"], logs=_array({"type": "string"})), "The logs")},
                parameters=[aid],
                errors=found,
            )
        },
    }


def _paths() -> JSON:
    package = _param("package", "path", _ref("Name"), "The package's name")
    invoke = _invoke()
    status = _obj(["status"], status={"type": "string"})
    prometheus = {"description": "Prometheus text format", "content": {"text/plain": {}}}
    return {
        "/ping": _public("Liveness of the API", {"200": _json(status, "ok")}),
        "/healthz": _public("Liveness (no dependency asked)", {"200": _json(status, "Alive")}),
        "/readyz": _public(
            "Readiness of every dependency, with reasons",
            {"200": _json(_ref("Readiness"), "Ready"), "503": _json(_ref("Readiness"), "Not")},
        ),
        "/metrics": _public("Prometheus metrics", {"200": prometheus}),
        "/api/v1": _public("API information", {"200": _json(_ref("Info"), "Info")}),
        "/api/v1/api-docs": _public("This document", {"200": _json({"type": "object"}, "")}),
        "/api/v1/namespaces": {
            "get": _operation(
                "The caller's namespaces",
                {"200": _json(_array({"type": "string"}), "Namespaces")},
                errors=("401", "503"),
            )
        },
        f"{NS}/limits": {
            "get": _operation("The namespace's limits", {"200": _json(_ref("Limits"), "")})
        },
        f"{NS}/actions": _listing("actions", "ActionBrief"),
        f"{NS}/actions/{{name}}": _entity("action", "Action", "ActionPut", invoke, []),
        f"{NS}/actions/{{package}}/{{name}}": _entity(
            "action", "Action", "ActionPut", invoke, [package]
        ),
        f"{NS}/triggers": _listing("triggers", "TriggerBrief"),
        f"{NS}/triggers/{{name}}": _entity("trigger", "Trigger", "TriggerPut", _fire(), []),
        f"{NS}/packages": _listing("packages", "Package"),
        f"{NS}/packages/{{name}}": _package(),
        "/api/v1/web/{namespace}/{package}/{action}": _web(),
        f"{NS}/rules": _listing("rules", "Rule"),
        f"{NS}/rules/{{name}}": _entity("rule", "Rule", "RulePut", _rule_status(), []),
        **_activation_paths(),
    }


def _namespace_parameter() -> JSON:
    return _param("namespace", "path", _ref("Name"), "The namespace, or _ for the caller's own")


def _schemas() -> JSON:
    key_values = _array(_obj(["key"], key={"type": "string"}, value={}))
    entity = {
        "namespace": {"type": "string"},
        "name": {"type": "string"},
        "version": {"type": "string"},
        "publish": {"type": "boolean"},
        "annotations": key_values,
        "updated": {"type": "integer"},
    }
    limits = _obj(
        [],
        timeout={"type": "integer"},
        memory={"type": "integer"},
        logs={"type": "integer"},
        concurrency={"type": "integer"},
    )
    exec_ = _obj(
        ["kind"],
        kind={"type": "string"},
        code={"type": "string"},
        main={"type": "string"},
        binary={"type": "boolean"},
    )
    response = _obj(
        ["status", "statusCode", "success"],
        status={"type": "string"},
        statusCode={"type": "integer"},
        success={"type": "boolean"},
        result={},
    )
    brief_activation = {
        **entity,
        "activationId": _ref("ActivationIdString"),
        "start": {"type": "integer"},
        "end": {"type": "integer"},
        "duration": {"type": "integer"},
        "statusCode": {"type": "integer"},
    }
    return {
        # OpenWhisk's entity name rule (entities/names.py).
        "Name": {
            "type": "string",
            "minLength": 1,
            "maxLength": 256,
            "pattern": r"^([\w]|[\w][\w@ .-]*[\w@.-]+)$",
        },
        "ActivationIdString": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "ActivationId": _obj(["activationId"], activationId=_ref("ActivationIdString")),
        "Count": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": {"type": "integer"},
        },
        "Error": _obj(["error", "code"], error={"type": "string"}, code={"type": "string"}),
        "KeyValues": key_values,
        "ActionLimits": limits,
        "Action": _obj(
            ["namespace", "name", "version", "exec", "limits"],
            **entity,
            exec=exec_,
            parameters=key_values,
            limits=limits,
        ),
        "ActionBrief": _obj(
            ["namespace", "name", "version"],
            **entity,
            exec=_obj(["kind"], kind={"type": "string"}),
            limits=limits,
        ),
        "ActionPut": _obj(
            [],
            exec=exec_,
            parameters=key_values,
            annotations=key_values,
            limits=limits,
            version={"type": "string"},
            publish={"type": "boolean"},
        ),
        "Trigger": _obj(
            ["namespace", "name", "version"],
            **entity,
            parameters=key_values,
            limits={"type": "object"},
            rules={"type": "object"},
        ),
        "TriggerBrief": _obj(["namespace", "name", "version"], **entity),
        "TriggerPut": _obj(
            [],
            parameters=key_values,
            annotations=key_values,
            publish={"type": "boolean"},
            version={"type": "string"},
        ),
        "Rule": _obj(
            ["namespace", "name", "trigger", "action", "status"],
            **entity,
            trigger=_obj(["path", "name"], path={"type": "string"}, name={"type": "string"}),
            action=_obj(["path", "name"], path={"type": "string"}, name={"type": "string"}),
            status={"type": "string", "enum": ["active", "inactive"]},
        ),
        "Package": _obj(
            ["namespace", "name", "version"],
            **entity,
            parameters=key_values,
            binding={"type": "object"},
        ),
        "PackagePut": _obj(
            [],
            parameters=key_values,
            annotations=key_values,
            publish={"type": "boolean"},
            binding=_obj([], namespace={"type": "string"}, name={"type": "string"}),
        ),
        "RulePut": _obj(
            [],
            trigger={"type": "string"},
            action={"type": "string"},
            annotations=key_values,
            status={"type": "string"},
        ),
        "Response": response,
        "Activation": _obj(
            ["namespace", "name", "activationId", "start", "response", "logs"],
            **brief_activation,
            subject={"type": "string"},
            response=response,
            logs=_array({"type": "string"}),
            cause={"type": "string"},
        ),
        "ActivationBrief": _obj(["namespace", "name", "activationId", "start"], **brief_activation),
        "Limits": {"type": "object", "additionalProperties": {}},
        "Info": _obj(
            ["api_version", "api_version_path"],
            description={"type": "string"},
            api_version={"type": "string"},
            api_version_path={"type": "string"},
            runtimes={"type": "object"},
        ),
        "Readiness": {"type": "object"},
    }


@cache
def openapi_document() -> JSON:
    """The document (built once; callers must not mutate it)."""
    paths = _paths()
    for path, item in paths.items():
        if path.startswith(NS):
            item["parameters"] = [_namespace_parameter()]
    responses = {
        code: _json(_ref("Error"), description) for code, description in ERROR_STATUSES.items()
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Squall (OpenWhisk REST API v1)",
            "version": __version__,
            "description": "Apache OpenWhisk's REST API as Squall serves it. Errors are "
            '`{"error": message, "code": transaction id}`.',
        },
        "servers": [{"url": "/"}],
        "security": [{"basic": []}],
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": _schemas(),
            "responses": responses,
        },
        "paths": paths,
    }
