"""Stem cells: sandboxes started ahead of need so a cold start skips process creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from squall.abc import Sandbox, SandboxFactory, SandboxSpec

log = logging.getLogger("squall.invoker")

# Forking a replacement costs the zygote and the new child a few ms of CPU. Started at once it
# competes (on 2 cores) with the cold start that took the cell, so the invoker calls
# `replenish` when that cold start has finished; this delay is only the fallback.
REFILL_FALLBACK_S = 0.2


class PrewarmPool:
    """Keeps `count` uninitialised sandboxes of one spec, refilled in the background."""

    def __init__(self, factory: SandboxFactory, spec: SandboxSpec, count: int) -> None:
        self._factory, self.spec, self.count = factory, spec, count
        self._cells: list[Sandbox] = []
        self._refill: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False

    async def start(self) -> None:
        await self._fill()

    def take(self, spec: SandboxSpec) -> Sandbox | None:
        """A stem cell fitting `spec`, or None. Call `replenish` once the cold start is done."""
        if not self._cells or not _fits(self.spec, spec):
            return None
        cell = self._cells.pop()
        if self._refill is None or self._refill.done():
            self._refill = asyncio.create_task(self._fill_later(), name="prewarm-refill")
        return cell

    def replenish(self) -> None:
        """Refill now: the cold start that took a cell has its answer."""
        self._wake.set()

    async def _fill_later(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), REFILL_FALLBACK_S)
        self._wake.clear()
        await self._fill()

    async def _fill(self) -> None:
        while not self._closed and len(self._cells) < self.count:
            try:
                cell = await self._factory.create(self.spec)
            except Exception as exc:  # the pool is an optimisation: log and stop refilling
                log.warning("could not prewarm a %s sandbox: %s", self.spec.kind, exc)
                return
            if self._closed:
                await cell.destroy()
                return
            self._cells.append(cell)

    def memory_mb(self) -> int:
        return len(self._cells) * self.spec.memory_mb

    def cells(self) -> int:
        return len(self._cells)

    async def close(self) -> None:
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill
        cells, self._cells = self._cells, []
        for cell in cells:
            await cell.destroy()


class PrewarmPools:
    """One PrewarmPool per stem-cell entry of the runtimes manifest, seen as one pool."""

    def __init__(self, pools: list[PrewarmPool]) -> None:
        self.pools = pools

    @property
    def count(self) -> int:
        """Stem cells the pools keep, in all."""
        return sum(pool.count for pool in self.pools)

    async def start(self) -> None:
        for pool in self.pools:
            await pool.start()

    def take(self, spec: SandboxSpec) -> Sandbox | None:
        for pool in self.pools:
            cell = pool.take(spec)
            if cell is not None:
                return cell
        return None

    def replenish(self) -> None:
        for pool in self.pools:
            pool.replenish()

    def memory_mb(self) -> int:
        return sum(pool.memory_mb() for pool in self.pools)

    def cells(self, runtime: str | None = None) -> int:
        """Stem cells ready now, of one runtime (`python`, `nodejs`) or of all."""
        return sum(
            pool.cells()
            for pool in self.pools
            if runtime is None or runtime_of(pool.spec.kind) == runtime
        )

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()


def runtime_of(kind: str) -> str:
    """`python:3.11` and `python:default` share one runtime: `python`."""
    return kind.split(":", 1)[0]


def _fits(cell: SandboxSpec, wanted: SandboxSpec) -> bool:
    if runtime_of(cell.kind) != runtime_of(wanted.kind):
        return False
    if runtime_of(cell.kind) == "python":
        # A Python cell narrows its memory and log limits at init: a bigger one serves any action.
        return cell.memory_mb >= wanted.memory_mb
    # A Node.js heap limit is fixed when the process starts.
    return cell.memory_mb == wanted.memory_mb
