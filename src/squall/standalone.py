"""`squall standalone`: the whole platform in one process, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import shutil
import signal
import sys
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from squall.cluster.placement import ALL_ROLES, Role
from squall.config import Settings
from squall.controller.http import json_response, new_transaction_id
from squall.ops.readiness import Readiness
from squall.platform import Platform, build_platform

log = logging.getLogger("squall")


async def _started(platform: Platform, serving: asyncio.Task[None]) -> bool:
    """Start the platform while the server runs; False when told to exit before it finished.
    A start that fails (a configuration error found late) stops the server and raises."""
    starting = asyncio.create_task(platform.start(), name="squall-start")
    await asyncio.wait({starting, serving}, return_when=asyncio.FIRST_COMPLETED)
    if starting.done():
        if starting.exception() is not None:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        starting.result()  # raises the start's error
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    return False


def server_config(platform: Platform, app: ASGIApp | None = None) -> uvicorn.Config:
    """uvicorn with uvloop and httptools: the fastest stack measured here (see docs)."""
    settings = platform.settings
    return uvicorn.Config(
        app or platform.app,
        host=settings.host,
        port=settings.port,
        loop="none",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through Squall's handler (text or JSON)
        timeout_keep_alive=65,
        # Squall listens on its own address; no proxy rewrites what it sees. Skipping the
        # proxy-headers middleware and the Server/Date headers saves work on every request.
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its own shutdown, which would kill the process before
    the platform flushes its batched activation records; Squall owns the signals instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        self.should_exit = True


class StartupGate:
    """Serves `/healthz`, `/readyz` and `/metrics` from the moment the port opens; everything
    else answers 503 until the platform has started. So liveness holds and readiness says why
    while, say, the entity store is still unreachable, instead of a closed port that makes
    Kubernetes restart the process."""

    OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app: ASGIApp, readiness: Readiness) -> None:
        self.app, self.readiness, self.started = app, readiness, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.started or scope["type"] != "http" or scope["path"] in self.OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        response = json_response(
            {"error": f"Squall is starting: {self._waiting_for()}", "code": new_transaction_id()},
            503, headers={"Retry-After": "5"},
        )  # fmt: skip
        await response(scope, receive, send)

    def _waiting_for(self) -> str:
        waiting = [f"{name}: {check.reason}" for name, check in self.readiness.checks().items()
                   if not check.ready]  # fmt: skip
        return "; ".join(waiting) or "components are starting"


async def serve(settings: Settings, roles: frozenset[Role] = ALL_ROLES) -> None:
    """Open the port at once (health and readiness), start every component, serve until
    SIGINT/SIGTERM, then stop cleanly."""
    platform = build_platform(settings, roles)
    gate = StartupGate(platform.app, platform.readiness)
    server = _Server(server_config(platform, gate))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.request_exit)
    serving = asyncio.create_task(server.serve(), name="squall-http")
    try:
        if await _started(platform, serving):
            gate.started = True
            announce(platform)
        await serving
    finally:
        await platform.close()
        root = getattr(platform.sandboxes, "work_root", None)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def announce(platform: Platform) -> None:
    """What an operator needs at start: printed, or logged as JSON lines with
    SQUALL_LOG_FORMAT=json (so a log collector sees one format)."""
    lines = announcement(platform)
    if platform.settings.log.format == "json":
        for line in lines:
            (log.warning if line.startswith("warning: ") else log.info)(line)
        return
    print("\n".join(lines), file=sys.stdout, flush=True)


def announcement(platform: Platform) -> list[str]:
    settings = platform.settings
    lines = [f"warning: {warning}" for warning in platform.warnings]
    if platform.roles != ALL_ROLES:
        return [*lines, *role_announcement(platform)]
    lines += [
        f"Squall standalone listening on http://{settings.host}:{settings.port}",
        f"data dir: {settings.data_dir}",
        # Redacted: these lines end up in logs, and a URL may carry a password.
        f"entity store: {settings.entity_store_url.redacted}",
        f"activation store: {settings.activation_store_url.redacted}",
    ]
    if settings.guest_auth is not None:
        # The operator chose this key; do not echo it back into logs.
        uid = settings.guest_auth.partition(":")[0]
        return [*lines, f"guest namespace auth: from SQUALL_GUEST_AUTH (uuid {uid})"]
    return [
        *lines,
        f"guest namespace auth: {platform.guest_auth}",
        f"  (kept in {settings.data_dir / 'guest.auth'}, readable only by you)",
        f"configure the CLI: squall property set --apihost http://{settings.host}:{settings.port} "
        f"--auth {platform.guest_auth}",
    ]


def role_announcement(platform: Platform) -> list[str]:
    settings = platform.settings
    members = ", ".join(f"{m.role} {m.id}" for m in platform.members)
    lines = [
        f"Squall {members} listening on http://{settings.host}:{settings.port}",
        f"kafka: {', '.join(settings.kafka.bootstrap)}; etcd: {', '.join(settings.etcd.endpoints)}",
        f"entity store: {settings.entity_store_url.redacted}",
        f"activation store: {settings.activation_store_url.redacted}",
    ]
    if settings.cluster.token is None:
        lines.append("warning: SQUALL_CLUSTER_TOKEN is not set: the internal endpoints between "
                     "members accept any caller that reaches this port")  # fmt: skip
    return lines


# Net container allocations between young-generation collections (CPython's default: 700).
# Every fire or invocation in flight holds objects for a few milliseconds; with hundreds in
# flight, collections every 700 allocations promoted them to older generations, whose
# collections then walked every long-lived object: ~10% of the CPU of 1,000 alarm fires a
# second and 100 ms pauses. At 20,000 nearly all of them are freed by reference counting
# before a collection runs; cyclic garbage still is collected, a little later.
GC_YOUNG_THRESHOLD = 20_000


def run(settings: Settings, roles: frozenset[Role] = ALL_ROLES) -> None:
    """Blocking entry point for the CLI."""
    import uvloop

    from squall import logs

    logs.configure(settings.log)
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    uvloop.run(serve(settings, roles))
