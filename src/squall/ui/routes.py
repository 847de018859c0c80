"""`/ui`: the dashboard page, its assets, and the two JSON views the REST API has no room for.

The page is static: it signs in with an API key held in the browser's sessionStorage and reads
everything through `/api/v1` with HTTP Basic, exactly as the CLI does, so the namespace's
authorisation is the API's own. `/ui/api/alarms` and `/ui/api/system` authenticate the same
way; the alarms view shows only the caller's namespace, the system view carries no secret
(readiness reasons are already scrubbed of URL passwords).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from squall.controller.auth import Authenticator, Identity
from squall.controller.errors import (
    INTERNAL_ERROR,
    NOT_FOUND,
    RETRY_AFTER,
    STORE_UNAVAILABLE,
    UNAUTHENTICATED,
    ApiError,
)
from squall.controller.http import error_response, json_response, new_transaction_id
from squall.errors import DependencyUnavailable
from squall.ops.metrics import StandaloneSources
from squall.ui.history import History
from squall.ui.views import alarms_view, system_view

log = logging.getLogger("squall.ui")

STATIC_DIR = Path(__file__).parent / "static"
# No inline script or style, nothing from elsewhere: an injected string cannot run, and the page
# works offline. The API key never leaves sessionStorage except in Authorization headers.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
_NO_STORE = {"cache-control": "no-store"}
# Revalidated on each load (no-cache): an upgraded Squall never runs a stale script.
_ASSET_HEADERS = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}

View = Callable[[Identity], dict[str, object]]


def ui_routes(auth: Authenticator, sources: StandaloneSources) -> list[BaseRoute]:
    """The routes to add to the controller's router (one mount point: `/ui`)."""
    history = History()
    index = (STATIC_DIR / "index.html").read_bytes()

    async def page(request: Request) -> Response:
        return Response(index, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    def alarms(identity: Identity) -> dict[str, object]:
        return alarms_view(sources.alarms, identity.namespace)

    def system(identity: Identity) -> dict[str, object]:
        return system_view(sources, history)

    return [
        Route("/ui", page, methods=["GET"]),
        Route("/ui/", page, methods=["GET"]),
        Route("/ui/api/alarms", _authenticated(auth, alarms), methods=["GET"]),
        Route("/ui/api/system", _authenticated(auth, system), methods=["GET"]),
        Route("/ui/static/{name}", _assets(), methods=["GET"]),
    ]


def _assets() -> Callable[[Request], Awaitable[Response]]:
    """The few asset files, read once: a fixed table, so no path from a URL reaches the disk."""
    files = {
        path.name: (path.read_bytes(), _TYPES[path.suffix])
        for path in STATIC_DIR.iterdir()
        if path.suffix in _TYPES
    }

    async def asset(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if found is None:
            return error_response(ApiError(404, NOT_FOUND), new_transaction_id())
        body, media_type = found
        return Response(body, media_type=media_type, headers=_ASSET_HEADERS)

    return asset


def _authenticated(auth: Authenticator, view: View) -> Callable[[Request], Awaitable[Response]]:
    """The API's own authentication and error shape around a view of the caller's namespace."""

    async def answer(request: Request) -> Response:
        tid = new_transaction_id()
        try:
            identity = await auth.identify(request.headers.get("authorization"))
            if identity is None:
                # No WWW-Authenticate: the browser must not pop its own password dialog.
                raise ApiError(401, UNAUTHENTICATED)
            return json_response(view(identity), transaction_id=tid, headers=_NO_STORE)
        except ApiError as exc:
            return error_response(exc, tid)
        except DependencyUnavailable as exc:  # the entity store, asked for the key, is down
            log.warning("%s (tid %s): %s", request.url.path, tid, exc)
            return error_response(ApiError(503, STORE_UNAVAILABLE, dict(RETRY_AFTER)), tid)
        except Exception:
            log.exception("unexpected error in %s (tid %s)", request.url.path, tid)
            return error_response(ApiError(500, INTERNAL_ERROR), tid)

    return answer
