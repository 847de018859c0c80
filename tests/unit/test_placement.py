"""Placement: ownership drawn from a membership view, the same in every process."""

from __future__ import annotations

import asyncio

import pytest

from squall.cluster.placement import ALL_ROLES, Member, Placement, member_key, rendezvous
from squall.config import Settings
from squall.coordination.local import LocalCoordinator
from squall.errors import ConfigurationError
from squall.messages import QueueKey
from squall.platform import advertised_url, check_roles, member_id


def test_rendezvous_moves_only_the_keys_of_a_member_that_left() -> None:
    keys = [f"guest/action{i}" for i in range(2000)]
    three = ["scheduler0", "scheduler1", "scheduler2"]
    before = {key: rendezvous(key, three) for key in keys}
    assert set(before.values()) == set(three)  # spread over all of them
    after = {key: rendezvous(key, ["scheduler0", "scheduler2"]) for key in keys}
    moved = {key for key in keys if before[key] != after[key]}
    assert moved == {key for key in keys if before[key] == "scheduler1"}
    # The order of the view does not matter: every process computes the same owner.
    assert all(rendezvous(key, list(reversed(three))) == before[key] for key in keys[:200])
    assert rendezvous("x", []) is None


async def test_the_view_follows_the_coordinator_and_shards_split_between_schedulers() -> None:
    coordinator = LocalCoordinator()
    placement = Placement(coordinator, alarm_shards=64)
    changes: list[tuple[str, set[str], set[str]]] = []
    placement.on_change(lambda role, joined, left: changes.append((role, joined, left)))
    placement.start()
    for sid in ("scheduler0", "scheduler1"):
        await placement.register(Member("scheduler", sid, f"http://{sid}"))
    await asyncio.sleep(0.01)  # watches deliver from the event loop
    assert placement.live("scheduler") == ["scheduler0", "scheduler1"]
    shards = [placement.shards_of(sid) for sid in ("scheduler0", "scheduler1")]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert len(shards[0] | shards[1]) == 64
    owner = placement.alarm_owner("guest", "tick")
    assert owner is not None and placement.url_of("scheduler", owner) == f"http://{owner}"
    key = QueueKey("guest", "guest/hello", 1)
    assert placement.scheduler_for(key) in ("scheduler0", "scheduler1")
    await coordinator.delete(member_key("scheduler", "scheduler1"))
    await asyncio.sleep(0.01)
    assert placement.scheduler_for(key) == "scheduler0"
    assert placement.shards_of("scheduler0") == frozenset(range(64))
    assert ("scheduler", set(), {"scheduler1"}) in changes
    await placement.close()


async def test_invokers_with_room_take_turns() -> None:
    coordinator = LocalCoordinator()
    placement = Placement(coordinator)
    placement.start()
    await placement.register(Member("invoker", "invoker0", "u0", free_mb=4096))
    await placement.register(Member("invoker", "invoker1", "u1", free_mb=4096))
    await placement.register(Member("invoker", "invoker2", "u2", free_mb=128))
    await asyncio.sleep(0.01)
    picked = {placement.choose_invoker(256) for _ in range(10)}
    assert picked == {"invoker0", "invoker1"}  # invoker2 has no room for 256 MB
    assert placement.choose_invoker(100_000) in {"invoker0", "invoker1", "invoker2"}
    await placement.close()


def test_role_processes_refuse_embedded_backends_and_say_what_to_set() -> None:
    check_roles(Settings(), ALL_ROLES)  # standalone: anything goes
    with pytest.raises(ConfigurationError) as refused:
        check_roles(Settings(), frozenset({"scheduler"}))
    text = str(refused.value)
    for needed in ("SQUALL_BUS=kafka", "SQUALL_COORDINATION=etcd", "SQUALL_ENTITY_STORE",
                   "SQUALL_ACTIVATION_STORE", "squall standalone"):  # fmt: skip
        assert needed in text


def test_member_ids_and_the_advertised_url() -> None:
    assert member_id(Settings(), "scheduler", ALL_ROLES) == "scheduler0"
    named = Settings().with_overrides(port=4000)
    assert member_id(named, "invoker", frozenset({"invoker"})).startswith("invoker-")
    assert advertised_url(named) == "http://127.0.0.1:4000"
