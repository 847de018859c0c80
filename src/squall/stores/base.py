"""Plumbing shared by every activation store (SQLite, PostgreSQL, Elasticsearch).

`BatchedActivationStore` owns what every such backend needs and none should write twice: the
pending records (visible to `get` at once), the background flush with backoff, the bounded
buffer that holds records while the backend is unreachable, and the rule that reads first write
what is pending. A backend supplies the I/O hooks only.

A backend that cannot be reached is not a crash: `start` succeeds, records stay buffered and the
flush loop reconnects with backoff. When the buffer is full, `store` refuses loudly
(StoreError) instead of dropping anything silently.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from squall.abc import ActivationQuery, ActivationStore, DurationStats, JSONDict
from squall.errors import DependencyUnavailable, StoreError

log = logging.getLogger("squall.stores")
T = TypeVar("T")

MAX_BACKOFF_S = 5.0
DEFAULT_MAX_PENDING = 100_000
CLOSE_RETRY_S = 5.0  # how long close keeps retrying an unreachable backend before giving up


class BatchedActivationStore(ActivationStore):
    """Batching, buffering and retrying around a backend's `_write` and queries."""

    write_concurrency = 1  # batches a flush writes at once; a backend may raise it

    def __init__(
        self,
        *,
        flush_interval_s: float = 0.05,
        batch_size: int = 500,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if flush_interval_s <= 0 or batch_size < 1 or max_pending < batch_size:
            raise ValueError(
                "flush_interval_s must be > 0, batch_size >= 1 and max_pending >= batch_size"
            )
        self._interval = flush_interval_s
        self._batch_size = batch_size
        self._max_pending = max_pending
        self._pending: dict[str, JSONDict] = {}
        self._batch_full = asyncio.Event()
        self._stopping = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._stored = 0  # records accepted so far (a sequence, for group commit)
        self._written = 0  # every record accepted before this count is written
        self._next_flush: asyncio.Future[None] | None = None
        self._connect_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._connected = False
        self._closed = False
        self.unavailable_reason: str | None = None  # set while the backend cannot be reached

    # -- what a backend supplies ---------------------------------------------------------------

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """Names the backend and its setting in messages, without credentials."""

    @abc.abstractmethod
    async def _connect(self) -> None:
        """Connect and bring the schema up to date; DependencyUnavailable when unreachable."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    async def _write(self, batch: Sequence[JSONDict]) -> None:
        """Write (insert or replace by activation id) one batch."""

    @abc.abstractmethod
    async def _get(self, namespace: str, activation_id: str) -> JSONDict | None: ...

    @abc.abstractmethod
    async def _list(self, query: ActivationQuery) -> list[JSONDict]: ...

    @abc.abstractmethod
    async def _count(self, query: ActivationQuery) -> int: ...

    @abc.abstractmethod
    async def _duration_stats(
        self, namespace: str, path: str, since_ms: int
    ) -> DurationStats | None: ...

    @abc.abstractmethod
    async def _purge_before(self, before_ms: int) -> int: ...

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        """Records accepted but not yet written (a gauge worth exporting)."""
        return len(self._pending)

    async def start(self) -> None:
        try:
            await self._ensure_connected()
        except DependencyUnavailable as exc:
            # Not ready, not dead: records are buffered and the flush loop keeps reconnecting.
            log.warning("%s; activation records are buffered until it is back", exc)
        self._flusher = asyncio.create_task(self._flush_loop(), name="squall-activation-flush")

    async def wait_ready(self) -> None:
        """Connect now, raising DependencyUnavailable instead of buffering (offline tools)."""
        await self._ensure_connected()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._batch_full.set()
        try:
            if self._flusher is not None and not self._flusher.cancelled():
                await self._flusher
            await self._final_flush()
        finally:
            await self._disconnect()

    async def _final_flush(self) -> None:
        for attempt in range(3):
            if not self._pending:
                return
            try:
                await self.flush()
                return
            except DependencyUnavailable:
                if attempt < 2:
                    await asyncio.sleep(CLOSE_RETRY_S / 2)
        if self._pending:
            lost = sorted(self._pending)
            raise StoreError(
                f"{self.description}: {len(lost)} activation records could not be written before "
                f"shutdown (first ids: {', '.join(lost[:5])}): {self.unavailable_reason}"
            )

    # -- writes --------------------------------------------------------------------------------

    def store(self, record: JSONDict) -> None:
        if self._closed:
            raise StoreError(
                f"{self.description} is closed; activation {record.get('activationId')} "
                "was not stored"
            )
        key = record["activationId"]
        if len(self._pending) >= self._max_pending and key not in self._pending:
            raise StoreError(
                f"{self.description}: {len(self._pending)} activation records are waiting to be "
                f"written ({self.unavailable_reason or 'the backend is slow'}); activation {key} "
                "was refused rather than dropped"
            )
        self._pending[key] = record
        if self.journal is not None:
            self.journal.accepted_record(record)
        self._stored += 1
        if len(self._pending) >= self._batch_size:
            self._batch_full.set()

    async def flush(self) -> None:
        """Return once every record accepted before the call is written.

        Group commit: callers that arrive while a write is in flight share the next one, rather
        than each writing the few records that came in meanwhile (an alarm fire flushes its
        trigger record before its rules' actions are sent: a thousand a second).
        """
        target = self._stored
        while self._written < target:  # bounded: each round writes all that was accepted
            flushing = self._next_flush
            if flushing is None or flushing.done():
                flushing = self._next_flush = asyncio.ensure_future(self._flush_all())
            await asyncio.shield(flushing)

    async def _flush_all(self) -> None:
        async with self._flush_lock:
            accepted = self._stored
            snapshot = list(self._pending.values())
            if not snapshot:
                self._written = max(self._written, accepted)
                return
            await self._ensure_connected()
            batches = [snapshot[i : i + self._batch_size]
                       for i in range(0, len(snapshot), self._batch_size)]  # fmt: skip
            for first in range(0, len(batches), self.write_concurrency):
                group = batches[first : first + self.write_concurrency]
                await asyncio.gather(*(self._write_batch(batch) for batch in group))
            self._written = max(self._written, accepted)

    async def _write_batch(self, batch: Sequence[JSONDict]) -> None:
        await self._guard(self._write(batch))
        self._forget(batch)
        if self.journal is not None:
            self.journal.written(record["activationId"] for record in batch)

    def _forget(self, batch: Sequence[JSONDict]) -> None:
        for record in batch:
            key = record["activationId"]
            # A record stored again under the same id while this batch was written stays.
            if self._pending.get(key) is record:
                del self._pending[key]

    async def _flush_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            await wait_event(self._batch_full, self._interval)
            self._batch_full.clear()
            if not self._pending or self._stopping.is_set():
                continue
            try:
                await self.flush()
                failures = 0
            except Exception as exc:  # never let the writer die silently: log, back off, retry
                failures += 1
                self._log_failure(exc, failures)
                await wait_event(self._stopping, min(self._interval * 2**failures, MAX_BACKOFF_S))

    def _log_failure(self, exc: Exception, failures: int) -> None:
        # One line per outage at warning level, then quieter: a long outage must not flood logs.
        level = logging.WARNING if failures == 1 or failures % 20 == 0 else logging.DEBUG
        if isinstance(exc, DependencyUnavailable):
            log.log(level, "%s; %d activation records buffered, retrying", exc, len(self._pending))
        else:
            log.exception("writing %d activation records failed; retrying", len(self._pending))

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, namespace: str, activation_id: str) -> JSONDict | None:
        record = self._pending.get(activation_id)
        if record is not None:
            return dict(record) if record.get("namespace") == namespace else None
        await self._ensure_connected()
        return await self._guard(self._get(namespace, activation_id))

    async def list(self, query: ActivationQuery) -> list[JSONDict]:
        await self._prepare_read()
        return await self._guard(self._list(query))

    async def count(self, query: ActivationQuery) -> int:
        await self._prepare_read()
        return await self._guard(self._count(query))

    async def duration_stats(
        self, namespace: str, path: str, since_ms: int
    ) -> DurationStats | None:
        await self._prepare_read()
        return await self._guard(self._duration_stats(namespace, path, since_ms))

    async def purge_before(self, before_ms: int) -> int:
        await self._prepare_read()
        return await self._guard(self._purge_before(before_ms))

    async def _prepare_read(self) -> None:
        # Reads that query the backend first write what is pending, so they see it too.
        if self._pending:
            await self.flush()
        else:
            await self._ensure_connected()

    # -- connection state ----------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        if self._connected:
            return
        async with self._connect_lock:
            if self._connected:
                return
            await self._guard(self._connect())
            self._connected = True
            if self.unavailable_reason is not None:
                log.warning("%s is reachable again", self.description)
            self.unavailable_reason = None

    async def _guard(self, call: Awaitable[T]) -> T:
        """Await a backend call, remembering why the backend is unavailable when it is."""
        try:
            result = await call
        except DependencyUnavailable as exc:
            self.unavailable_reason = str(exc)
            raise
        if self.unavailable_reason is not None and self._connected:
            log.warning("%s is reachable again", self.description)
            self.unavailable_reason = None
        return result


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` pass."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
