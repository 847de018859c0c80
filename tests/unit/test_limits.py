"""Namespace limits: resolution over the system's, what admins may store, the counters."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from squall.config import SystemLimits
from squall.controller.errors import ApiError
from squall.controller.limits import (
    MB,
    InFlight,
    InvalidLimits,
    NamespaceLimits,
    Throttles,
    updated_limits,
)

SYSTEM = replace(SystemLimits(), invocations_per_minute=5, concurrent_invocations=2)


def test_stored_limits_override_the_system_ones() -> None:
    limits = NamespaceLimits.resolve(SYSTEM, {
        "invocationsPerMinute": 9, "maxActionMemory": 1024 * MB, "minActionTimeout": 500,
        "allowedKinds": ["python:3.11"], "concurrentInvocations": 4,
    })  # fmt: skip
    assert limits.invocations_per_minute == 9 and limits.fires_per_minute == 60
    assert limits.actions.memory_mb.maximum == 1024 and limits.actions.memory_mb.minimum == 128
    assert limits.actions.timeout_ms.minimum == 500 and limits.actions.timeout_ms.default == 60_000
    assert limits.actions.concurrent_invocations == 4  # bounds an action's `instances`
    shown = limits.to_json()
    assert shown["maxActionMemory"] == 1024 * MB and shown["allowedKinds"] == ["python:3.11"]
    assert shown["maxActionInstances"] == 4
    assert "allowedKinds" not in NamespaceLimits.resolve(SYSTEM, {}).to_json()


def test_a_namespace_without_overrides_gets_the_system_limits_and_others_their_own() -> None:
    throttles = Throttles(SYSTEM)
    plain = throttles.limits({})
    assert plain == NamespaceLimits.resolve(SYSTEM, {}) and plain.invocations_per_minute == 5
    assert throttles.limits({}) is plain  # resolved once, not on every invoke and fire
    assert throttles.limits({"invocationsPerMinute": 9}).invocations_per_minute == 9
    assert throttles.limits({}).invocations_per_minute == 5


def test_a_range_moves_the_default_inside_it() -> None:
    limits = NamespaceLimits.resolve(SYSTEM, {"minActionMemory": 300 * MB})
    assert limits.actions.memory_mb.default == 300


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"invocationsPerMinute": -1}, "0 or more"),
        ({"invocationsPerMinute": True}, "whole number"),
        ({"bogus": 1}, "not a namespace limit"),
        ({"allowedKinds": "python:3"}, "list of kinds"),
        ({"minActionTimeout": 900, "maxActionTimeout": 800}, "above maxActionTimeout"),
    ],
)
def test_invalid_limits_are_refused(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidLimits, match=fragment):
        updated_limits({}, changes)


def test_updates_merge_and_none_removes() -> None:
    merged = updated_limits({"firesPerMinute": 3, "invocationsPerMinute": 4},
                            {"firesPerMinute": None, "concurrentInvocations": 2})  # fmt: skip
    assert merged == {"invocationsPerMinute": 4, "concurrentInvocations": 2}


def test_rate_counts_refusals_and_namespaces_apart() -> None:
    throttles = Throttles(SYSTEM)
    for i in range(5):
        throttles.admit_invocation("a", {}, "python:3", f"a{i}", 100)
        throttles.completed(f"a{i}")
    with pytest.raises(ApiError) as refused:
        throttles.admit_invocation("a", {}, "python:3", "a5", 100)
    assert refused.value.status == 429
    assert refused.value.message == "Too many requests in the last minute (count: 6, allowed: 5)."
    throttles.admit_invocation("b", {}, "python:3", "b0", 100)  # b has its own count


def test_concurrency_frees_on_completion() -> None:
    throttles = Throttles(replace(SYSTEM, invocations_per_minute=100))
    throttles.admit_invocation("a", {}, "python:3", "x", 100)
    throttles.admit_invocation("a", {}, "python:3", "y", 100)
    with pytest.raises(ApiError) as refused:
        throttles.admit_invocation("a", {}, "python:3", "z", 100)
    assert refused.value.message == "Too many concurrent requests in flight (count: 2, allowed: 2)."
    throttles.completed("x")
    throttles.admit_invocation("a", {}, "python:3", "z", 100)
    assert throttles.in_flight("a") == 2


def test_kinds_outside_the_allowed_ones_are_403() -> None:
    throttles = Throttles(SYSTEM)
    with pytest.raises(ApiError) as refused:
        throttles.admit_invocation("a", {"allowedKinds": ["nodejs:20"]}, "python:3", "x", 100)
    assert refused.value.status == 403
    assert throttles.in_flight("a") == 0


def test_an_activation_without_completion_stops_counting() -> None:
    in_flight = InFlight(grace_s=0.0, sweep_interval_s=0.0)
    in_flight.add("a", "lost", timeout_ms=10)
    assert in_flight.count("a") == 1
    time.sleep(0.02)
    assert in_flight.count("a") == 0


def test_expired_activations_are_dropped_once_per_sweep_interval() -> None:
    in_flight = InFlight(grace_s=0.0, sweep_interval_s=0.2)
    in_flight.add("a", "lost", timeout_ms=10)
    assert in_flight.count("a") == 1  # sweeps now: not expired yet
    time.sleep(0.05)
    assert in_flight.count("a") == 1  # expired, but the next sweep is not due
    time.sleep(0.2)
    assert in_flight.count("a") == 0


def test_a_default_alias_is_its_kind() -> None:
    aliases = {"nodejs:default": "nodejs:20", "python:default": "python:3.11"}
    throttles = Throttles(replace(SYSTEM, invocations_per_minute=100), aliases)
    throttles.admit_invocation("a", {"allowedKinds": ["nodejs:20"]}, "nodejs:default", "x", 1)
    throttles.admit_invocation("a", {"allowedKinds": ["python:default"]}, "python:3.11", "y", 1)
    with pytest.raises(ApiError):
        throttles.admit_invocation("a", {"allowedKinds": ["nodejs:20"]}, "python:default", "z", 1)
