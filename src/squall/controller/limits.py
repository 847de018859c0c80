"""Namespace limits and the throttles that enforce them, as OpenWhisk's entitlement does.

A namespace's limits are the system's (settings, with OpenWhisk's LIMITS_* aliases) overridden
by what `squall admin limits set` stored with its credentials (`SubjectRecord.limits`, under
OpenWhisk's UserLimits names). The controller reads them with the caller's key; see
`Authenticator` for how fresh they are.

Throttles (one controller's view, as in OpenWhisk, where each controller counts its own):
- invocations per minute and trigger fires per minute: counts per namespace in the current
  clock minute; every request counts, refused ones too (OpenWhisk's RateThrottler);
- concurrent invocations: activations this controller accepted and has no completion for yet
  (queued or running), OpenWhisk's ActivationThrottler. An activation whose completion never
  comes (an invoker lost) stops counting after its action's timeout plus a grace period.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from squall.config import ActionLimitRange, SystemLimits
from squall.controller.errors import ApiError

MB = 1024 * 1024
# How long past its action's timeout an accepted activation may stay unanswered before it no
# longer counts as in flight (covers queueing, a cold start and the completion's way back).
IN_FLIGHT_GRACE_S = 120.0
IN_FLIGHT_SWEEP_S = 1.0  # how late a lost activation may stop counting, at most

# OpenWhisk's UserLimits names for the per-namespace rates (stored as given).
RATE_KEYS = ("invocationsPerMinute", "concurrentInvocations", "firesPerMinute")
# Per-action ranges: UserLimits name -> (SystemLimits field, bytes per stored unit).
RANGE_KEYS: dict[str, tuple[str, int]] = {
    "ActionMemory": ("memory_mb", MB),
    "ActionTimeout": ("timeout_ms", 1),
    "ActionLogs": ("logs_mb", MB),
    "ActionConcurrency": ("concurrency", 1),
}
ALLOWED_KINDS = "allowedKinds"


class InvalidLimits(ValueError):
    """Limits an administrator asked for that cannot be stored (message says which)."""


def too_many_per_minute(count: int, allowed: int) -> str:
    return f"Too many requests in the last minute (count: {count}, allowed: {allowed})."


def too_many_concurrent(count: int, allowed: int) -> str:
    return f"Too many concurrent requests in flight (count: {count}, allowed: {allowed})."


def kind_not_allowed(kind: str) -> str:
    return f"The supplied authentication is not authorized to access actions of kind '{kind}'."


@dataclass(slots=True, frozen=True)
class NamespaceLimits:
    """The limits one namespace runs under: the system's, with its own overrides."""

    invocations_per_minute: int
    concurrent_invocations: int
    fires_per_minute: int
    allowed_kinds: frozenset[str] | None  # None: every kind
    actions: SystemLimits  # the system limits with this namespace's action ranges

    @classmethod
    def resolve(cls, system: SystemLimits, stored: Mapping[str, Any]) -> NamespaceLimits:
        def rate(key: str, default: int) -> int:
            value = stored.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else default

        kinds = stored.get(ALLOWED_KINDS)
        return cls(
            invocations_per_minute=rate("invocationsPerMinute", system.invocations_per_minute),
            concurrent_invocations=rate("concurrentInvocations", system.concurrent_invocations),
            fires_per_minute=rate("firesPerMinute", system.fires_per_minute),
            allowed_kinds=frozenset(kinds) if isinstance(kinds, list) else None,
            actions=_action_ranges(system, stored),
        )

    def check_kind(self, kind: str, aliases: Mapping[str, str] | None = None) -> None:
        """403 when the namespace may not use `kind` (OpenWhisk's allowedKinds).

        With `aliases` (`nodejs:default` -> `nodejs:20`), an alias and the kind it stands for
        are the same kind, whichever of them is listed or used.
        """
        allowed = self.allowed_kinds
        if allowed is None or kind in allowed:
            return
        aliases = aliases or {}
        if aliases.get(kind, kind) not in {aliases.get(k, k) for k in allowed}:
            raise ApiError(403, kind_not_allowed(kind))

    def to_json(self) -> dict[str, Any]:
        """`GET /namespaces/{ns}/limits`: OpenWhisk's UserLimits with every value filled in."""
        a = self.actions
        out: dict[str, Any] = {
            "invocationsPerMinute": self.invocations_per_minute,
            "concurrentInvocations": self.concurrent_invocations,
            "firesPerMinute": self.fires_per_minute,
        }
        for suffix, (attr, unit) in RANGE_KEYS.items():
            rng: ActionLimitRange = getattr(a, attr)
            out[f"min{suffix}"] = rng.minimum * unit
            out[f"max{suffix}"] = rng.maximum * unit
        out.update(
            maxParameterSize=a.parameters_bytes,
            maxActionInstances=self.concurrent_invocations,
            storeActivations=True,
        )
        if self.allowed_kinds is not None:
            out[ALLOWED_KINDS] = sorted(self.allowed_kinds)
        return out


