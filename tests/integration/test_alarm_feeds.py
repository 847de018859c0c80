"""The /whisk.system/alarms feeds end to end: feed protocol, fires through rules, restarts."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from tests.conftest import GUEST_AUTH

ECHO = "def main(args):\n    return {'got': args}\n"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def wire(api: httpx.AsyncClient) -> tuple[str, str]:
    """An action, a trigger with a parameter, and an active rule between them."""
    action, trigger, rule = unique("act"), unique("trg"), unique("rule")
    ok = await api.put(
        f"/api/v1/namespaces/_/actions/{action}", json={"exec": {"kind": "python:3", "code": ECHO}}
    )
    assert ok.status_code == 200, ok.text
    ok = await api.put(
        f"/api/v1/namespaces/_/triggers/{trigger}",
        json={
            "parameters": [{"key": "from", "value": "trigger"}],
            "annotations": [{"key": "feed", "value": "/whisk.system/alarms/alarm"}],
        },
    )
    assert ok.status_code == 200, ok.text
    ok = await api.put(
        f"/api/v1/namespaces/_/rules/{rule}",
        json={"trigger": f"/_/{trigger}", "action": f"/_/{action}"},
    )
    assert ok.status_code == 200, ok.text
    return action, trigger


async def feed(
    api: httpx.AsyncClient, name: str, trigger: str, event: str, **params: Any
) -> httpx.Response:
    body = {
        "lifecycleEvent": event,
        "triggerName": f"/_/{trigger}",
        "authKey": GUEST_AUTH,
        **params,
    }
    return await api.post(
        f"/api/v1/namespaces/whisk.system/actions/alarms/{name}",
        params={"blocking": "true"},
        json=body,
    )


async def records_of(api: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    response = await api.get(
        "/api/v1/namespaces/_/activations", params={"name": name, "docs": "true", "limit": "200"}
    )
    assert response.status_code == 200
    return list(response.json())


async def test_cron_feed_fires_every_second_through_the_rule(api: httpx.AsyncClient) -> None:
    action, trigger = await wire(api)
    created = await feed(
        api, "alarm", trigger, "CREATE", cron="* * * * * *", trigger_payload={"tick": True}
    )
    assert created.status_code == 200, created.text
    assert created.json()["response"]["success"] is True
    read = (await feed(api, "alarm", trigger, "READ")).json()["response"]["result"]
    assert read["config"]["cron"] == "* * * * * *"
    assert read["status"]["active"] is True
    assert len(read["next"]) >= 2
    started = time.monotonic()
    fired: list[dict[str, Any]] = []
    while time.monotonic() - started < 6 and len(fired) < 2:
        await asyncio.sleep(0.2)
        fired = await records_of(api, action)
    assert len(fired) >= 2, fired
    got = fired[0]["response"]["result"]["got"]
    assert got == {"from": "trigger", "tick": True}
    trigger_ids = {r["activationId"] for r in await records_of(api, trigger)}
    assert all(r["cause"] in trigger_ids for r in fired)
    deleted = await feed(api, "alarm", trigger, "DELETE")
    assert deleted.status_code == 200, deleted.text
    await asyncio.sleep(1.2)  # a fire already in flight may still land
    settled = len(await records_of(api, action))
    await asyncio.sleep(1.5)
    assert len(await records_of(api, action)) == settled


async def test_pause_and_resume(api: httpx.AsyncClient) -> None:
    action, trigger = await wire(api)
    assert (await feed(api, "alarm", trigger, "CREATE", cron="* * * * * *")).status_code == 200
    paused = await feed(api, "alarm", trigger, "PAUSE")
    assert paused.status_code == 200 and paused.json()["response"]["result"]["paused"] is True
    await asyncio.sleep(1.5)
    before = len(await records_of(api, action))
    await asyncio.sleep(1.5)
    assert len(await records_of(api, action)) == before
    resumed = await feed(api, "alarm", trigger, "UNPAUSE")
    assert resumed.status_code == 200
    for _ in range(40):
        await asyncio.sleep(0.1)
        if len(await records_of(api, action)) > before:
            break
    assert len(await records_of(api, action)) > before
    await feed(api, "alarm", trigger, "DELETE")


async def test_feed_errors_are_application_errors(api: httpx.AsyncClient) -> None:
    _, trigger = await wire(api)
    bad_cron = await feed(api, "alarm", trigger, "CREATE", cron="not a cron")
    assert bad_cron.status_code == 502
    assert "cron" in bad_cron.json()["response"]["result"]["error"]
    bad_zone = await feed(api, "alarm", trigger, "CREATE", cron="* * * * *", timezone="Mars/Base")
    assert bad_zone.json()["response"]["result"]["error"] == "Invalid timezone."
    missing = await feed(api, "alarm", unique("nope"), "CREATE", cron="* * * * *")
    assert (
        missing.status_code == 502
        and "does not exist" in missing.json()["response"]["result"]["error"]
    )
    other_ns = await api.post(
        "/api/v1/namespaces/whisk.system/actions/alarms/alarm?blocking=true",
        json={
            "lifecycleEvent": "CREATE",
            "triggerName": f"/someone/{trigger}",
            "cron": "* * * * *",
        },
    )
    assert (
        other_ns.status_code == 502
        and "not authorized" in other_ns.json()["response"]["result"]["error"]
    )
    no_event = await feed(api, "alarm", trigger, "EXPLODE")
    assert no_event.status_code == 502
    assert (await feed(api, "alarm", trigger, "READ")).status_code == 502  # no alarm yet
    once = await feed(api, "once", trigger, "CREATE", date="2001-01-01T00:00:00Z")
    assert once.status_code == 502 and "future" in once.json()["response"]["result"]["error"]


async def test_once_feed_with_delete_after_fire(api: httpx.AsyncClient) -> None:
    action, trigger = await wire(api)
    soon = int(time.time() * 1000) + 1500
    created = await feed(api, "once", trigger, "CREATE", date=soon, deleteAfterFire="true")
    assert created.status_code == 200, created.text
    for _ in range(60):
        await asyncio.sleep(0.1)
        if await records_of(api, action):
            break
    assert len(await records_of(api, action)) == 1
    for _ in range(30):
        if (await api.get(f"/api/v1/namespaces/_/triggers/{trigger}")).status_code == 404:
            break
        await asyncio.sleep(0.1)
    assert (await api.get(f"/api/v1/namespaces/_/triggers/{trigger}")).status_code == 404


def every_second_alarm(api: httpx.Client, **params: str) -> None:
    """Action `echo`, trigger `tick`, rule `r`, and an alarm firing `tick` every second."""
    api.put("/api/v1/namespaces/_/actions/echo", json={"exec": {"kind": "python:3", "code": ECHO}})
    api.put("/api/v1/namespaces/_/triggers/tick", json={})
    api.put("/api/v1/namespaces/_/rules/r", json={"trigger": "/_/tick", "action": "/_/echo"})
    created = api.post(
        "/api/v1/namespaces/whisk.system/actions/alarms/alarm?blocking=true",
        json={
            "lifecycleEvent": "CREATE",
            "triggerName": "/_/tick",
            "cron": "* * * * * *",
            **params,
        },
    )
    assert created.status_code == 200, created.text


def test_alarm_survives_a_restart_and_catches_up_once(tmp_path: Any) -> None:
    """Down for ~3 s with the default misfire policy (fire_once): one catch-up, no duplicates."""
    from tests.conftest import GUEST_KEY, GUEST_UUID, start_server, stop_server

    data = tmp_path / "data"
    server = start_server(data, tmp_path / "first.log")
    try:
        with httpx.Client(base_url=server.url, auth=(GUEST_UUID, GUEST_KEY), timeout=30) as api:
            every_second_alarm(api)
            time.sleep(2.5)
    finally:
        stop_server(server)
    stopped_at = time.time()
    time.sleep(3)
    again = start_server(data, tmp_path / "second.log")
    try:
        with httpx.Client(base_url=again.url, auth=(GUEST_UUID, GUEST_KEY), timeout=30) as api:
            time.sleep(2.5)
            fires = api.get(
                "/api/v1/namespaces/_/activations", params={"name": "tick", "limit": "200"}
            ).json()
    finally:
        stop_server(again)
    starts = sorted(f["start"] / 1000 for f in fires)
    ids = [f["activationId"] for f in fires]
    assert len(ids) == len(set(ids))
    gap = [t for t in starts if stopped_at < t]
    # After the restart: one catch-up for the missed seconds, then one fire a second.
    assert 2 <= len(gap) <= 5, starts
    assert any(t < stopped_at for t in starts)


def test_cli_feed_trigger_against_a_real_server(server: Any, tmp_path: Any) -> None:
    """`squall trigger create T --feed /whisk.system/alarms/alarm -p cron ...` as with wsk."""
    from tests.integration.test_server import squall

    assert (
        squall(
            server, tmp_path, "property", "set", "--apihost", server.url, "--auth", GUEST_AUTH
        ).returncode
        == 0
    )
    code = tmp_path / "echo.py"
    code.write_text(ECHO)
    trigger, action, rule = unique("cli-trg"), unique("cli-act"), unique("cli-rule")
    assert squall(server, tmp_path, "action", "create", action, str(code)).returncode == 0
    created = squall(
        server,
        tmp_path,
        "trigger",
        "create",
        trigger,
        "--feed",
        "/whisk.system/alarms/alarm",
        "-p",
        "cron",
        "* * * * * *",
        "-p",
        "trigger_payload",
        '{"via": "cli"}',
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert squall(server, tmp_path, "rule", "create", rule, trigger, action).returncode == 0
    with httpx.Client(base_url=server.url, auth=tuple(GUEST_AUTH.split(":")), timeout=30) as api:
        fired = []
        for _ in range(40):
            time.sleep(0.2)
            fired = api.get(
                "/api/v1/namespaces/_/activations", params={"name": action, "docs": "true"}
            ).json()
            if fired:
                break
        assert fired and fired[0]["response"]["result"]["got"] == {"via": "cli"}
        deleted = squall(server, tmp_path, "trigger", "delete", trigger)
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr
        read = api.post(
            "/api/v1/namespaces/whisk.system/actions/alarms/alarm?blocking=true",
            json={"lifecycleEvent": "READ", "triggerName": f"/_/{trigger}"},
        )
        assert read.status_code == 502  # trigger and alarm are both gone


async def test_deleting_the_trigger_removes_its_alarm(api: httpx.AsyncClient) -> None:
    _, trigger = await wire(api)
    assert (await feed(api, "alarm", trigger, "CREATE", cron="0 0 1 1 *")).status_code == 200
    assert (await api.delete(f"/api/v1/namespaces/_/triggers/{trigger}")).status_code == 200
    assert (await api.put(f"/api/v1/namespaces/_/triggers/{trigger}", json={})).status_code == 200
    read = await feed(api, "alarm", trigger, "READ")
    assert read.status_code == 502 and "has no alarm" in read.json()["response"]["result"]["error"]


def test_sigkill_around_fires_loses_no_alarm_and_repeats_no_tick(tmp_path: Any) -> None:
    """SIGKILL mid-stream of every-second fires, restart: the alarm is still there, fires go
    on, no trigger activation id repeats and no tick ran its action twice."""
    import signal as signals

    from tests.conftest import GUEST_KEY, GUEST_UUID, start_server, stop_server

    data = tmp_path / "data"
    server = start_server(data, tmp_path / "first.log")
    try:
        with httpx.Client(base_url=server.url, auth=(GUEST_UUID, GUEST_KEY), timeout=30) as api:
            every_second_alarm(api, misfire="fire_all")
            time.sleep(2.97)  # kill right around a tick
        server.process.send_signal(signals.SIGKILL)
        server.process.wait(timeout=10)
    finally:
        stop_server(server)
    time.sleep(1.5)
    again = start_server(data, tmp_path / "second.log")
    try:
        with httpx.Client(base_url=again.url, auth=(GUEST_UUID, GUEST_KEY), timeout=30) as api:
            time.sleep(2.5)
            read = api.post(
                "/api/v1/namespaces/whisk.system/actions/alarms/alarm?blocking=true",
                json={"lifecycleEvent": "READ", "triggerName": "/_/tick"},
            )
            assert read.status_code == 200, read.text
            assert read.json()["response"]["result"]["config"]["cron"] == "* * * * * *"
            ticks = api.get(
                "/api/v1/namespaces/_/activations", params={"name": "tick", "limit": "200"}
            ).json()
            runs = api.get(
                "/api/v1/namespaces/_/activations",
                params={"name": "echo", "limit": "200", "docs": "true"},
            ).json()
    finally:
        stop_server(again)
    tick_ids = [t["activationId"] for t in ticks]
    assert len(tick_ids) == len(set(tick_ids)) >= 4
    causes = [r["cause"] for r in runs]
    assert len(causes) == len(set(causes)), "a tick ran its action twice"
    assert set(causes) <= set(tick_ids)
