"""Namespaces, keys and limits: `squall admin` against the store of a running platform, and
every limit enforced with OpenWhisk's statuses and messages."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from squall.alarms.service import RetryPolicy
from squall.cli.main import cli
from squall.config import Settings
from squall.platform import Platform, build_platform
from squall.testing import LocalPostgres
from tests.conftest import GUEST_AUTH, GUEST_KEY, GUEST_UUID, ServerProcess, make_settings

ECHO = "def main(args):\n    return {'got': args}\n"
SLOW = "import time\ndef main(args):\n    time.sleep(args.get('s', 2))\n    return {'slept': 1}\n"
NS = "/api/v1/namespaces/_"


@asynccontextmanager
async def running(
    tmp_path: Path, tweak: Callable[[Settings], Settings] = lambda s: s
) -> AsyncIterator[tuple[Platform, httpx.AsyncClient]]:
    settings = replace(make_settings(tmp_path / "data"), guest_auth=GUEST_AUTH)
    platform = build_platform(tweak(settings))
    await platform.start()
    try:
        async with client(platform, (GUEST_UUID, GUEST_KEY)) as api:
            yield platform, api
    finally:
        await platform.close()


def client(platform: Platform, auth: tuple[str, str]) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=platform.app)
    return httpx.AsyncClient(transport=transport, base_url="http://squall", auth=auth, timeout=30)


async def admin(env: dict[str, str], *args: str) -> str:
    """`squall admin ...` as an operator runs it: offline, against the store (in a thread, as
    the command runs its own event loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["admin", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output.strip()


async def admin_fails(env: dict[str, str], *args: str) -> str:
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["admin", *args], env=env)
    assert result.exit_code != 0, result.output
    return result.output.strip()


def store_env(platform: Platform) -> dict[str, str]:
    return {"SQUALL_DATA_DIR": str(platform.settings.data_dir), "SQUALL_ENTITY_STORE": ""}


async def new_namespace(platform: Platform, name: str) -> httpx.AsyncClient:
    auth = await admin(store_env(platform), "user", "create", name)
    uid, _, key = auth.partition(":")
    return client(platform, (uid, key))


async def put_action(api: httpx.AsyncClient, name: str, code: str, **body: Any) -> httpx.Response:
    exec_ = {"kind": body.pop("kind", "python:3"), "code": code}
    return await api.put(f"{NS}/actions/{name}", json={"exec": exec_, **body})


async def until(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """Poll an async check until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {timeout_s} s")


async def seen(api: httpx.AsyncClient, key: str, value: Any) -> None:
    """Wait (bounded) until the running server applies a limit set offline: its /limits
    answer comes from the same cached identity the throttles read."""

    async def applied() -> bool:
        return bool((await api.get(f"{NS}/limits")).json().get(key) == value)

    await until(applied)


# ------------------------------------------------------------------------------ admin


async def test_user_create_rotate_delete_reach_the_running_server(tmp_path: Path) -> None:
    async with running(tmp_path) as (platform, _api):
        env = store_env(platform)
        async with await new_namespace(platform, "alice") as alice:
            assert (await alice.get("/api/v1/namespaces")).json() == ["alice"]
            assert (await alice.put(f"{NS}/triggers/t", json={})).status_code == 200
            assert "exists already" in await admin_fails(env, "user", "create", "alice")

            rotated = await admin(env, "user", "rotate", "alice")
            uid, _, key = rotated.partition(":")
            async with client(platform, (uid, key)) as fresh:
                assert (await fresh.get(f"{NS}/triggers/t")).status_code == 200

                async def old_key_refused() -> bool:
                    return (await alice.get(f"{NS}/triggers")).status_code == 401

                await until(old_key_refused)  # within the identity TTL (2 s)
                assert (await admin(env, "user", "get", "alice")).split() == ["alice", uid]

                await admin(env, "user", "delete", "alice")

                async def new_key_refused() -> bool:
                    return (await fresh.get(f"{NS}/triggers")).status_code == 401

                await until(new_key_refused)
        assert "does not exist" in await admin_fails(env, "user", "delete", "alice")
        assert "illegal characters" in await admin_fails(env, "user", "create", "bad name!")


async def test_limits_set_get_and_the_limits_endpoint(tmp_path: Path) -> None:
    async with running(tmp_path) as (platform, _api):
        env = store_env(platform)
        async with await new_namespace(platform, "bob") as bob:
            before = (await bob.get(f"{NS}/limits")).json()
            assert before["invocationsPerMinute"] == platform.settings.limits.invocations_per_minute
            assert "allowedKinds" not in before
            shown = json.loads(await admin(
                env, "limits", "set", "bob", "--invocations-per-minute", "7",
                "--concurrent-invocations", "3", "--fires-per-minute", "4",
                "--allowed-kinds", "python:3,python:3.11", "--max-action-memory", "1024",
                "--min-action-timeout", "500",
            ))  # fmt: skip
            assert shown["set"]["maxActionMemory"] == 1024 * 1024 * 1024
            assert shown["effective"]["invocationsPerMinute"] == 7

            async def reported() -> dict[str, Any] | None:
                limits: dict[str, Any] = (await bob.get(f"{NS}/limits")).json()
                return limits if limits["invocationsPerMinute"] == 7 else None

            limits = await until(reported)
            assert limits["concurrentInvocations"] == 3 and limits["firesPerMinute"] == 4
            assert limits["allowedKinds"] == ["python:3", "python:3.11"]
            assert limits["maxActionMemory"] == 1024 * 1024 * 1024
            assert limits["minActionTimeout"] == 500 and limits["maxActionTimeout"] == 300_000
            got = json.loads(await admin(env, "limits", "get", "bob"))
            assert got["set"]["concurrentInvocations"] == 3
            error = await admin_fails(env, "limits", "set", "bob", "--min-action-memory", "2048")
            assert "minActionMemory" in error and "maxActionMemory" in error
            assert "nothing to set" in await admin_fails(env, "limits", "set", "bob")
            await admin(env, "limits", "delete", "bob")

            async def reset() -> bool:
                limits = (await bob.get(f"{NS}/limits")).json()
                return bool(limits["concurrentInvocations"] == before["concurrentInvocations"])

            await until(reset)


async def test_admin_commands_on_postgresql(postgres_server: LocalPostgres, tmp_path: Path) -> None:
    import uuid

    url = postgres_server.url(schema=f"t_{uuid.uuid4().hex[:12]}")
    env = {"SQUALL_DATA_DIR": str(tmp_path / "data"), "SQUALL_ENTITY_STORE": url}
    auth = await admin(env, "user", "create", "carol")
    await admin(env, "limits", "set", "carol", "--invocations-per-minute", "9")
    shown = json.loads(await admin(env, "limits", "get", "carol"))
    assert shown["set"] == {"invocationsPerMinute": 9}
    rotated = await admin(env, "user", "rotate", "carol")
    assert rotated != auth
    assert (await admin(env, "user", "get", "carol")).split()[1] == rotated.partition(":")[0]
    # Limits survive a key rotation.
    assert json.loads(await admin(env, "limits", "get", "carol"))["set"] == shown["set"]
    await admin(env, "user", "delete", "carol")


# ------------------------------------------------------------------------------ throttles


async def test_invocations_per_minute_are_counted_per_namespace(tmp_path: Path) -> None:
    async with running(tmp_path) as (platform, guest):
        env = store_env(platform)
        async with await new_namespace(platform, "dave") as dave:
            assert (await put_action(dave, "echo", ECHO)).status_code == 200
            assert (await put_action(guest, "echo", ECHO)).status_code == 200
            await admin(env, "limits", "set", "dave", "--invocations-per-minute", "3")
            await seen(dave, "invocationsPerMinute", 3)
            answers = [await dave.post(f"{NS}/actions/echo") for _ in range(5)]
            assert [a.status_code for a in answers] == [202, 202, 202, 429, 429]
            assert answers[3].json()["error"] == (
                "Too many requests in the last minute (count: 4, allowed: 3)."
            )
            assert set(answers[3].json()) == {"error", "code"}
            # guest's own quota is untouched by dave's.
            assert (await guest.post(f"{NS}/actions/echo")).status_code == 202


async def test_concurrent_invocations_limit_and_flood_isolation(tmp_path: Path) -> None:
    """One namespace floods with slow activations; another's invocations are not slowed: they
    finish while the flood's first activations are still running."""
    async with running(tmp_path) as (platform, guest):
        env = store_env(platform)
        async with await new_namespace(platform, "flood") as flood:
            assert (await put_action(flood, "slow", SLOW)).status_code == 200
            assert (await put_action(guest, "echo", ECHO)).status_code == 200
            warm = await guest.post(f"{NS}/actions/echo?blocking=true", json={})
            assert warm.status_code == 200
            await admin(env, "limits", "set", "flood", "--concurrent-invocations", "2")
            await seen(flood, "concurrentInvocations", 2)

            answers = [await flood.post(f"{NS}/actions/slow", json={"s": 3}) for _ in range(10)]
            assert [a.status_code for a in answers] == [202, 202] + [429] * 8
            assert answers[2].json()["error"] == (
                "Too many concurrent requests in flight (count: 2, allowed: 2)."
            )
            started = time.monotonic()
            for _ in range(5):
                done = await guest.post(f"{NS}/actions/echo?blocking=true", json={"n": 1})
                assert done.status_code == 200
            guest_s = time.monotonic() - started
            first = answers[0].json()["activationId"]
            still_running = await flood.get(f"{NS}/activations/{first}")
            assert still_running.status_code == 404, "the flood finished before guest's calls"
            assert guest_s < 3.0

            # Completions free the slots again.
            async def admitted() -> bool:
                response = await flood.post(f"{NS}/actions/slow", json={"s": 0})
                return response.status_code == 202

            await until(admitted, timeout_s=15)


async def test_fires_per_minute_from_the_namespace_limits(tmp_path: Path) -> None:
    async with running(tmp_path) as (platform, guest):
        env = store_env(platform)
        assert (await put_action(guest, "echo", ECHO)).status_code == 200
        assert (await guest.put(f"{NS}/triggers/t", json={})).status_code == 200
        rule = {"trigger": "/_/t", "action": "/_/echo"}
        assert (await guest.put(f"{NS}/rules/r", json=rule)).status_code == 200
        await admin(env, "limits", "set", "guest", "--fires-per-minute", "2")
        await seen(guest, "firesPerMinute", 2)
        answers = [await guest.post(f"{NS}/triggers/t", json={}) for _ in range(3)]
        assert [a.status_code for a in answers] == [202, 202, 429]
        assert answers[2].json()["error"] == (
            "Too many requests in the last minute (count: 3, allowed: 2)."
        )


async def test_a_throttled_alarm_tick_is_recorded(tmp_path: Path) -> None:
    def one_fire_a_minute(s: Settings) -> Settings:
        return replace(s, limits=replace(s.limits, fires_per_minute=1))

    async with running(tmp_path, one_fire_a_minute) as (platform, guest):
        # Retries quickly, so the tick's attempts run out within the test.
        platform.alarms._retry = RetryPolicy(throttled_attempts=2, base_delay_s=0.01,
                                             max_delay_s=0.02)  # fmt: skip
        assert (await put_action(guest, "echo", ECHO)).status_code == 200
        # The quota counts fires per clock minute: the manual fire and the tick 1.5 s later
        # (with its retries) must fall in the same minute, or the tick is not throttled.
        second = datetime.now(UTC).second
        if second >= 50:
            await asyncio.sleep(60.2 - second)  # bounded: at most ~10 s
        feed = [{"key": "feed", "value": "/whisk.system/alarms/once"}]
        assert (await guest.put(f"{NS}/triggers/a", json={"annotations": feed})).status_code == 200
        rule = {"trigger": "/_/a", "action": "/_/echo"}
        assert (await guest.put(f"{NS}/rules/r", json=rule)).status_code == 200
        assert (await guest.post(f"{NS}/triggers/a", json={})).status_code == 202  # the quota
        when = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
        created = await guest.post(
            "/api/v1/namespaces/whisk.system/actions/alarms/once?blocking=true",
            json={"lifecycleEvent": "CREATE", "triggerName": "/_/a", "authKey": GUEST_AUTH,
                  "date": when, "trigger_payload": {"tick": 1}},
        )  # fmt: skip
        assert created.status_code == 200, created.text

        async def throttled_record() -> dict[str, Any] | None:
            listed = await guest.get(f"{NS}/activations", params={"name": "a", "docs": "true"})
            for record in listed.json():
                if {"key": "throttled", "value": True} in record["annotations"]:
                    return dict(record)
            return None

        record = await until(throttled_record, timeout_s=15)
        assert record["response"]["result"]["error"].startswith("Too many requests")
        assert record["response"]["result"]["payload"] == {"tick": 1}


# ------------------------------------------------------------------------------ kinds, ranges


async def test_allowed_kinds_and_action_limit_ranges(tmp_path: Path) -> None:
    async with running(tmp_path) as (platform, guest):
        env = store_env(platform)
        assert (await put_action(guest, "early", ECHO, kind="python:3")).status_code == 200
        await admin(env, "limits", "set", "guest", "--allowed-kinds", "python:3.11",
                    "--max-action-memory", "1024", "--min-action-memory", "256")  # fmt: skip
        await seen(guest, "allowedKinds", ["python:3.11"])

        refused = await put_action(guest, "other", ECHO, kind="python:3")
        assert refused.status_code == 403
        assert refused.json()["error"] == (
            "The supplied authentication is not authorized to access actions of kind 'python:3'."
        )
        invoked = await guest.post(f"{NS}/actions/early?blocking=true", json={})
        assert invoked.status_code == 403  # stored before the restriction: not runnable now

        big = await put_action(guest, "big", ECHO, kind="python:3.11", limits={"memory": 1024})
        assert big.status_code == 200, big.text  # above the system's 512, within the namespace's
        too_big = await put_action(guest, "huge", ECHO, kind="python:3.11",
                                   limits={"memory": 2048})  # fmt: skip
        assert too_big.status_code == 400
        assert too_big.json()["error"] == "Memory 2048 MB exceeds allowed threshold of 1024 MB."
        small = await put_action(guest, "small", ECHO, kind="python:3.11", limits={"memory": 128})
        assert small.status_code == 400
        assert small.json()["error"] == "Memory 128 MB below allowed threshold of 256 MB."
        ran = await guest.post(f"{NS}/actions/big?blocking=true", json={"x": 1})
        assert ran.status_code == 200 and ran.json()["response"]["result"] == {"got": {"x": 1}}


def test_openwhisk_limit_aliases() -> None:
    from squall.config import load_settings

    settings = load_settings({
        "LIMITS_ACTIONS_INVOKES_PERMINUTE": "11",
        "LIMITS_ACTIONS_INVOKES_CONCURRENT": "12",
        "LIMITS_TRIGGERS_FIRES_PERMINUTE": "13",
    })  # fmt: skip
    limits = settings.limits
    assert (limits.invocations_per_minute, limits.concurrent_invocations) == (11, 12)
    assert limits.fires_per_minute == 13


# ------------------------------------------------------------------------------ squall namespace


def test_namespace_commands_against_a_server(server: ServerProcess) -> None:
    connection = ["--apihost", server.url, "--auth", GUEST_AUTH]
    listed = CliRunner().invoke(cli, [*connection, "namespace", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.split() == ["namespaces", "guest"]
    got = CliRunner().invoke(cli, [*connection, "--json", "namespace", "get"])
    assert got.exit_code == 0, got.output
    body = json.loads(got.output)
    assert set(body) == {"actions", "triggers", "rules", "limits"}
    assert body["limits"]["invocationsPerMinute"] > 0
    shown = CliRunner().invoke(cli, [*connection, "namespace", "get"])
    assert shown.output.startswith("Entities in namespace: guest\nactions\n")
    assert "concurrentInvocations" in shown.output
