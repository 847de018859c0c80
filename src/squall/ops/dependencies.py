"""Background checks of the dependencies a process needs but does not own (Kafka, etcd).

A monitor probes its dependency, remembers the outcome as a readiness Check, and probes again:
soon after a failure (with backoff: 0.5 s doubling to 30 s) and every 10 s while it works. It
never raises and never exits: a refused login or a broker that is down makes the process not
ready, with the reason and the fix, until the dependency answers again. Each change is logged
once, not on every retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from squall.config import EtcdSettings, KafkaSettings
from squall.ops.readiness import OK, Check, scrub

log = logging.getLogger("squall.ops")

Probe = Callable[[], Awaitable[Check]]


class DependencyMonitor:
    """Keeps one dependency's Check current; see the module docstring."""

    def __init__(
        self,
        name: str,
        probe: Probe,
        *,
        first_retry_s: float = 0.5,
        max_retry_s: float = 30.0,
        healthy_interval_s: float = 10.0,
    ) -> None:
        self.name = name
        self._probe = probe
        self._first_retry, self._max_retry = first_retry_s, max_retry_s
        self._healthy_interval = healthy_interval_s
        self._check = Check("starting", f"{name} not checked yet")
        self._task: asyncio.Task[None] | None = None
        self.checked = asyncio.Event()  # set once the first probe has an outcome

    def check(self) -> Check:
        return self._check

    async def start(self) -> None:
        """Begin probing in the background; the first outcome arrives within the probe's time."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"squall-monitor-{self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = self._first_retry
        while True:
            self._remember(await self._safe_probe())
            if self._check.ready:
                delay = self._first_retry
                await asyncio.sleep(self._healthy_interval)
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry)

    async def _safe_probe(self) -> Check:
        try:
            return await self._probe()
        except Exception as exc:  # a probe that breaks is a reason, never a crash
            return Check("unavailable", scrub(f"{type(exc).__name__}: {exc}"), None)

    def _remember(self, check: Check) -> None:
        before, self._check = self._check, check
        self.checked.set()
        if check.ready and not before.ready:
            log.warning("readiness: %s is ok", self.name)
        elif not check.ready and check.reason != before.reason:
            log.warning("readiness: %s is not ready: %s (fix: %s)", self.name, check.reason,
                        check.fix)  # fmt: skip


def kafka_monitor(kafka: KafkaSettings) -> DependencyMonitor:
    """Connect, authenticate and read metadata; a refusal is known in well under 2 s."""
    from squall.bus import kafka_client

    async def probe() -> Check:
        diagnosis = await asyncio.to_thread(kafka_client.diagnose, kafka, 1.5)
        return OK if diagnosis.ok else Check("unavailable", diagnosis.reason, diagnosis.fix)

    return DependencyMonitor("kafka", probe)


def etcd_monitor(etcd: EtcdSettings) -> DependencyMonitor:
    """Status, login and a lease round trip on the first endpoint that answers."""
    from squall.coordination.etcd_http import EtcdGateway, shown

    async def probe() -> Check:
        reasons = []
        for endpoint in etcd.endpoints:
            try:
                async with EtcdGateway(endpoint, etcd, timeout_s=2.0) as gateway:
                    await gateway.status()
                    await gateway.login()
                    await gateway.lease_round_trip(f"{etcd.prefix}/readiness")
                return OK
            except Exception as exc:
                reasons.append(f"{shown(endpoint)}: {type(exc).__name__} {exc}".strip())
        return Check("unavailable", scrub("etcd cannot be used: " + "; ".join(reasons)),
                     "check SQUALL_ETCD_ENDPOINTS, SQUALL_ETCD_USERNAME/PASSWORD and that etcd "
                     "runs; `squall doctor` tells which step fails")  # fmt: skip

    return DependencyMonitor("etcd", probe)
