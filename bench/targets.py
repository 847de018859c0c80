"""The targets each figure is judged against; a miss is reported, never hidden."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.stats import ratio


@dataclass(frozen=True)
class Goal:
    key: str
    label: str
    unit: str
    op: str  # "<=" or ">="
    target: float
    path: tuple[str, ...]
    baseline: tuple[str, ...] | None = None


GOALS = (
    Goal(
        "warm_p50", "Warm blocking invoke, concurrency 1: p50", "ms", "<=", 1.0,
        ("warm", "latency", "squall", "latency", "p50_ms"),
        ("warm", "latency", "baseline", "latency", "p50_ms"),
    ),
    Goal(
        "warm_p99", "Warm blocking invoke, concurrency 1: p99", "ms", "<=", 5.0,
        ("warm", "latency", "squall", "latency", "p99_ms"),
        ("warm", "latency", "baseline", "latency", "p99_ms"),
    ),
    Goal(
        "throughput", "Warm blocking invokes/s, {clients} concurrent clients", "req/s", ">=",
        2000.0,
        ("warm", "throughput", "squall", "requests_per_s"),
        ("warm", "throughput", "baseline", "requests_per_s"),
    ),
    Goal(
        "cold_steady_p50", "Cold start p50 (stem cells refilled between)", "ms", "<=", 10.0,
        ("cold_steady", "client", "p50_ms"),
    ),
    Goal(
        "cold_burst_p50", "Cold start p50 (back-to-back burst)", "ms", "<=", 10.0,
        ("cold_burst", "client", "p50_ms"),
    ),
    Goal(
        "cold_no_prewarm_p50", "Cold start p50 (SQUALL_PREWARM_COUNT=0)", "ms", "<=", 10.0,
        ("cold_no_prewarm", "client", "p50_ms"),
    ),
    Goal(
        "sandbox_uss", "Idle warm sandbox USS (p50 over all sandboxes)", "MiB", "<=", 15.0,
        ("memory", "loaded", "sandbox_uss_mib", "p50"),
    ),
    Goal(
        "alarms_restart", "Alarms: restart to ready, {alarms} alarms (process start to /ping)",
        "s", "<=", 5.0,
        ("alarms", "restart", "ready_s"), ("alarms_apscheduler", "startup", "ready_s"),
    ),
    Goal(
        "alarms_lag_p99", "Alarms: fire lag p99 at {rate} fires/s (record start - scheduled s)",
        "ms", "<=", 20.0,
        ("alarms", "lag", "p99_ms"), ("alarms_apscheduler", "lag", "p99_ms"),
    ),
    Goal(
        "alarms_rate", "Alarms: fires delivered per second over the window", "fires/s", ">=",
        1000.0,
        ("alarms", "fires_per_s"), ("alarms_apscheduler", "fires_per_s"),
    ),
    Goal(
        "alarms_lost", "Alarms: fires lost or doubled in the window", "fires", "<=", 0.0,
        ("alarms", "window_fires", "lost_or_doubled"),
        ("alarms_apscheduler", "window_fires", "lost_or_doubled"),
    ),
    Goal(
        "alarms_rss", "Alarms: platform RSS with {alarms} alarms (end of window)", "MiB", "<=",
        300.0,
        ("alarms", "memory_end", "rss_mib"), ("alarms_apscheduler", "memory_end", "rss_mib"),
    ),
    Goal(
        "alarms_inactive_lag_p99",
        "Alarms, rules inactive: scheduler lag p99 (fire call - scheduled s)", "ms", "<=", 20.0,
        ("alarms_inactive_rules", "lag", "p99_ms"), ("alarms_apscheduler", "lag", "p99_ms"),
    ),
    Goal(
        "alarms_spread_lag_p99",
        "Alarms, rules inactive, ticks spread over each second: scheduler lag p99", "ms", "<=",
        20.0,
        ("alarms_spread", "lag", "p99_ms"), ("alarms_apscheduler", "lag", "p99_ms"),
    ),
    Goal(
        "alarms_spread_active_lag_p99",
        "Alarms, rules active, ticks spread over each second: fire lag p99 (record start - due)",
        "ms", "<=", 20.0,
        ("alarms_spread_active", "lag", "p99_ms"), ("alarms_apscheduler", "lag", "p99_ms"),
    ),
    Goal(
        "alarms_inactive_rate", "Alarms, rules inactive: fires delivered per second", "fires/s",
        ">=", 1000.0,
        ("alarms_inactive_rules", "fires_per_s"), ("alarms_apscheduler", "fires_per_s"),
    ),
    Goal(
        "cluster_warm_p50", "Cluster (one of each role): warm blocking invoke p50 through Kafka",
        "ms", "<=", 10.0,
        ("cluster", "warm", "cluster", "latency", "latency", "p50_ms"),
        ("cluster", "warm", "standalone", "latency", "latency", "p50_ms"),
    ),
    Goal(
        "cluster_throughput", "Cluster (one of each role): warm blocking invokes/s, {clients} "
        "clients", "req/s", ">=", 500.0,
        ("cluster", "warm", "cluster", "throughput", "requests_per_s"),
        ("cluster", "warm", "standalone", "throughput", "requests_per_s"),
    ),
    Goal(
        "cluster_alarm_burst_lag_p99", "Cluster, two schedulers: alarm fire lag p99 (the worse "
        "one) at {cluster_alarms} fires/s, all due at the same instant", "ms", "<=", 50.0,
        ("cluster_alarms", "lag_p99_ms_worst"),
    ),
    Goal(
        "cluster_alarm_lag_p99", "Cluster, two schedulers: alarm fire lag p99 (the worse one) "
        "at {cluster_alarms} fires/s, ticks spread over each second", "ms", "<=", 50.0,
        ("cluster_alarms", "spread_lag_p99_ms_worst"),
    ),
    *(
        Goal(
            f"stores_{backend}_{key}", f"Stores, {{seeded}} records, {label}: {what} p50",
            "ms", "<=", 5.0,
            ("stores", "seeded", backend, key, "p50_ms"),
            ("stores", "seeded", "sqlite", key, "p50_ms"),
        )
        for backend, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL"))
        for key, what in (
            ("list_by_name_and_time", "list by name and 6-hour range"),
            ("list_by_name", "list by name (newest 30)"),
        )
    ),
)  # fmt: skip


def dig(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def judge(goal: Goal, value: float | None) -> bool | None:
    if value is None:
        return None
    return value <= goal.target if goal.op == "<=" else value >= goal.target


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per goal: the figure, its target, pass/miss, and the baseline with the ratio."""
    rows = []
    clients = dig(results, ("plan", "connections"))
    firing = dig(results, ("plan", "alarm_firing")) or 0
    alarms = firing + (dig(results, ("plan", "alarm_idle")) or 0)
    for goal in GOALS:
        value = dig(results, goal.path)
        base = dig(results, goal.baseline) if goal.baseline else None
        rows.append(
            {
                "key": goal.key,
                "label": goal.label.format(
                    clients=clients, alarms=f"{alarms:,}", rate=f"{firing / 60:,.0f}",
                    seeded=f"{dig(results, ('plan', 'store_seed_records')) or 0:,}",
                    cluster_alarms=f"{dig(results, ('plan', 'cluster_alarms')) or 0:,}",
                ),
                "unit": goal.unit,
                "op": goal.op,
                "target": goal.target,
                "value": value,
                "passed": judge(goal, value),
                "baseline": base,
                "ratio_to_baseline": ratio(value, base),
            }
        )
    return rows
