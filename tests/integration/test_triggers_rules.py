"""Triggers and rules, in-process and against a real server process."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import httpx
import pytest

from squall.controller.errors import ApiError
from squall.platform import Platform
from tests.conftest import GUEST_KEY, GUEST_UUID
from tests.integration.test_api import assert_error, create, poll, unique

ECHO = "def main(args):\n    return args\n"
NS = "/api/v1/namespaces/_"


async def put_trigger(api: httpx.AsyncClient, name: str, **body: Any) -> dict[str, Any]:
    response = await api.put(f"{NS}/triggers/{name}", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def put_rule(
    api: httpx.AsyncClient, name: str, trigger: Any, action: Any, **query: str
) -> httpx.Response:
    return await api.put(
        f"{NS}/rules/{name}", json={"trigger": trigger, "action": action}, params=query
    )


async def set_status(api: httpx.AsyncClient, rule: str, status: str) -> httpx.Response:
    return await api.post(f"{NS}/rules/{rule}", json={"status": status})


async def fire(api: httpx.AsyncClient, trigger: str, payload: Any = None) -> httpx.Response:
    return await api.post(f"{NS}/triggers/{trigger}", json=payload if payload is not None else {})


async def activations_of(
    api: httpx.AsyncClient, name: str, count: int, attempts: int = 200
) -> list[dict[str, Any]]:
    """Full records of `name`, once at least `count` exist (bounded wait)."""
    records: list[dict[str, Any]] = []
    for _ in range(attempts):
        response = await api.get(f"{NS}/activations", params={"name": name, "docs": "true"})
        assert response.status_code == 200, response.text
        records = response.json()
        if len(records) >= count:
            return records
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}: {len(records)} activations, wanted {count}")


async def rule_setup(api: httpx.AsyncClient) -> tuple[str, str, str]:
    """An echo action, a trigger and an active rule connecting them."""
    action, trigger, rule = unique("act"), unique("trg"), unique("rul")
    await create(api, action, code=ECHO)
    await put_trigger(api, trigger)
    response = await put_rule(api, rule, f"/_/{trigger}", f"/_/{action}")
    assert response.status_code == 200, response.text
    return action, trigger, rule


# ------------------------------------------------------------------------------ triggers


async def test_trigger_lifecycle(api: httpx.AsyncClient) -> None:
    name = unique("trg")
    created = await put_trigger(
        api,
        name,
        parameters=[{"key": "a", "value": 1}],
        annotations=[{"key": "description", "value": "t"}],
    )
    assert created["namespace"] == "guest" and created["name"] == name
    assert created["version"] == "0.0.1" and created["limits"] == {}
    assert created["parameters"] == [{"key": "a", "value": 1}]
    assert created["publish"] is False and "rules" not in created
    assert_error(await api.put(f"{NS}/triggers/{name}", json={}), 409, "already exists")

    updated = await api.put(
        f"{NS}/triggers/{name}",
        params={"overwrite": "true"},
        json={"annotations": [{"key": "description", "value": "u"}]},
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == "0.0.2"
    got = (await api.get(f"{NS}/triggers/{name}")).json()
    assert got["parameters"] == [{"key": "a", "value": 1}]  # kept: not in the update
    assert got["annotations"] == [{"key": "description", "value": "u"}]

    listed = (await api.get(f"{NS}/triggers")).json()
    mine = [t for t in listed if t["name"] == name]
    assert len(mine) == 1 and "parameters" not in mine[0] and mine[0]["version"] == "0.0.2"
    count = (await api.get(f"{NS}/triggers", params={"count": "true"})).json()
    assert count["triggers"] >= 1
    page = (await api.get(f"{NS}/triggers", params={"limit": "1"})).json()
    assert len(page) == 1

    deleted = await api.delete(f"{NS}/triggers/{name}")
    assert deleted.status_code == 200 and deleted.json()["name"] == name
    assert_error(await api.get(f"{NS}/triggers/{name}"), 404, "does not exist")
    assert_error(await api.delete(f"{NS}/triggers/{name}"), 404)


async def test_an_empty_body_creates_a_trigger(api: httpx.AsyncClient) -> None:
    name = unique("trg")
    response = await api.put(f"{NS}/triggers/{name}")
    assert response.status_code == 200, response.text
    assert response.json()["parameters"] == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[1]", "malformed"),
        (b"{nope", "malformed"),
        (b'{"parameters": "x"}', "parameters"),
        (b'{"annotations": [{"key": "feed", "value": "a/b/c/d"}]}', "Feed name is not valid"),
        (b'{"limits": 5}', "limits"),
    ],
)
async def test_bad_trigger_bodies(api: httpx.AsyncClient, body: bytes, fragment: str) -> None:
    response = await api.put(
        f"{NS}/triggers/{unique('trg')}",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, fragment)


async def test_names_are_unique_across_collections(api: httpx.AsyncClient) -> None:
    action, trigger, _ = await rule_setup(api)
    assert_error(await api.put(f"{NS}/triggers/{action}", json={}), 409)
    assert_error(
        await api.put(f"{NS}/triggers/{action}", json={}, params={"overwrite": "true"}), 409
    )
    assert_error(await put_rule(api, trigger, trigger, action), 409)
    assert_error(await put_rule(api, action, trigger, action), 409)


async def test_bad_names_methods_and_namespaces(api: httpx.AsyncClient) -> None:
    assert_error(await api.put(f"{NS}/triggers/bad$name", json={}), 400, "illegal")
    assert_error(await api.get(f"{NS}/rules/bad$name"), 400, "illegal")
    assert_error(await api.patch(f"{NS}/triggers/x"), 405)
    assert_error(await api.patch(f"{NS}/rules/x"), 405)
    assert_error(await api.get(f"{NS}/triggers/x/y"), 404)
    assert_error(await api.get("/api/v1/namespaces/someone/triggers"), 403)
    assert_error(await api.post("/api/v1/namespaces/someone/triggers/x", json={}), 403)
    assert_error(await api.get("/api/v1/namespaces/someone/rules/x"), 403)
    assert_error(await api.get(f"{NS}/triggers", params={"limit": "201"}), 400, "range")


# --------------------------------------------------------------------------------- rules


async def test_rule_lifecycle(api: httpx.AsyncClient) -> None:
    action, trigger = unique("act"), unique("trg")
    await create(api, action, code=ECHO)
    await put_trigger(api, trigger)
    name = unique("rul")

    response = await put_rule(api, name, f"/_/{trigger}", f"/_/{action}")
    assert response.status_code == 200, response.text
    rule = response.json()
    assert rule["status"] == "active" and rule["version"] == "0.0.1"
    assert rule["trigger"] == {"path": "guest", "name": trigger}
    assert rule["action"] == {"path": "guest", "name": action}
    rules_map = (await api.get(f"{NS}/triggers/{trigger}")).json()["rules"]
    assert rules_map == {
        f"guest/{name}": {"action": {"path": "guest", "name": action}, "status": "active"}
    }
    assert_error(await put_rule(api, name, trigger, action), 409, "already exists")

    got = (await api.get(f"{NS}/rules/{name}")).json()
    assert got["status"] == "active" and got["name"] == name
    listed = [r for r in (await api.get(f"{NS}/rules")).json() if r["name"] == name]
    assert [r["status"] for r in listed] == ["active"]
    assert (await api.get(f"{NS}/rules", params={"count": "true"})).json()["rules"] >= 1

    disabled = await set_status(api, name, "inactive")
    assert disabled.status_code == 200 and disabled.json()["status"] == "inactive"
    assert (await set_status(api, name, "inactive")).status_code == 200  # already: still 200
    rules_map = (await api.get(f"{NS}/triggers/{trigger}")).json()["rules"]
    assert rules_map[f"guest/{name}"]["status"] == "inactive"
    assert (await api.get(f"{NS}/rules/{name}")).json()["status"] == "inactive"
    enabled = await set_status(api, name, "active")
    assert enabled.status_code == 200 and enabled.json()["status"] == "active"

    deleted = await api.delete(f"{NS}/rules/{name}")
    assert deleted.status_code == 200 and deleted.json()["name"] == name
    assert "rules" not in (await api.get(f"{NS}/triggers/{trigger}")).json()
    assert_error(await api.get(f"{NS}/rules/{name}"), 404)
    assert_error(await api.delete(f"{NS}/rules/{name}"), 404)


async def test_rule_names_in_every_form(api: httpx.AsyncClient) -> None:
    action, trigger = unique("act"), unique("trg")
    await create(api, action, code=ECHO)
    await put_trigger(api, trigger)
    forms: list[tuple[Any, Any]] = [
        (f"/_/{trigger}", f"/_/{action}"),  # what the JS client sends
        (f"/guest/{trigger}", f"/guest/{action}"),  # what wsk sends
        (trigger, action),
        ({"path": "guest", "name": trigger}, {"path": "guest", "name": action}),
    ]
    for given_trigger, given_action in forms:
        name = unique("rul")
        response = await put_rule(api, name, given_trigger, given_action)
        assert response.status_code == 200, (given_trigger, response.text)
        rule = response.json()
        assert rule["trigger"] == {"path": "guest", "name": trigger}
        assert rule["action"] == {"path": "guest", "name": action}
    rules_map = (await api.get(f"{NS}/triggers/{trigger}")).json()["rules"]
    assert len(rules_map) == len(forms)


async def test_rule_update_moves_it_between_triggers(api: httpx.AsyncClient) -> None:
    action, trigger, name = await rule_setup(api)
    other_action, other_trigger = unique("act"), unique("trg")
    await create(api, other_action, code=ECHO)
    await put_trigger(api, other_trigger)
    await set_status(api, name, "inactive")

    response = await put_rule(api, name, other_trigger, other_action, overwrite="true")
    assert response.status_code == 200, response.text
    rule = response.json()
    assert rule["version"] == "0.0.2" and rule["status"] == "inactive"  # status is kept
    assert rule["trigger"]["name"] == other_trigger and rule["action"]["name"] == other_action
    assert "rules" not in (await api.get(f"{NS}/triggers/{trigger}")).json()
    moved = (await api.get(f"{NS}/triggers/{other_trigger}")).json()["rules"]
    assert moved == {
        f"guest/{name}": {"action": {"path": "guest", "name": other_action}, "status": "inactive"}
    }
    # An update naming only the action keeps the trigger.
    only_action = await api.put(
        f"{NS}/rules/{name}", params={"overwrite": "true"}, json={"action": f"/_/{action}"}
    )
    assert only_action.status_code == 200, only_action.text
    assert only_action.json()["trigger"]["name"] == other_trigger
    assert only_action.json()["version"] == "0.0.3"


async def test_rule_references_must_exist(api: httpx.AsyncClient) -> None:
    action, trigger = unique("act"), unique("trg")
    await create(api, action, code=ECHO)
    await put_trigger(api, trigger)
    # OpenWhisk answers 400 (not 404) naming what is missing (Rules.scala, RulesApiTests).
    missing_action = await put_rule(api, unique("rul"), f"/_/{trigger}", "/_/no-such-action")
    assert_error(missing_action, 400, "action /guest/no-such-action does not exist")
    missing_trigger = await put_rule(api, unique("rul"), "/_/no-such-trigger", f"/_/{action}")
    assert_error(missing_trigger, 400, "trigger /guest/no-such-trigger does not exist")
    only_trigger = await api.put(f"{NS}/rules/{unique('rul')}", json={"trigger": trigger})
    assert_error(only_trigger, 400, "rule requires a valid trigger and a valid action")
    assert_error(await api.put(f"{NS}/rules/{unique('rul')}"), 400, "rule requires")
    elsewhere = await put_rule(api, unique("rul"), f"/someone/{trigger}", action)
    assert_error(elsewhere, 403, "not authorized")
    assert_error(await put_rule(api, unique("rul"), "/_/a/b", action), 400, "no package")
    assert_error(await put_rule(api, unique("rul"), trigger, "bad$name"), 400, "not valid")
    assert_error(await put_rule(api, unique("rul"), trigger, 5), 400, "not valid")


@pytest.mark.parametrize(
    "body", [b"", b"[1]", b'{"status": "maybe"}', b'{"state": "active"}', b"{broken"]
)
async def test_bad_rule_status_bodies(api: httpx.AsyncClient, body: bytes) -> None:
    _, _, rule = await rule_setup(api)
    response = await api.post(
        f"{NS}/rules/{rule}", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "malformed")
    assert_error(await set_status(api, unique("rul"), "active"), 404)


async def test_deleting_a_trigger_leaves_its_rules(api: httpx.AsyncClient) -> None:
    _, trigger, rule = await rule_setup(api)
    assert (await api.delete(f"{NS}/triggers/{trigger}")).status_code == 200
    got = await api.get(f"{NS}/rules/{rule}")
    assert got.status_code == 200 and got.json()["status"] == "inactive"
    enabling = await set_status(api, rule, "active")
    assert_error(enabling, 404, "Only rules with existing triggers can be activated")
    assert (await set_status(api, rule, "inactive")).status_code == 200
    assert_error(await fire(api, trigger), 404)
    assert (await api.delete(f"{NS}/rules/{rule}")).status_code == 200


# ---------------------------------------------------------------------------------- fire


async def test_fire_without_an_active_rule_is_204(api: httpx.AsyncClient) -> None:
    trigger = unique("trg")
    await put_trigger(api, trigger)
    response = await fire(api, trigger, {"x": 1})
    assert response.status_code == 204 and response.content == b""
    assert "x-request-id" in response.headers

    _, with_rule, rule = await rule_setup(api)
    await set_status(api, rule, "inactive")
    assert (await fire(api, with_rule)).status_code == 204
    for name in (trigger, with_rule):
        count = await api.get(f"{NS}/activations", params={"name": name, "count": "true"})
        assert count.json() == {"activations": 0}


async def test_fire_invokes_each_active_rule(api: httpx.AsyncClient) -> None:
    first, second, idle = unique("act"), unique("act"), unique("act")
    for action in (first, second, idle):
        await create(api, action, code=ECHO)
    trigger = unique("trg")
    await put_trigger(api, trigger, parameters=[{"key": "a", "value": 1}, {"key": "b", "value": 2}])
    rules = {unique("rul"): action for action in (first, second, idle)}
    for rule, action in rules.items():
        assert (await put_rule(api, rule, f"/_/{trigger}", f"/_/{action}")).status_code == 200
    idle_rule = next(r for r, a in rules.items() if a == idle)
    await set_status(api, idle_rule, "inactive")

    response = await fire(api, trigger, {"b": 3, "c": "x"})
    assert response.status_code == 202, response.text
    trigger_id = response.json()["activationId"]
    assert response.headers["x-openwhisk-activation-id"] == trigger_id
    assert len(trigger_id) == 32

    record = await poll(api, trigger_id)
    assert record["name"] == trigger and record["namespace"] == "guest"
    assert record["subject"] == "guest" and record["version"] == "0.0.1"
    assert record["duration"] == 0 and record["end"] == record["start"]
    assert record["response"]["success"] is True
    assert record["response"]["result"] == {"b": 3, "c": "x"}  # the payload, as OpenWhisk
    logs = {entry["rule"]: entry for entry in map(json.loads, record["logs"])}
    assert set(logs) == {f"guest/{rule}" for rule in rules}
    merged = {"a": 1, "b": 3, "c": "x"}
    for rule, action in rules.items():
        entry = logs[f"guest/{rule}"]
        assert entry["action"] == f"guest/{action}"
        if action == idle:
            assert entry["statusCode"] == 1 and entry["success"] is False
            assert entry["error"] == (
                f"Rule 'guest/{rule}' is inactive, action 'guest/{idle}' was not activated."
            )
            continue
        assert entry["statusCode"] == 0 and entry["success"] is True
        (invoked,) = await activations_of(api, action, 1)
        assert invoked["activationId"] == entry["activationId"]
        assert invoked["cause"] == trigger_id
        assert invoked["response"]["result"] == merged
    listed = (await api.get(f"{NS}/activations", params={"name": trigger})).json()
    assert [a["activationId"] for a in listed] == [trigger_id]
    count = await api.get(f"{NS}/activations", params={"name": idle, "count": "true"})
    assert count.json() == {"activations": 0}


async def test_fire_with_a_deleted_action_records_the_error(api: httpx.AsyncClient) -> None:
    action, trigger, rule = await rule_setup(api)
    assert (await api.delete(f"{NS}/actions/{action}")).status_code == 200
    response = await fire(api, trigger)
    assert response.status_code == 202, response.text
    record = await poll(api, response.json()["activationId"])
    (entry,) = map(json.loads, record["logs"])
    assert entry == {
        "statusCode": 1,
        "success": False,
        "error": "The requested resource does not exist.",
        "rule": f"guest/{rule}",
        "action": f"guest/{action}",
    }


async def test_bad_fires(api: httpx.AsyncClient) -> None:
    assert_error(await fire(api, unique("trg")), 404, "does not exist")
    _, trigger, _ = await rule_setup(api)
    for body in (b"[1]", b'"text"', b"{broken"):
        response = await api.post(
            f"{NS}/triggers/{trigger}", content=body, headers={"content-type": "application/json"}
        )
        assert_error(response, 400, "malformed")
    too_big = await fire(api, trigger, {"blob": "x" * (1024 * 1024 + 10)})
    assert_error(too_big, 413, "larger than allowed")
    empty = await api.post(f"{NS}/triggers/{trigger}")  # no body at all is an empty payload
    assert empty.status_code == 202, empty.text


# --------------------------------------------------------------- fires from inside Squall


async def test_fire_trigger_with_a_fixed_id_fires_once(platform: Platform) -> None:
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://squall", auth=(GUEST_UUID, GUEST_KEY), timeout=30
    ) as api:
        action, trigger, _ = await rule_setup(api)
        controller = platform.controller
        assert await controller.system_identity("nobody") is None
        identity = await controller.system_identity("guest")
        assert identity is not None and identity.api_key is None
        assert identity.namespace == "guest" and identity.subject == "guest"

        tick = "0123456789abcdef" * 2
        fired = await asyncio.gather(
            controller.fire_trigger(identity, trigger, {"n": 1}, activation_id=tick),
            controller.fire_trigger(identity, f"/_/{trigger}", {"n": 1}, activation_id=tick),
        )
        assert list(fired) == [tick, tick]
        again = await controller.fire_trigger(
            identity, f"/guest/{trigger}", {"n": 1}, activation_id=tick
        )
        assert again == tick
        record = await poll(api, tick)
        assert record["name"] == trigger and len(record["logs"]) == 1
        (invoked,) = await activations_of(api, action, 1)
        assert invoked["cause"] == tick and invoked["response"]["result"] == {"n": 1}
        await asyncio.sleep(0.3)
        count = await api.get(f"{NS}/activations", params={"name": action, "count": "true"})
        assert count.json() == {"activations": 1}

        other = await controller.fire_trigger(identity, trigger, {})
        assert other is not None and other != tick
        with pytest.raises(ValueError, match="activation id"):
            await controller.fire_trigger(identity, trigger, {}, activation_id="not-hex")
        with pytest.raises(ApiError) as missing:
            await controller.fire_trigger(identity, "no-such-trigger", {}, activation_id=tick[::-1])
        assert missing.value.status == 404
        with pytest.raises(ApiError) as elsewhere:
            await controller.fire_trigger(identity, f"/someone/{trigger}", {})
        assert elsewhere.value.status == 403


async def test_fires_beyond_the_minute_quota_are_429(tmp_path: Any) -> None:
    from dataclasses import replace

    from squall.config import SystemLimits
    from squall.platform import build_platform
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "data")
    settings = replace(settings, limits=replace(SystemLimits(), fires_per_minute=2))
    platform = build_platform(settings)
    await platform.start()
    try:
        transport = httpx.ASGITransport(app=platform.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://squall", auth=(GUEST_UUID, GUEST_KEY), timeout=30
        ) as api:
            _, trigger, _ = await rule_setup(api)
            answers = [(await api.post(f"{NS}/triggers/{trigger}", json={})) for _ in range(3)]
            assert [a.status_code for a in answers] == [202, 202, 429]
            assert answers[2].json()["error"] == (
                "Too many requests in the last minute (count: 3, allowed: 2)."
            )
            identity = await platform.controller.system_identity("guest")
            assert identity is not None
            with pytest.raises(ApiError) as refused:
                await platform.controller.fire_trigger(
                    identity, trigger, {}, activation_id="ab" * 16
                )
            assert refused.value.status == 429
            # A refused alarm-style fire leaves no ledger entry: it can be retried later.
            assert await platform.activations.get("guest", "ab" * 16) is None
    finally:
        await platform.close()


async def test_ledger_entry_is_durable_before_actions_are_sent(platform: Platform) -> None:
    """At most once: the trigger record is flushed before the rule's action is published."""
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://squall", auth=(GUEST_UUID, GUEST_KEY), timeout=30
    ) as api:
        _, trigger, _ = await rule_setup(api)
        identity = await platform.controller.system_identity("guest")
        assert identity is not None
        seen: list[bool] = []
        bus = platform.bus
        publish = bus.publish
        tick = "cd" * 16

        def observe(topic: str, message: object) -> None:
            # When the action's message leaves, the ledger entry must already be on disk.
            with sqlite3.connect(platform.settings.database_path) as db:
                row = db.execute(
                    "SELECT 1 FROM activations WHERE activation_id = ?", (tick,)
                ).fetchone()
            seen.append(row is not None)
            publish(topic, message)

        bus.publish = observe  # type: ignore[method-assign]
        try:
            await platform.controller.fire_trigger(identity, trigger, {}, activation_id=tick)
        finally:
            bus.publish = publish  # type: ignore[method-assign]
        assert seen == [True]