def _action_ranges(system: SystemLimits, stored: Mapping[str, Any]) -> SystemLimits:
    changes: dict[str, Any] = {}
    for suffix, (attr, unit) in RANGE_KEYS.items():
        low, high = stored.get(f"min{suffix}"), stored.get(f"max{suffix}")
        if low is None and high is None:
            continue
        rng: ActionLimitRange = getattr(system, attr)
        minimum = int(low) // unit if low is not None else rng.minimum
        maximum = int(high) // unit if high is not None else rng.maximum
        default = min(max(rng.default, minimum), maximum)
        changes[attr] = ActionLimitRange(minimum, default, maximum)
    concurrent = stored.get("concurrentInvocations")
    if isinstance(concurrent, int):  # bounds an action's `instances`
        changes["concurrent_invocations"] = concurrent
    return replace(system, **changes) if changes else system


# ---------------------------------------------------------------------------------------------
# What `squall admin limits set` may store
# ---------------------------------------------------------------------------------------------


def updated_limits(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`current` with `changes` applied (a None value removes the override), validated.

    Keys are OpenWhisk's UserLimits names; memory and logs are in bytes, timeouts in ms.
    """
    merged = {k: v for k, v in {**current, **changes}.items() if v is not None}
    for key, value in merged.items():
        if key == ALLOWED_KINDS:
            if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
                raise InvalidLimits("allowedKinds must be a list of kinds")
        elif key in RATE_KEYS or (key[3:] in RANGE_KEYS and key[:3] in ("min", "max")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidLimits(f"{key} must be a whole number, 0 or more (got {value!r})")
        else:
            raise InvalidLimits(f"{key} is not a namespace limit")
    for suffix in RANGE_KEYS:
        low, high = merged.get(f"min{suffix}"), merged.get(f"max{suffix}")
        if low is not None and high is not None and low > high:
            raise InvalidLimits(f"min{suffix} ({low}) is above max{suffix} ({high})")
    return merged


# ---------------------------------------------------------------------------------------------
# Throttles
# ---------------------------------------------------------------------------------------------


class PerMinuteCounter:
    """Requests per namespace in the current clock minute, like OpenWhisk's RateThrottler."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int]] = {}  # namespace -> (minute, count)

    def admit(self, namespace: str, allowed: int) -> None:
        """Count one request; ApiError 429 when it is over `allowed` for this minute."""
        minute = int(time.time() // 60)
        seen_minute, count = self._counts.get(namespace, (minute, 0))
        count = (count if seen_minute == minute else 0) + 1
        self._counts[namespace] = (minute, count)
        if count > allowed:
            raise ApiError(429, too_many_per_minute(count, allowed))


class InFlight:
    """Activations accepted per namespace and not yet completed."""

    def __init__(
        self, grace_s: float = IN_FLIGHT_GRACE_S, sweep_interval_s: float = IN_FLIGHT_SWEEP_S
    ) -> None:
        self._grace_s = grace_s
        self._sweep_interval_s = sweep_interval_s
        self._by_namespace: dict[str, dict[str, float]] = {}  # ns -> activation id -> expiry
        self._namespace_of: dict[str, str] = {}
        self._swept_at: dict[str, float] = {}  # ns -> when its expired entries were dropped

    def count(self, namespace: str) -> int:
        """Activations of `namespace` in flight. Entries past their expiry (a completion that
        never came) are dropped at most every `sweep_interval_s`: looking at every entry on
        every admission cost ~3% of the CPU of 1,000 alarm fires a second."""
        active = self._by_namespace.get(namespace)
        if not active:
            return 0
        now = time.monotonic()
        if now - self._swept_at.get(namespace, -math.inf) >= self._sweep_interval_s:
            self._swept_at[namespace] = now
            expired = [aid for aid, expiry in active.items() if expiry < now]
            for aid in expired:
                self.done(aid)
        return len(active)

    def add(self, namespace: str, activation_id: str, timeout_ms: int) -> None:
        expiry = time.monotonic() + timeout_ms / 1000 + self._grace_s
        self._by_namespace.setdefault(namespace, {})[activation_id] = expiry
        self._namespace_of[activation_id] = namespace

    def done(self, activation_id: str) -> None:
        namespace = self._namespace_of.pop(activation_id, None)
        if namespace is not None:
            active = self._by_namespace.get(namespace)
            if active is not None:
                active.pop(activation_id, None)
                if not active:
                    del self._by_namespace[namespace]


class Throttles:
    """Every namespace throttle of one controller; a namespace's counts touch no other's."""

    def __init__(self, system: SystemLimits, kind_aliases: Mapping[str, str] | None = None) -> None:
        self.system = system
        self.kind_aliases = dict(kind_aliases or {})
        # Most namespaces override nothing: their limits are resolved once, not on every
        # invoke and fire (2-3% of an alarm fire's CPU in a profile).
        self._defaults = NamespaceLimits.resolve(system, {})
        self._invocations = PerMinuteCounter()
        self._fires = PerMinuteCounter()
        self._in_flight = InFlight()
        self._concurrency: dict[str, int] = {}  # the last concurrent limit seen per namespace
        # How many processes enforce these limits side by side, each on its own counts: each
        # admits its share, as OpenWhisk's controllers divide limits by the cluster size.
        self.share: Callable[[], int] = lambda: 1

    def limits(self, stored: Mapping[str, Any]) -> NamespaceLimits:
        return NamespaceLimits.resolve(self.system, stored) if stored else self._defaults

    def admit_invocation(
        self, namespace: str, stored: Mapping[str, Any], kind: str, activation_id: str,
        timeout_ms: int,
    ) -> None:  # fmt: skip
        """Check kind, rate and concurrency (in OpenWhisk's order) and count the activation.

        Raises ApiError 403 (kind not allowed) or 429 (rate or concurrency).
        """
        limits = self.limits(stored)
        self._concurrency[namespace] = limits.concurrent_invocations
        limits.check_kind(kind, self.kind_aliases)
        self._invocations.admit(namespace, self._part(limits.invocations_per_minute))
        in_flight = self._in_flight.count(namespace)
        concurrent = self._part(limits.concurrent_invocations)
        if in_flight >= concurrent:
            raise ApiError(429, too_many_concurrent(in_flight, concurrent))
        self._in_flight.add(namespace, activation_id, timeout_ms)

    def _part(self, limit: int) -> int:
        share = self.share()
        return limit if share <= 1 else max(1, limit // share)

    def completed(self, activation_id: str) -> None:
        """An activation's completion arrived: it is no longer in flight."""
        self._in_flight.done(activation_id)

    def admit_fire(self, namespace: str, stored: Mapping[str, Any]) -> None:
        """Count one trigger fire; 429 over the namespace's fires per minute."""
        self._fires.admit(namespace, self._part(self.limits(stored).fires_per_minute))

    def in_flight(self, namespace: str) -> int:
        return self._in_flight.count(namespace)

    def concurrent_limit(self, namespace: str) -> int:
        """The namespace's concurrent limit as last seen by an invocation (the scheduler's
        container limit for the namespace); the system's before any."""
        return self._concurrency.get(namespace, self.system.concurrent_invocations)
