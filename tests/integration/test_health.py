"""/healthz, /readyz and /metrics, in-process and on a real server, healthy or a store down."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from squall.alarms.service import AlarmStats
from squall.ops.metrics import ALARM_COUNTERS, LAG_GAUGES
from squall.ops.readiness import scrub
from squall.platform import Platform, build_platform
from squall.sandbox.process import ProcessSandboxFactory
from tests.conftest import (
    GUEST_KEY,
    GUEST_UUID,
    ServerProcess,
    free_port,
    make_settings,
    require,
    start_server,
    stop_server,
)
from tests.integration.test_alarm_feeds import feed, wire

CHECKS = {"entity_store", "activation_store", "scheduler_durations", "alarms", "sandbox"}
HELLO = "def main(args):\n    return {'hello': args.get('name', 'world')}\n"
SECRET = "hunter2-not-for-logs"


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://squall", auth=(GUEST_UUID, GUEST_KEY), timeout=30
    ) as api:
        yield api


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_healthz_answers_without_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", auth=None)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ready_with_every_check(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz", auth=None)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ready"] is True
    assert set(body["checks"]) == CHECKS
    for name, check in body["checks"].items():
        assert check == {"ready": True, "state": "ok", "reason": None, "fix": None}, name


async def test_degraded_durations_stay_ready(
    platform: Platform, client: httpx.AsyncClient
) -> None:
    platform.scheduler.durations_degraded = "the store is slow"
    response = await client.get("/readyz")
    assert response.status_code == 200
    check = response.json()["checks"]["scheduler_durations"]
    assert check["state"] == "degraded" and "the store is slow" in check["reason"]


async def test_unstarted_platform_reports_starting(tmp_path: Path) -> None:
    instance = build_platform(make_settings(tmp_path / "data"))
    try:
        ready, body = instance.readiness.report()
        assert ready is False
        states = {name: check["state"] for name, check in body["checks"].items()}
        assert states["alarms"] == "starting" and states["sandbox"] == "starting"
        assert states["entity_store"] == "starting"
    finally:
        assert isinstance(instance.sandboxes, ProcessSandboxFactory)
        shutil.rmtree(instance.sandboxes.work_root, ignore_errors=True)


async def test_metrics_count_an_invoke(client: httpx.AsyncClient) -> None:
    created = await client.put(
        "/api/v1/namespaces/_/actions/hello", json={"exec": {"kind": "python:3", "code": HELLO}}
    )
    assert created.status_code == 200, created.text
    before = samples((await client.get("/metrics")).text)
    key = ("squall_activations_total", (("status", "success"),))
    assert before[key] == 0
    invoked = await client.post("/api/v1/namespaces/_/actions/hello", params={"blocking": "true"})
    assert invoked.status_code == 200, invoked.text
    response = await client.get("/metrics", auth=None)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)
    assert after[key] == 1
    assert after[("squall_activation_duration_seconds_count", ())] == 1
    assert after[("squall_containers", (("state", "warm"),))] == 1
    assert after[("squall_dependency_ready", (("check", "activation_store"),))] == 1


async def test_metrics_count_alarm_fires(client: httpx.AsyncClient) -> None:
    _, trigger = await wire(client)
    created = await feed(client, "alarm", trigger, "CREATE", cron="* * * * * *")
    assert created.status_code == 200, created.text
    deadline = time.monotonic() + 10
    fired: dict[Any, float] = {}
    while time.monotonic() < deadline:
        fired = samples((await client.get("/metrics")).text)
        if fired[("squall_alarm_fires_total", ())] >= 1:
            break
        await asyncio.sleep(0.2)
    assert fired[("squall_alarm_fires_total", ())] >= 1
    assert fired[("squall_alarm_fires_delivered_total", ())] >= 1
    assert fired[("squall_alarms", (("state", "active"),))] == 1
    assert ("squall_alarm_fire_lag_p99_seconds", ()) in fired


def test_every_alarm_stat_is_exported() -> None:
    """A field added to AlarmStats must reach /metrics (or be named here on purpose)."""
    gauges = {"alarms", "active", "paused", "scheduled", "in_flight", "lag_samples", "held_back",
              "behind_ms"}
    exported = {f for f, _, _ in ALARM_COUNTERS} | {f for f, _, _ in LAG_GAUGES} | gauges
    assert {f.name for f in dataclasses.fields(AlarmStats)} == exported


def test_scrub_hides_url_passwords() -> None:
    text = f"PostgreSQL postgresql://squall:{SECRET}@db:5432/x failed: refused"
    assert SECRET not in scrub(text)
    assert "postgresql://squall:***@db:5432/x" in scrub(text)


# -- a real server --------------------------------------------------------------------------------


def test_server_healthy(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == CHECKS


@pytest.fixture
def unreachable_store_server(tmp_path: Path) -> Iterator[ServerProcess]:
    require(importlib.util.find_spec("psycopg_pool") is not None, "psycopg_pool (extra postgres)")
    closed_port = free_port()  # bound and released: nothing listens there
    url = f"postgresql://squall:{SECRET}@127.0.0.1:{closed_port}/squall?pool_timeout=1"
    server = start_server(
        tmp_path / "data", tmp_path / "server.log", {"SQUALL_ACTIVATION_STORE": url}
    )
    try:
        yield server
    finally:
        stop_server(server)


def test_server_with_unreachable_activation_store(unreachable_store_server: ServerProcess) -> None:
    server = unreachable_store_server
    ready = httpx.get(server.url + "/readyz", timeout=10)
    assert ready.status_code == 503, ready.text
    check = ready.json()["checks"]["activation_store"]
    assert check["ready"] is False and check["state"] == "unavailable"
    assert check["reason"] and "SQUALL_ACTIVATION_STORE" in check["fix"]
    assert ready.json()["checks"]["entity_store"]["ready"] is True
    assert httpx.get(server.url + "/healthz").status_code == 200
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert samples(metrics)[("squall_dependency_ready", (("check", "activation_store"),))] == 0
    for text in (ready.text, metrics):
        assert SECRET not in text
    assert server.process.poll() is None  # not ready, never dead
