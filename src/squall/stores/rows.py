"""What every activation store derives from a record, so all backends list and filter alike.

The listing's `name` filter, the duration statistics and retention need a few values pulled
out of the stored record (its path, the path the listing compares with, start, duration);
computing them in one place keeps SQLite, PostgreSQL and Elasticsearch in agreement.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

import orjson

from squall.abc import JSONDict

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
    return int(value) if isinstance(value, int | float) else 0


def status_code(record: JSONDict) -> int | None:
    response = record.get("response")
    value = response.get("statusCode") if isinstance(response, dict) else None
    if value is None:
        value = record.get("statusCode")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def record_path(record: JSONDict) -> str:
    """The record's `path` annotation (ns/[pkg/]action); triggers' records carry none."""
    path = annotation(record, "path")
    if not isinstance(path, str) or not path:
        path = f"{record.get('namespace', '')}/{record.get('name', '')}"
    return path


def duration_of(record: JSONDict) -> int | None:
    duration = record.get("duration")
    if isinstance(duration, int | float):
        return int(duration)
    start, end = millis(record.get("start")), millis(record.get("end"))
    return end - start if end else None


def activation_row(record: JSONDict) -> tuple[Any, ...]:
    """(id, namespace, name, path, entity_path, start, end, duration, status, doc text)."""
    namespace = str(record.get("namespace", ""))
    name = str(record.get("name", ""))
    path = record_path(record)
    listed_as = entity_path(name, path, annotation(record, "binding"))
    return (record["activationId"], namespace, name, path, listed_as,
            millis(record.get("start")), millis(record.get("end")), duration_of(record),
            status_code(record), dumps(record))  # fmt: skip


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: always a duration that was observed."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
