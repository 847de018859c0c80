"""The crash journal: activations accepted but not yet written to the activation store.

A standalone process keeps two things only in memory for speed: messages on the in-process bus
(accepted, not yet run) and activation records waiting for the next batched write. A SIGKILL,
an OOM kill or a power cut would lose them without a trace, after the client was already given
their activation ids. The journal closes that gap cheaply: one appended line per accepted
activation (a `write(2)` into the page cache, a few microseconds, no fsync) and one line per
written batch. On the next start, every id accepted and never written gets a record saying it
was lost in a crash, so nothing a client was told about is silently missing.

It survives a killed process (the kernel keeps the page cache), not a power cut between the
append and the disk writeback: that would need an fsync per activation, which costs more than
the activation itself. See docs/stores.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from squall.abc import ActivationStore, JSONDict, MessageBus, MessageHandler, Subscription
from squall.entities.activation import WHISK_ERROR, ActivationResponse, build_record
from squall.errors import SquallError
from squall.messages import SCHEDULER_TOPIC, ActivationMessage

log = logging.getLogger("squall.stores.journal")

JOURNAL_FILE = "activations.journal"
LOST_IN_CRASH = (
    "The activation was accepted but Squall stopped abruptly before its record was written; "
    "it may or may not have run."
)
RECOVERY_RETRY_S = 2.0


class CrashJournal:
    """Append-only lines `{"a": entry}` (accepted) and `{"w": [ids]}` (written)."""

    def __init__(self, path: Path, *, compact_bytes: int = 4 << 20) -> None:
        self.path = path
        self._compact_bytes = compact_bytes
        self._open: dict[str, JSONDict] = {}  # id -> entry, accepted and not yet written
        self._fd = -1
        self._size = 0
        self.recovered: list[str] = []  # ids recorded as lost at the last start

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> list[JSONDict]:
        """Read what a previous process left open, then keep journaling; returns those entries
        (they stay open until `recover` settles them)."""
        self._open = _read_open(self.path)
        self._rewrite()
        return list(self._open.values())

    def close(self) -> None:
        if self._fd < 0:
            return
        os.close(self._fd)
        self._fd = -1
        if not self._open:  # a clean stop leaves nothing to recover
            self.path.unlink(missing_ok=True)

    @property
    def open_count(self) -> int:
        return len(self._open)

    # -- what the bus and the store report ----------------------------------------------------

    def accepted_message(self, message: ActivationMessage) -> None:
        if message.activation_id in self._open:
            return  # given back to the queue (an evicted container): journaled already
        action = message.action
        self._accept(
            {
                "id": message.activation_id,
                "namespace": message.invocation_namespace,
                "name": action.name,
                "version": action.version,
                "subject": message.subject,
                "start": message.received_ms,
                "path": action.qualified,
                "cause": message.cause,
            }
        )

    def accepted_record(self, record: JSONDict) -> None:
        activation_id = record["activationId"]
        if activation_id in self._open:
            return
        self._accept(
            {
                "id": activation_id,
                "namespace": record.get("namespace", ""),
                "name": record.get("name", ""),
                "version": record.get("version", "0.0.1"),
                "subject": record.get("subject", ""),
                "start": record.get("start", 0),
                "cause": record.get("cause"),
            }
        )

    def written(self, activation_ids: Iterable[str]) -> None:
        done = [key for key in activation_ids if self._open.pop(key, None) is not None]
        if not done or self._fd < 0:
            return
        if not self._open and self._size > 64 << 10:
            os.ftruncate(self._fd, 0)  # O_APPEND: the next line starts the empty file
            self._size = 0
        elif self._size > self._compact_bytes:
            self._rewrite()
        else:
            self._append({"w": done})

    # -- recovery -------------------------------------------------------------------------------

    async def recover(self, store: ActivationStore) -> None:
        """Give every activation a previous process accepted and never wrote a record saying
        so; retries while the store is unreachable (the caller runs this as a task)."""
        while True:
            try:
                await self._recover_once(store)
                return
            except SquallError as exc:
                log.warning("cannot settle the crash journal yet (%s); retrying", exc)
                await asyncio.sleep(RECOVERY_RETRY_S)

    async def _recover_once(self, store: ActivationStore) -> None:
        lost: list[str] = []
        now = int(time.time() * 1000)
        for entry in list(self._open.values()):
            if await store.get(entry["namespace"], entry["id"]) is not None:
                self.written([entry["id"]])  # written just before the crash, not yet marked
                continue
            store.store(_lost_record(entry, now))
            lost.append(entry["id"])
        await store.flush()
        self.recovered = lost
        if lost:
            shown = ", ".join(lost[:5]) + (" ..." if len(lost) > 5 else "")
            log.warning(
                "%d activations accepted before an abrupt stop had no record; recorded them as "
                "lost in the crash (%s)", len(lost), shown,
            )  # fmt: skip

    # -- file -----------------------------------------------------------------------------------

    def _accept(self, entry: JSONDict) -> None:
        self._open[entry["id"]] = entry
        if self._fd >= 0:
            self._append({"a": entry})

    def _append(self, line: dict[str, Any]) -> None:
        data = orjson.dumps(line) + b"\n"
        self._size += os.write(self._fd, data)

    def _rewrite(self) -> None:
        """Start a fresh file holding only the open entries (replaced atomically)."""
        fresh = self.path.with_name(self.path.name + ".new")
        data = b"".join(orjson.dumps({"a": entry}) + b"\n" for entry in self._open.values())
        fresh.write_bytes(data)
        fresh.chmod(0o600)
        os.replace(fresh, self.path)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._size = len(data)


def _read_open(path: Path) -> dict[str, JSONDict]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    open_entries: dict[str, JSONDict] = {}
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            item = orjson.loads(line)
            if "a" in item:
                open_entries[item["a"]["id"]] = item["a"]
            else:
                for key in item["w"]:
                    open_entries.pop(key, None)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            # A torn last line (power cut) or damage: skip it, keep every readable entry.
            log.warning("%s line %d is unreadable; skipped", path, number)
    return open_entries


def _lost_record(entry: JSONDict, now_ms: int) -> JSONDict:
    annotations: list[Any] = [{"key": "lostInCrash", "value": True}]
    if entry.get("path"):
        annotations.append({"key": "path", "value": entry["path"]})
    start = int(entry.get("start") or now_ms)
    return build_record(
        namespace=entry["namespace"],
        name=entry["name"],
        version=entry.get("version") or "0.0.1",
        subject=entry.get("subject") or "",
        activation_id=entry["id"],
        start=start,
        end=max(start, now_ms),
        response=ActivationResponse(WHISK_ERROR, {"error": LOST_IN_CRASH}),
        logs=[],
        annotations=annotations,
        cause=entry.get("cause"),
    )


class JournaledBus(MessageBus):
    """A bus that journals every activation handed to a scheduler before sending it.

    Only for a bus that keeps messages in memory: a durable broker (Kafka) needs no journal.
    """

    def __init__(self, inner: MessageBus, journal: CrashJournal) -> None:
        self._inner, self._journal = inner, journal

    async def start(self) -> None:
        await self._inner.start()

    async def close(self) -> None:
        await self._inner.close()

    def publish(self, topic: str, message: object) -> None:
        if topic == SCHEDULER_TOPIC and isinstance(message, ActivationMessage):
            self._journal.accepted_message(message)
        self._inner.publish(topic, message)

    def subscribe(self, topic: str, group: str, handler: MessageHandler) -> Subscription:
        return self._inner.subscribe(topic, group, handler)
