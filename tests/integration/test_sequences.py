"""Sequences end to end with real sandboxes: chaining, errors, records, nesting, limits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from squall.config import SystemLimits
from squall.platform import build_platform
from tests.conftest import GUEST_KEY, GUEST_UUID, make_settings
from tests.integration.test_api import assert_error, poll, unique

INCREMENT = "def main(args):\n    return {'n': args.get('n', 0) + args.get('step', 1)}\n"
DOUBLE = "def main(args):\n    return {'n': args['n'] * 2}\n"
FAIL = "def main(args):\n    return {'error': 'stopped at ' + str(args['n'])}\n"


async def put_action(api: httpx.AsyncClient, name: str, body: dict[str, Any]) -> httpx.Response:
    return await api.put(f"/api/v1/namespaces/_/actions/{name}", json=body)


async def code_action(api: httpx.AsyncClient, name: str, code: str, **extra: Any) -> None:
    response = await put_action(api, name, {"exec": {"kind": "python:3", "code": code}, **extra})
    assert response.status_code == 200, response.text


async def sequence(api: httpx.AsyncClient, name: str, components: list[str], **extra: Any) -> None:
    body = {"exec": {"kind": "sequence", "components": components}, **extra}
    response = await put_action(api, name, body)
    assert response.status_code == 200, response.text


async def invoke(api: httpx.AsyncClient, name: str, params: dict[str, Any]) -> httpx.Response:
    return await api.post(
        f"/api/v1/namespaces/_/actions/{name}", json=params, params={"blocking": "true"}
    )


def annotations(record: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: a["value"] for a in record["annotations"]}


async def test_sequence_chains_results_and_records_components(api: httpx.AsyncClient) -> None:
    inc, dbl, seq = unique("inc"), unique("dbl"), unique("seq")
    await code_action(api, inc, INCREMENT, parameters=[{"key": "step", "value": 5}])
    await code_action(api, dbl, DOUBLE)
    await sequence(
        api, seq, [f"/_/{inc}", f"/guest/{dbl}", inc], parameters=[{"key": "n", "value": 1}]
    )
    got = (await api.get(f"/api/v1/namespaces/_/actions/{seq}")).json()
    assert got["exec"] == {
        "kind": "sequence",
        "components": [f"/guest/{inc}", f"/guest/{dbl}", f"/guest/{inc}"],
    }
    response = await invoke(api, seq, {})
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["response"]["result"] == {"n": (1 + 5) * 2 + 5}
    assert record["name"] == seq and len(record["logs"]) == 3
    marks = annotations(record)
    assert marks["topmost"] is True and marks["kind"] == "sequence"
    assert marks["path"] == f"guest/{seq}" and "causedBy" not in marks
    durations = 0
    for component_id in record["logs"]:
        component = await poll(api, component_id)
        assert component["cause"] == record["activationId"]
        assert annotations(component)["causedBy"] == "sequence"
        durations += component["duration"]
    assert record["duration"] == durations
    stored = await poll(api, record["activationId"])
    assert stored["logs"] == record["logs"]
    only = await api.post(
        f"/api/v1/namespaces/_/actions/{seq}",
        json={"n": 10},
        params={"blocking": "true", "result": "true"},
    )
    assert only.json() == {"n": (10 + 5) * 2 + 5}


async def test_an_error_stops_the_sequence(api: httpx.AsyncClient) -> None:
    inc, fail, seq = unique("inc"), unique("fail"), unique("seq")
    await code_action(api, inc, INCREMENT)
    await code_action(api, fail, FAIL)
    await sequence(api, seq, [inc, fail, inc])
    response = await invoke(api, seq, {"n": 1})
    assert response.status_code == 502, response.text
    record = response.json()
    assert record["response"]["statusCode"] == 1
    assert record["response"]["result"] == {"error": "stopped at 2"}
    assert len(record["logs"]) == 2  # the third component never ran


async def test_sequence_of_sequences(api: httpx.AsyncClient) -> None:
    inc, inner, outer = unique("inc"), unique("inner"), unique("outer")
    await code_action(api, inc, INCREMENT)
    await sequence(api, inner, [inc, inc])
    await sequence(api, outer, [inc, inner, inc])
    record = (await invoke(api, outer, {"n": 0})).json()
    assert record["response"]["result"] == {"n": 4}
    assert len(record["logs"]) == 3
    nested = await poll(api, record["logs"][1])
    assert nested["name"] == inner and nested["cause"] == record["activationId"]
    assert annotations(nested)["topmost"] is False
    assert annotations(nested)["causedBy"] == "sequence"
    assert len(nested["logs"]) == 2
    assert (await poll(api, nested["logs"][0]))["cause"] == nested["activationId"]


async def test_non_blocking_sequence(api: httpx.AsyncClient) -> None:
    inc, seq = unique("inc"), unique("seq")
    await code_action(api, inc, INCREMENT)
    await sequence(api, seq, [inc, inc])
    accepted = await api.post(f"/api/v1/namespaces/_/actions/{seq}", json={"n": 1})
    assert accepted.status_code == 202
    record = await poll(api, accepted.json()["activationId"])
    assert record["response"]["result"] == {"n": 3}


async def test_bad_sequences(api: httpx.AsyncClient) -> None:
    inc, seq = unique("inc"), unique("seq")
    await code_action(api, inc, INCREMENT)
    for components, fragment in (
        ([], "No component"),
        ("x", "No component"),
        ([unique("none")], "does not exist"),
        (["/other/pkg/a"], "not authorized"),
        (["bad$name"], "illegal"),
    ):
        body = {"exec": {"kind": "sequence", "components": components}}
        status = 403 if fragment == "not authorized" else 400
        assert_error(await put_action(api, unique("seq"), body), status, fragment)
    await sequence(api, seq, [inc])
    # A sequence may not contain itself, directly or through another sequence.
    cyclic = {"exec": {"kind": "sequence", "components": [inc, seq]}}
    updated = await api.put(
        f"/api/v1/namespaces/_/actions/{seq}", json=cyclic, params={"overwrite": "true"}
    )
    assert_error(updated, 400, "may not refer to itself")
    outer = unique("outer")
    await sequence(api, outer, [seq])
    through = {"exec": {"kind": "sequence", "components": [outer]}}
    assert_error(
        await api.put(
            f"/api/v1/namespaces/_/actions/{seq}", json=through, params={"overwrite": "true"}
        ),
        400,
        "may not refer to itself",
    )


async def test_a_deleted_component_fails_the_sequence(api: httpx.AsyncClient) -> None:
    inc, gone, seq = unique("inc"), unique("gone"), unique("seq")
    await code_action(api, inc, INCREMENT)
    await code_action(api, gone, INCREMENT)
    await sequence(api, seq, [inc, gone])
    await api.delete(f"/api/v1/namespaces/_/actions/{gone}")
    response = await invoke(api, seq, {"n": 0})
    assert response.status_code == 502
    assert response.json()["response"]["result"] == {"error": "Sequence component does not exist."}


async def test_sequence_length_limit_is_configurable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    settings = replace(settings, limits=replace(settings.limits, sequence_max_length=3))
    assert SystemLimits().sequence_max_length == 50
    instance = build_platform(settings)
    await instance.start()
    try:
        transport = httpx.ASGITransport(app=instance.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://squall", auth=(GUEST_UUID, GUEST_KEY), timeout=30
        ) as api:
            inc, pair = unique("inc"), unique("pair")
            await code_action(api, inc, INCREMENT)
            await sequence(api, unique("three"), [inc, inc, inc])
            too_long = {"exec": {"kind": "sequence", "components": [inc] * 4}}
            assert_error(await put_action(api, unique("s"), too_long), 400, "Too many actions")
            await sequence(api, pair, [inc, inc])
            # Nested sequences count their atomic actions: 2 + 2 > 3.
            nested = {"exec": {"kind": "sequence", "components": [pair, pair]}}
            assert_error(await put_action(api, unique("s"), nested), 400, "Too many actions")
    finally:
        await instance.close()


async def test_a_rule_fires_a_sequence(api: httpx.AsyncClient) -> None:
    inc, seq, trigger, rule = unique("inc"), unique("seq"), unique("t"), unique("r")
    await code_action(api, inc, INCREMENT)
    await sequence(api, seq, [inc, inc])
    await api.put(f"/api/v1/namespaces/_/triggers/{trigger}", json={})
    created = await api.put(
        f"/api/v1/namespaces/_/rules/{rule}", json={"trigger": trigger, "action": seq}
    )
    assert created.status_code == 200, created.text
    fired = await api.post(f"/api/v1/namespaces/_/triggers/{trigger}", json={"n": 10})
    assert fired.status_code == 202, fired.text
    trigger_id = fired.json()["activationId"]
    line = json.loads((await poll(api, trigger_id))["logs"][0])
    assert line["success"] is True, line
    record = await poll(api, line["activationId"])
    assert record["name"] == seq and record["cause"] == trigger_id
    assert record["response"]["result"] == {"n": 12}
    assert annotations(record)["topmost"] is True
