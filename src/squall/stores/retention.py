"""Retention: activation records older than the configured age are purged, on every backend.

One loop per process calls the activation store's `purge_before` every `interval_s` (a tenth of
the retention, between one second and an hour). Purges are idempotent, so several processes
sharing a store may all run it; a failed purge is logged and retried at the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from squall.abc import ActivationStore
from squall.errors import SquallError

log = logging.getLogger("squall.stores")


class RetentionService:
    """Purges activation records that started more than `retention_s` ago."""

    def __init__(
        self, store: ActivationStore, retention_s: float | None, interval_s: float | None = None
    ) -> None:
        self._store = store
        self.retention_s = retention_s
        default = min(max((retention_s or 0) / 10, 1.0), 3600.0)
        self.interval_s = interval_s if interval_s is not None else default
        self._task: asyncio.Task[None] | None = None
        self.last_purged = 0

    async def start(self) -> None:
        if self.retention_s is not None:
            self._task = asyncio.create_task(self._loop(), name="squall-retention")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def purge_once(self) -> int:
        """Purge what is older than the retention now; how many records went."""
        assert self.retention_s is not None
        cutoff = int((time.time() - self.retention_s) * 1000)
        self.last_purged = await self._store.purge_before(cutoff)
        if self.last_purged:
            log.info("retention: purged %d activation records older than %g s",
                     self.last_purged, self.retention_s)  # fmt: skip
        return self.last_purged

    async def _loop(self) -> None:
        while True:
            try:
                await self.purge_once()
            except SquallError as exc:  # an unreachable store is retried at the next round
                log.warning("retention: purging activations failed: %s", exc)
            await asyncio.sleep(self.interval_s)
