"""How many containers a queue needs: OpenWhisk's SchedulingDecisionMaker as a pure function.

Kept free of I/O so the rules can be tested case by case against OpenWhisk's
(`../shared/OPENWHISK.md` section 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class QueueSnapshot:
    """What the decision maker sees of one queue on one tick."""

    existing: int  # E: containers running for this queue
    in_progress: int  # P: creations asked for but not yet running
    queued: int  # A: activations waiting
    stale: int  # S: activations waiting longer than the stale threshold
    namespace_existing: int  # En
    namespace_in_progress: int  # Pn
    namespace_limit: int  # L: the namespace's concurrent containers
    action_limit: int  # La: min(action `instances`, L)
    concurrency: int  # C: activations one container runs at once
    average_duration_ms: float | None  # D, None while unknown
    stale_threshold_ms: int


@dataclass(slots=True, frozen=True)
class Decision:
    """Containers to add, and whether the namespace is at its limit."""

    add: int
    namespace_throttled: bool = False


def decide(s: QueueSnapshot) -> Decision:
    """Containers to create for this queue now."""
    total = s.existing + s.in_progress
    capacity = min(
        s.namespace_limit - s.namespace_existing - s.namespace_in_progress,
        s.action_limit - total,
    )
    if min(s.namespace_limit, s.action_limit) <= 0:
        return Decision(0, namespace_throttled=s.queued > 0)
    wanted = _wanted(s, total)
    if wanted <= 0:
        return Decision(0)
    if capacity <= 0:
        return Decision(0, namespace_throttled=True)
    if wanted > capacity:
        return Decision(capacity, namespace_throttled=True)
    return Decision(wanted)


def _wanted(s: QueueSnapshot, total: int) -> int:
    if s.queued <= 0:
        return 0
    if total == 0:
        return 1
    duration = s.average_duration_ms
    if duration is None:
        # Unknown duration: one more container per stale activation not already covered.
        return min(math.ceil(s.stale / s.concurrency) - s.in_progress, s.queued) if s.stale else 0
    per_container = (
        s.concurrency if duration <= 0 else (s.stale_threshold_ms / duration) * s.concurrency
    )
    stale_add = min(math.ceil(s.stale / per_container), s.stale) - s.in_progress if s.stale else 0
    non_stale = s.queued - s.stale
    expected = per_container * total
    if non_stale >= expected and total < non_stale and duration > 0:
        n = math.ceil(non_stale / per_container - s.existing - s.in_progress)
        n = min(n, non_stale - total)
        return max(n, 0) + max(stale_add, 0)
    return max(stale_add, 0)
