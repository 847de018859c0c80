"""`/metrics`: a Prometheus collector that reads the components' state at scrape time.

Nothing here runs on the invoke path. The only counts kept as activations happen are the
list-slot increments of `ops.counters`; queue lengths, containers, the prewarm pool, alarm
totals and readiness are read when Prometheus asks. Each platform has its own registry, so
several platforms in one test process do not clash (and the global registry's process
collectors stay out of the way).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from squall.abc import ActivationStore
from squall.alarms import AlarmService
from squall.invoker.service import InvokerService
from squall.ops.counters import DURATION_BOUNDS_MS, STATUS_NAMES, ActivationCounts
from squall.ops.readiness import STATES, Readiness
from squall.scheduler.service import SchedulerService

# AlarmStats totals exported as counters: (field, metric name without _total, help).
ALARM_COUNTERS = (
    ("fires", "squall_alarm_fires", "Alarm ticks whose fire finished, delivered or not."),
    ("delivered", "squall_alarm_fires_delivered", "Alarm fires the trigger accepted."),
    ("not_delivered", "squall_alarm_fires_not_delivered", "Alarm fires given up after retries."),
    ("retries", "squall_alarm_fire_retries", "Retried alarm fire attempts."),
    ("throttled", "squall_alarm_fires_throttled", "Alarm ticks refused by the fires limit."),
    ("triggers_gone", "squall_alarm_triggers_gone", "Alarm fires whose trigger was deleted."),
    ("missed_ticks", "squall_alarm_missed_ticks", "Ticks found missed (catch-up plus dropped)."),
    ("catchup_fires", "squall_alarm_catchup_fires", "Missed ticks fired late by misfire policy."),
    ("dropped_ticks", "squall_alarm_dropped_ticks", "Missed ticks skipped by misfire policy."),
    ("persist_failures", "squall_alarm_persist_failures", "Alarm state writes that failed."),
    ("internal_errors", "squall_alarm_internal_errors", "Unexpected errors in the alarm timer."),
)
LAG_GAUGES = (
    ("lag_p50_ms", "squall_alarm_fire_lag_p50_seconds", "Median lag of on-time alarm fires."),
    ("lag_p99_ms", "squall_alarm_fire_lag_p99_seconds", "99th percentile alarm fire lag."),
    ("lag_max_ms", "squall_alarm_fire_lag_max_seconds", "Largest alarm fire lag in the window."),
)


@dataclass(frozen=True, slots=True)
class Sources:
    """The components a scrape reads."""

    activations: ActivationStore
    scheduler: SchedulerService | None  # None in a process that does not run the role
    invoker: InvokerService | None
    alarms: AlarmService | None
    readiness: Readiness


@dataclass(frozen=True, slots=True)
class StandaloneSources:
    """All of them, as one process running every role has (what the dashboard reads)."""

    activations: ActivationStore
    scheduler: SchedulerService
    invoker: InvokerService
    alarms: AlarmService
    readiness: Readiness

    def partial(self) -> Sources:
        return Sources(self.activations, self.scheduler, self.invoker, self.alarms, self.readiness)


class SquallCollector(Collector):
    """Every Squall metric, built from the components' state on each scrape."""

    def __init__(self, sources: Sources) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        yield from self._activation_metrics()
        yield from self._scheduler_metrics()
        yield from self._container_metrics()
        yield from self._alarm_metrics()
        yield from self._readiness_metrics()

    def _activation_metrics(self) -> Iterator[Metric]:
        sources = self._sources
        counts = [role.counts for role in (sources.invoker, sources.scheduler) if role is not None]
        by_status = CounterMetricFamily(
            "squall_activations",
            "Activations recorded, by status (the record's statusCode).",
            labels=["status"],
        )
        for slot, name in enumerate(STATUS_NAMES):
            by_status.add_metric([name], sum(c.by_status[slot] for c in counts))
        yield by_status
        if sources.invoker is not None:
            yield _duration_histogram(sources.invoker.counts)
        pending = getattr(self._sources.activations, "pending_count", 0)
        yield GaugeMetricFamily(
            "squall_activation_store_pending_records",
            "Activation records accepted but not yet written to the activation store.",
            value=pending,
        )

    def _scheduler_metrics(self) -> Iterator[Metric]:
        if self._sources.scheduler is None:
            return
        queues, queued, creating = self._sources.scheduler.queue_stats()
        yield GaugeMetricFamily("squall_scheduler_queues", "Action queues.", value=queues)
        yield GaugeMetricFamily(
            "squall_scheduler_queued_activations",
            "Activations waiting in the scheduler's queues for a container.",
            value=queued,
        )
        yield GaugeMetricFamily(
            "squall_scheduler_container_creations",
            "Containers the scheduler asked for that have not started yet.",
            value=creating,
        )

    def _container_metrics(self) -> Iterator[Metric]:
        invoker = self._sources.invoker
        if invoker is None:
            return
        states = invoker.container_states()
        states["prewarm"] = invoker.prewarm.cells()
        family = GaugeMetricFamily(
            "squall_containers", "Containers (sandboxes) by state.", labels=["state"]
        )
        for state, count in states.items():
            family.add_metric([state], count)
        yield family
        yield GaugeMetricFamily(
            "squall_prewarm_pool_size", "Prewarmed stem cells ready.", value=invoker.prewarm.cells()
        )
        yield GaugeMetricFamily(
            "squall_prewarm_pool_target", "Stem cells the pool keeps.", value=invoker.prewarm.count
        )
        yield GaugeMetricFamily(
            "squall_invoker_memory_used_bytes",
            "Memory reserved by the invoker's containers (their action limits).",
            value=invoker.used_memory_mb() * 1024 * 1024,
        )

    def _alarm_metrics(self) -> Iterator[Metric]:
        if self._sources.alarms is None:
            return
        stats = self._sources.alarms.stats()
        for field, name, help_text in ALARM_COUNTERS:
            yield CounterMetricFamily(name, help_text, value=getattr(stats, field))
        alarms = GaugeMetricFamily("squall_alarms", "Alarms by state.", labels=["state"])
        alarms.add_metric(["active"], stats.active)
        alarms.add_metric(["paused"], stats.paused)
        alarms.add_metric(["inactive"], stats.alarms - stats.active - stats.paused)
        yield alarms
        yield GaugeMetricFamily(
            "squall_alarms_scheduled", "Alarms with a next tick armed.", value=stats.scheduled
        )
        yield GaugeMetricFamily(
            "squall_alarm_fires_in_flight", "Alarm fires under way.", value=stats.in_flight
        )
        yield GaugeMetricFamily(
            "squall_alarms_held_back",
            "Alarms whose due tick this scheduler may not fire now (no sure lease, shard moved).",
            value=stats.held_back,
        )
        yield GaugeMetricFamily(
            "squall_alarm_fires_behind_seconds",
            "How late the earliest due alarm tick not yet fired is (0: the timer is on time).",
            value=stats.behind_ms / 1000,
        )
        yield GaugeMetricFamily(
            "squall_alarm_fire_lag_samples",
            "On-time fires in the lag window the percentiles are taken over.",
            value=stats.lag_samples,
        )
        for field, name, help_text in LAG_GAUGES:
            value = getattr(stats, field)
            if value is not None:  # no fire yet: no sample, rather than a made-up zero
                yield GaugeMetricFamily(name, help_text, value=value / 1000)

    def _readiness_metrics(self) -> Iterator[Metric]:
        checks = self._sources.readiness.checks()
        ready = GaugeMetricFamily(
            "squall_dependency_ready", "1 when the dependency check is ready.", labels=["check"]
        )
        state = GaugeMetricFamily(
            "squall_dependency_state",
            "1 for the check's current state, 0 for the others.",
            labels=["check", "state"],
        )
        for name, check in checks.items():
            ready.add_metric([name], 1 if check.ready else 0)
            for candidate in STATES:
                state.add_metric([name, candidate], 1 if check.state == candidate else 0)
        yield ready
        yield state


def _duration_histogram(counts: ActivationCounts) -> HistogramMetricFamily:
    bounds = [f"{bound / 1000:g}" for bound in DURATION_BOUNDS_MS] + ["+Inf"]
    cumulative = list(accumulate(counts.buckets))
    return HistogramMetricFamily(
        "squall_activation_duration_seconds",
        "How long sandboxes ran activations (the record's duration).",
        buckets=list(zip(bounds, cumulative, strict=True)),
        sum_value=counts.duration_sum_ms / 1000,
    )


def metrics_registry(sources: Sources) -> CollectorRegistry:
    """A registry of this platform's metrics only (never the process-global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SquallCollector(sources))
    return registry
