"""The Kafka and etcd readiness monitors against real servers: ok, refused, logged once."""

from __future__ import annotations

import asyncio
import logging
from itertools import pairwise

import pytest

from squall.config import EtcdSettings, KafkaSettings
from squall.ops.dependencies import DependencyMonitor, etcd_monitor, kafka_monitor
from squall.ops.readiness import Check
from squall.testing import LocalEtcd, LocalTansu, free_port


async def settled(monitor: DependencyMonitor, timeout_s: float = 10.0) -> Check:
    async with asyncio.timeout(timeout_s):
        await monitor.checked.wait()
    return monitor.check()


async def test_kafka_monitor_ok_then_refused(tansu: LocalTansu, tansu_auth: LocalTansu) -> None:
    ok = kafka_monitor(KafkaSettings(bootstrap=(tansu.bootstrap,)))
    refused = kafka_monitor(KafkaSettings(bootstrap=(tansu_auth.bootstrap,)))
    await ok.start()
    await refused.start()
    try:
        assert (await settled(ok)).ready
        check = await settled(refused)
        assert check.state == "unavailable" and "requires SASL or TLS" in (check.reason or "")
    finally:
        await ok.close()
        await refused.close()


async def test_etcd_monitor(etcd_server: LocalEtcd) -> None:
    up = etcd_monitor(EtcdSettings(endpoints=(etcd_server.endpoint,)))
    down = etcd_monitor(EtcdSettings(endpoints=(f"127.0.0.1:{free_port()}",)))
    await up.start()
    await down.start()
    try:
        assert (await settled(up)).ready
        check = await settled(down)
        assert check.state == "unavailable" and "SQUALL_ETCD_ENDPOINTS" in (check.fix or "")
    finally:
        await up.close()
        await down.close()


async def test_a_failing_probe_backs_off_logs_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[float] = []
    healthy = asyncio.Event()

    async def probe() -> Check:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) >= 4:
            healthy.set()
            return Check("ok")
        raise ConnectionError("refused")  # a probe that raises is a reason, not a crash

    monitor = DependencyMonitor("thing", probe, first_retry_s=0.05, healthy_interval_s=60)
    with caplog.at_level(logging.WARNING, logger="squall.ops"):
        await monitor.start()
        async with asyncio.timeout(5):
            await healthy.wait()
        await monitor.close()
    gaps = [b - a for a, b in pairwise(calls)]
    assert gaps[1] > gaps[0] * 1.5  # backoff grows
    messages = [r.getMessage() for r in caplog.records]
    assert sum("thing is not ready: ConnectionError: refused" in m for m in messages) == 1
    assert sum("thing is ok" in m for m in messages) == 1
    assert monitor.check().ready
