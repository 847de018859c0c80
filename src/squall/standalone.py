"""`squall standalone`: the whole platform in one process, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
from collections.abc import Iterator

import uvicorn

from squall.config import Settings
from squall.platform import Platform, build_platform

log = logging.getLogger("squall")


def server_config(platform: Platform) -> uvicorn.Config:
    """uvicorn with uvloop and httptools: the fastest stack measured here (see docs)."""
    settings = platform.settings
    return uvicorn.Config(
        platform.app,
        host=settings.host,
        port=settings.port,
        loop="none",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
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


async def serve(settings: Settings) -> None:
    """Start every component, serve until SIGINT/SIGTERM, then stop cleanly."""
    platform = build_platform(settings)
    await platform.start()
    try:
        announce(platform)
        server = _Server(server_config(platform))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, server.request_exit)
        await server.serve()
    finally:
        await platform.close()
        root = getattr(platform.sandboxes, "work_root", None)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def announce(platform: Platform) -> None:
    settings = platform.settings
    out = sys.stdout
    for warning in platform.warnings:
        print(f"warning: {warning}", file=out)
    print(f"Squall standalone listening on http://{settings.host}:{settings.port}", file=out)
    print(f"data dir: {settings.data_dir}", file=out)
    # Redacted: these lines end up in logs, and a URL may carry a password.
    print(f"entity store: {settings.entity_store_url.redacted}", file=out)
    print(f"activation store: {settings.activation_store_url.redacted}", file=out)
    if settings.guest_auth is not None:
        # The operator chose this key; do not echo it back into logs.
        uid = settings.guest_auth.partition(":")[0]
        print(f"guest namespace auth: from SQUALL_GUEST_AUTH (uuid {uid})", file=out, flush=True)
        return
    print(f"guest namespace auth: {platform.guest_auth}", file=out)
    print(f"  (kept in {settings.data_dir / 'guest.auth'}, readable only by you)", file=out)
    print(
        f"configure the CLI: squall property set --apihost http://{settings.host}:{settings.port} "
        f"--auth {platform.guest_auth}",
        file=out,
        flush=True,
    )


def run(settings: Settings) -> None:
    """Blocking entry point for the CLI."""
    import uvloop

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvloop.run(serve(settings))
