"""What every activation store derives from a record, so all backends list and filter alike.

The listing's `name` filter, the duration statistics and retention need a few values pulled
out of the stored record (its path, the path the listing compares with, start, duration);
computing them in one place keeps SQLite, PostgreSQL and Elasticsearch in agreement.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import orjson

from squall.abc import ActivationQuery, JSONDict

STATS_WINDOW = 10_000  # most recent durations considered by duration_stats
PURGE_CHUNK = 5_000  # rows per delete, so a large purge never holds the write lock for long


def dumps(doc: Any) -> str:
    try:
        return orjson.dumps(doc).decode()
    except TypeError:
        # orjson refuses integers beyond 64 bits, which user JSON may hold; the stdlib does not.
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def annotation(record: JSONDict, key: str) -> Any:
    annotations = record.get("annotations")
    if isinstance(annotations, list):
        for item in annotations:
            if isinstance(item, dict) and item.get("key") == key:
                return item.get("value")
    return None


def entity_path(name: str, path: str, binding: Any) -> str:
    """What the listing's `name` filter compares with, as OpenWhisk's activations view does.

    An action reached through a package binding is listed under `binding/name`, one in a
    package under `pkg/name` (from its `path` annotation `ns/pkg/name`), any other under `name`.
    """
    if isinstance(binding, str):
        parts = binding.strip("/").split("/")
        if len(parts) >= 2:
            return f"{parts[1]}/{name}"
    segments = path.split("/")
    return f"{segments[1]}/{name}" if len(segments) == 3 else name


def millis(value: Any) -> int:
    return _integer(value) or 0


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if math.isfinite(value) else None


def status_code(record: JSONDict) -> int | None:
    response = record.get("response")
    value = response.get("statusCode") if isinstance(response, dict) else None
    if value is None:
        value = record.get("statusCode")
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return value if -(2**31) <= value < 2**31 else None  # an INTEGER column's range


def record_path(record: JSONDict) -> str:
    """The record's `path` annotation (ns/[pkg/]action); triggers' records carry none."""
    path = annotation(record, "path")
    if not isinstance(path, str) or not path:
        path = f"{record.get('namespace', '')}/{record.get('name', '')}"
    return path


def duration_of(record: JSONDict) -> int | None:
    duration = _integer(record.get("duration"))
    if duration is not None:
        return duration
    start, end = millis(record.get("start")), millis(record.get("end"))
    return end - start if end else None


def timings(record: JSONDict) -> tuple[int, int, int | None]:
    """(start, end, duration) as stored; ValueError when one is beyond a 64-bit integer, which
    no store could index: such a record would fail every batch it joined."""
    values = (millis(record.get("start")), millis(record.get("end")), duration_of(record))
    for value in values:
        if value is not None and not -(2**63) <= value < 2**63:
            raise ValueError(f"a time of activation {record.get('activationId')} is out of range")
    return values


def activation_row(record: JSONDict) -> tuple[Any, ...]:
    """(id, namespace, name, path, entity_path, start, end, duration, status, doc text)."""
    namespace = str(record.get("namespace", ""))
    name = str(record.get("name", ""))
    path = record_path(record)
    listed_as = entity_path(name, path, annotation(record, "binding"))
    return (record["activationId"], namespace, name, path, listed_as, *timings(record),
            status_code(record), dumps(record))  # fmt: skip


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: always a duration that was observed."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# SQL shared by the SQL stores; `mark` is the driver's parameter placeholder (`?` or `%s`).


class _Keyed(Protocol):
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...


Keyed = TypeVar("Keyed", bound=_Keyed)
Key = tuple[str, str]


async def keyset_pages(
    fetch: Callable[[Key | None], Awaitable[list[Keyed]]], page: int
) -> AsyncIterator[list[Keyed]]:
    """Pages along the entities' primary key (namespace, name): `fetch(after)` reads the next
    `page` rows after that key (OFFSET would re-read every skipped row). Entities written
    during the scan may be missed."""
    after: Key | None = None
    while True:  # bounded: the key grows on every page and the table is finite
        batch = await fetch(after)
        if batch:
            yield batch
            after = (batch[-1].namespace, batch[-1].name)
        if len(batch) < page:
            return


def entity_scope(
    collection: str, namespace: str, prefix_match: bool, mark: str
) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause selecting a collection under a path (and below it on prefix_match)."""
    if not prefix_match:
        return f"collection = {mark} AND namespace = {mark}", (collection, namespace)
    # The paths below `ns` are exactly the strings in [ns + "/", ns + "0"): "0" follows "/" in
    # byte order (PostgreSQL compares them with COLLATE "C"). Unlike LIKE, a range gives `_`
    # and `%` in names no meaning and uses the index.
    return (
        f"collection = {mark} AND (namespace = {mark} OR "
        f"(namespace >= {mark} AND namespace < {mark}))",
        (collection, namespace, namespace + "/", namespace + "0"),
    )


def activation_filter(query: ActivationQuery, mark: str) -> tuple[str, list[Any]]:
    """The WHERE clause of an activation listing or count."""
    clauses: list[str] = [f"namespace = {mark}"]
    params: list[Any] = [query.namespace]
    if query.name is not None:
        clauses.append(f"entity_path = {mark}")
        params.append(query.name)
    if query.since is not None:
        clauses.append(f"start_ms >= {mark}")
        params.append(query.since)
    if query.upto is not None:
        clauses.append(f"start_ms <= {mark}")
        params.append(query.upto)
    return " AND ".join(clauses), params

