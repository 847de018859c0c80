"""`squall store copy`: move entities, credentials and activations between backends.

Everything is read through the seams' export methods and written through their ordinary write
paths (entities keep their revisions), so any pair of backends works. Each kind of item gets a
count and an order-independent checksum (the sum of SHA-256 digests of its canonical JSON),
computed on the source while reading and again on the destination afterwards: equal figures
mean nothing was lost or altered on the way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from squall.abc import ActivationStore, EntityStore, JSONDict, StoredEntity, SubjectRecord
from squall.errors import ConflictError, StoreError

T = TypeVar("T")
_MODULUS = 2**128


def canonical(value: Any) -> bytes:
    """JSON with sorted keys; the stdlib takes over for integers orjson refuses (> 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Tally:
    """A count and an order-independent checksum of items."""

    count: int = 0
    digest: int = 0

    def add(self, item: Any) -> None:
        self.count += 1
        sha = hashlib.sha256(canonical(item)).digest()
        self.digest = (self.digest + int.from_bytes(sha[:16], "big")) % _MODULUS

    @property
    def checksum(self) -> str:
        return f"{self.digest:032x}"


def subject_item(record: SubjectRecord) -> list[Any]:
    return [record.namespace, record.subject, record.uuid, record.key_hash, record.limits]


def entity_item(entity: StoredEntity) -> list[Any]:
    return [entity.collection, entity.namespace, entity.name, entity.revision, entity.doc]


@dataclass
class CopyReport:
    """What was read from the source and what the destination holds afterwards, per kind."""

    source: dict[str, Tally] = field(default_factory=dict)
    destination: dict[str, Tally] = field(default_factory=dict)

    @property
    def matches(self) -> bool:
        return all(tally == self.destination.get(kind) for kind, tally in self.source.items())

    def lines(self) -> list[str]:
        out = []
        for kind, tally in self.source.items():
            dest = self.destination.get(kind, Tally())
            verdict = "ok" if tally == dest else "DIFFERS"
            out.append(f"{kind:<12} source {tally.count:>9,} {tally.checksum}  destination "
                       f"{dest.count:>9,} {dest.checksum}  {verdict}")  # fmt: skip
        return out


async def copy_entities(source: EntityStore, target: EntityStore, report: CopyReport) -> None:
    """Credentials and entities; an item already in the target must be identical."""
    subjects = report.source.setdefault("subjects", Tally())
    async for record in source.iter_subjects():
        subjects.add(subject_item(record))
        await target.put_subject(record)
    entities = report.source.setdefault("entities", Tally())
    async for entity in source.iter_entities():  # oldest write first keeps "newest first" lists
        entities.add(entity_item(entity))
        await _restore(target, entity)
    report.destination["subjects"] = await tally(target.iter_subjects(), subject_item)
    report.destination["entities"] = await tally(target.iter_entities(), entity_item)


async def _restore(target: EntityStore, entity: StoredEntity) -> None:
    try:
        await target.restore(entity)
    except ConflictError:
        present = await target.get(entity.collection, entity.namespace, entity.name)
        if present is None or entity_item(present) != entity_item(entity):
            raise StoreError(
                f"the destination already holds a different {entity.collection} "
                f"{entity.namespace}/{entity.name}; copy into an empty store"
            ) from None


async def copy_activations(
    source: ActivationStore, target: ActivationStore, report: CopyReport
) -> None:
    """Every record, page by page; each page is flushed before the next is read."""
    records = report.source.setdefault("activations", Tally())
    async for page in source.iter_records():
        for record in page:
            records.add(record)
            target.store(record)
        await target.flush()
    report.destination["activations"] = await tally_pages(target.iter_records())


async def tally(items: AsyncIterator[T], item: Callable[[T], Any]) -> Tally:
    result = Tally()
    async for one in items:
        result.add(item(one))
    return result


async def tally_pages(pages: AsyncIterator[list[JSONDict]]) -> Tally:
    result = Tally()
    async for page in pages:
        for record in page:
            result.add(record)
    return result
