"""The JSON behind the dashboard's Alarms and System pages (everything else uses /api/v1)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from squall.alarms import Alarm, AlarmService, FireOutcome, FireRecord
from squall.alarms.model import js_iso
from squall.ops.counters import STATUS_NAMES
from squall.ops.metrics import StandaloneSources
from squall.ui.history import History
from squall.ui.words import schedule_in_words

_DELIVERED = (FireOutcome.FIRED, FireOutcome.NO_ACTIVE_RULES)
NEXT_FIRES = 5
# A page polled every 2 s: a namespace with thousands of alarms shows the first ones.
MAX_ALARMS = 100
LAST_FIRES = 10
# The roles of a standalone process and the readiness checks each depends on.
ROLE_CHECKS = {
    "controller": ("entity_store",),
    "scheduler": ("scheduler_durations", "alarms", "entity_store"),
    "invoker": ("sandbox", "activation_store"),
}


def alarms_view(alarms: AlarmService, namespace: str) -> dict[str, Any]:
    """The alarms of `namespace` (the first MAX_ALARMS by trigger name): OpenWhisk's feed READ
    body plus the schedule in words, the last fires and the misfire and throttling events."""
    found = alarms.list(namespace)
    return {"alarms": [_alarm(alarms, a) for a in found[:MAX_ALARMS]], "total": len(found)}


def _alarm(alarms: AlarmService, alarm: Alarm) -> dict[str, Any]:
    fires = alarms.recent_fires(alarm.namespace, alarm.trigger)[-LAST_FIRES:]
    return {
        "trigger": alarm.trigger,
        "kind": alarm.kind.value,
        "words": schedule_in_words(alarm),
        **alarms.read_view(alarm, next_count=NEXT_FIRES),
        "fires": [_fire(record) for record in reversed(fires)],
        "events": [describe_event(record) for record in reversed(fires) if is_event(record)],
    }


def _fire(record: FireRecord) -> dict[str, Any]:
    return {
        "tick": js_iso(record.tick),
        "firedAt": js_iso(record.fired_at),
        "lagMs": round(record.lag_ms, 3),
        "activationId": record.activation_id,
        "outcome": record.outcome.value,
        "attempts": record.attempts,
        "catchup": record.catchup,
    }


def is_event(record: FireRecord) -> bool:
    """Fires worth calling out: a misfire caught up, a throttled or failed delivery."""
    return record.catchup or record.outcome not in _DELIVERED or record.attempts > 1


def describe_event(record: FireRecord) -> dict[str, Any]:
    if record.catchup:
        what = "misfire: a missed tick fired late by the misfire policy"
    elif record.outcome is FireOutcome.THROTTLED:
        what = "throttled: the namespace's fires-per-minute limit refused the tick"
    elif record.outcome in _DELIVERED:
        what = f"delivered after {record.attempts} attempts"
    else:
        what = f"not delivered: {record.outcome.value.replace('_', ' ')}"
    return {"tick": js_iso(record.tick), "what": what, "activationId": record.activation_id}


def system_view(sources: StandaloneSources, history: History) -> dict[str, Any]:
    """Readiness (the `/readyz` data), queues, containers, prewarm pool, totals and history."""
    ready, readiness = sources.readiness.report()
    queues, queued, creating = sources.scheduler.queue_stats()
    invoker = sources.invoker
    stats = sources.alarms.stats()
    by_status = zip(invoker.counts.by_status, sources.scheduler.counts.by_status, strict=True)
    return {
        "ready": ready,
        "checks": readiness["checks"],
        "roles": _roles(readiness["checks"]),
        "queues": {"queues": queues, "queued": queued, "creating": creating},
        "containers": invoker.container_states(),
        "prewarm": {"ready": invoker.prewarm.cells(), "target": invoker.prewarm.count},
        "memoryMb": invoker.used_memory_mb(),
        "pendingRecords": getattr(sources.activations, "pending_count", 0),
        "activations": {name: a + b for name, (a, b) in zip(STATUS_NAMES, by_status, strict=True)},
        "alarms": asdict(stats),
        "history": history.sample(invoker.counts, stats.lag_p50_ms, stats.lag_p99_ms),
    }


def _roles(checks: dict[str, Any]) -> list[dict[str, Any]]:
    """Each role with the checks it is waiting for (empty when it is ready)."""
    roles = []
    for role, needs in ROLE_CHECKS.items():
        waiting = [name for name in needs if name in checks and not checks[name]["ready"]]
        roles.append({"role": role, "ready": not waiting, "waitingFor": waiting})
    return roles
