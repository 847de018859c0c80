"""`/healthz`, `/readyz` and `/metrics`: unauthenticated, as Kubernetes and Prometheus call them.

None reveals a secret: readiness reasons are scrubbed of URL passwords, metrics carry counts.
They are served by the Starlette router, after the API's path-shape dispatch has declined them,
so the invoke path pays nothing for them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from squall.controller.http import json_response
from squall.ops.readiness import Readiness

_NO_STORE = {"cache-control": "no-store"}
# The classic text format every Prometheus understands; generate_latest writes exactly it (names
# are plain ASCII), whereas the library's "latest" type announces 1.0.0 to older servers too.
_TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


async def healthz(request: Request) -> Response:
    """Liveness: answering at all proves the event loop runs. Never asks another service."""
    return json_response({"status": "ok"}, headers=_NO_STORE)


def ops_routes(readiness: Readiness, registry: CollectorRegistry) -> list[BaseRoute]:
    async def readyz(request: Request) -> Response:
        ready, body = readiness.report()
        return json_response(body, 200 if ready else 503, headers=_NO_STORE)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), headers={"content-type": _TEXT_FORMAT})

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
