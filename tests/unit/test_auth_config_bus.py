"""Keys and credentials, settings from the environment, and the in-process bus."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from squall.bus.memory import MemoryBus
from squall.config import load_settings
from squall.controller.auth import (
    Authenticator,
    generate_auth,
    hash_key,
    parse_basic,
    subject_record,
    verify_key,
)
from squall.errors import ConfigurationError
from squall.stores.sqlite import SqliteEntityStore


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_generated_auth_has_openwhisk_shape() -> None:
    uid, _, key = generate_auth().partition(":")
    assert len(uid) == 36 and len(key) == 64 and key.isalnum()


def test_keys_are_hashed_and_verified() -> None:
    stored = hash_key("secret")
    assert "secret" not in stored and stored.startswith("pbkdf2_sha256$")
    assert verify_key("secret", stored)
    assert not verify_key("Secret", stored)
    assert not verify_key("secret", "garbage")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("u:k"), ("u", "k")),
        (basic("u:k:with:colons"), ("u", "k:with:colons")),
        (basic("nocolon"), None),
        (basic(":k"), None),
        ("Basic !!!", None),
        ("Bearer abc", None),
        (None, None),
    ],
)
def test_parse_basic(header: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_basic(header) == expected


async def test_authenticator_checks_the_store(tmp_path: Path) -> None:
    store = SqliteEntityStore(tmp_path / "db")
    await store.start()
    try:
        auth = generate_auth()
        await store.put_subject(subject_record("guest", auth))
        authenticator = Authenticator(store)
        identity = await authenticator.identify(basic(auth))
        assert identity is not None and identity.namespace == "guest"
        assert await authenticator.identify(basic(auth + "x")) is None
        assert await authenticator.identify(basic("other:" + auth.partition(":")[2])) is None
        # A remembered header still answers after the key is deleted, until forgotten.
        await store.delete_subject("guest")
        assert await authenticator.identify(basic(auth)) is not None
        authenticator.forget()
        assert await authenticator.identify(basic(auth)) is None
    finally:
        await store.close()


def test_settings_from_environment() -> None:
    settings = load_settings(
        {
            "SQUALL_PORT": "4000",
            "SQUALL_DATA_DIR": "/tmp/x",
            "LIMITS_ACTIONS_INVOKES_CONCURRENT": "7",
            "SQUALL_PREWARM_COUNT": "0",
            "SQUALL_SCHEDULER_ALARM_FIRES_IN_FLIGHT": "512",
        }
    )
    assert settings.port == 4000 and settings.data_dir == Path("/tmp/x")
    assert settings.limits.concurrent_invocations == 7
    assert settings.invoker.prewarm_count == 0
    assert settings.scheduler.alarm_fires_in_flight == 512


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SQUALL_PORT": "abc"}, "env SQUALL_PORT.: 'abc' must be a whole number"),
        ({"SQUALL_PORT": "70000"}, "port 70000 is out of range"),
        ({"SQUALL_GUEST_AUTH": "no-colon"}, "SQUALL_GUEST_AUTH must be 'uuid:key'"),
        ({"SQUALL_PREWARM_COUNT": "-1"}, "SQUALL_PREWARM_COUNT must be 0 or more"),
        (
            {"SQUALL_SCHEDULER_ALARM_FIRES_IN_FLIGHT": "0"},
            "SQUALL_SCHEDULER_ALARM_FIRES_IN_FLIGHT must be at least 1",
        ),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(")):
        load_settings(env)


async def test_bus_groups_share_and_every_group_gets_everything() -> None:
    bus = MemoryBus()
    seen: dict[str, list[object]] = {"a1": [], "a2": [], "b": []}
    bus.subscribe("t", "a", seen["a1"].append)
    bus.subscribe("t", "a", seen["a2"].append)
    sub_b = bus.subscribe("t", "b", seen["b"].append)
    for n in range(4):
        bus.publish("t", n)
    assert seen == {"a1": [], "a2": [], "b": []}  # delivery never happens inside publish
    await asyncio.sleep(0)
    assert sorted(seen["a1"] + seen["a2"]) == [0, 1, 2, 3] and len(seen["a1"]) == 2
    assert seen["b"] == [0, 1, 2, 3]
    await sub_b.close()
    bus.publish("t", 9)
    await asyncio.sleep(0)
    assert seen["b"] == [0, 1, 2, 3]


async def test_a_failing_handler_does_not_stop_the_bus() -> None:
    bus = MemoryBus()
    got: list[object] = []

    def broken(message: object) -> None:
        raise RuntimeError("boom")

    bus.subscribe("t", "bad", broken)
    bus.subscribe("t", "good", got.append)
    bus.publish("t", 1)
    await asyncio.sleep(0)
    assert got == [1]


def test_configuration_error_is_not_a_crash() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings({"SQUALL_PORT": "0", "SQUALL_GUEST_AUTH": "x"})
    assert "port 0" in str(info.value) and "SQUALL_GUEST_AUTH" in str(info.value)
