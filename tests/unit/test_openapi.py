"""The OpenAPI document stays true to the routes the app serves."""

from __future__ import annotations

import re

import httpx
import schemathesis
from starlette.routing import Route

from squall.controller.openapi import openapi_document
from squall.platform import Platform

# The app's path parameter names, as the document spells them (OpenWhisk's Swagger names).
RENAMED = {"ns": "namespace", "pkg": "package", "aid": "activationid"}
# Web actions are routed by one catch-all (the action's name carries an extension and may be
# followed by a path); the document describes their usual shape.
DOCUMENTED_AS = {"/api/v1/web/{rest:path}": "/api/v1/web/{namespace}/{package}/{action}"}


def served_operations(platform: Platform) -> set[tuple[str, str]]:
    router = platform.app._fallback  # type: ignore[attr-defined]  # the Starlette router
    found = set()
    for route in router.routes:
        if not isinstance(route, Route) or route.path == "/{path:path}":
            continue  # the fallback answers 404/405 and CORS preflight for every path
        if route.path == "/ui" or route.path.startswith("/ui/"):
            continue  # the dashboard's page, assets and views are its own surface (docs/ui.md)
        path = DOCUMENTED_AS.get(route.path) or re.sub(
            r"\{(\w+)\}", lambda m: "{" + RENAMED.get(m[1], m[1]) + "}", route.path
        )
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET
                found.add((method.lower(), path))
    return found


def documented_operations() -> set[tuple[str, str]]:
    paths = openapi_document()["paths"]
    return {
        (method, path) for path, item in paths.items() for method in item if method != "parameters"
    }


def test_every_route_is_documented_and_nothing_else(platform: Platform) -> None:
    served, documented = served_operations(platform), documented_operations()
    assert served - documented == set(), "routes missing from the OpenAPI document"
    assert documented - served == set(), "documented operations the app does not serve"


def test_the_document_is_valid_openapi() -> None:
    schema = schemathesis.openapi.from_dict(openapi_document())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(documented_operations())


async def test_the_document_is_served_without_credentials(platform: Platform) -> None:
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://squall") as client:
        answer = await client.get("/api/v1/api-docs")
        info = await client.get("/api/v1")
    assert answer.status_code == 200
    assert answer.json() == openapi_document()
    assert info.json()["swagger_paths"]["api-docs"] == "/api-docs"


def test_path_parameters_are_declared() -> None:
    for path, item in openapi_document()["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        for method, operation in item.items():
            if method == "parameters":
                continue
            declared = {
                p["name"]
                for p in [*item.get("parameters", []), *operation.get("parameters", [])]
                if p["in"] == "path"
            }
            assert declared == names, (method, path)
