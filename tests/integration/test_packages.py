"""Packages and bindings: CRUD, actions inside packages, parameter precedence, `final`,
entitlement across namespaces, and rules that name packaged actions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from squall.controller.auth import subject_record
from squall.platform import Platform
from tests.conftest import GUEST_AUTH
from tests.integration.test_api import assert_error, poll, unique

ECHO = "def main(args):\n    return {k: v for k, v in args.items()}\n"
OTHER_AUTH = "0f0b6b39-59c0-4b4a-a3e9-5f2e2c2d7d11:" + "K" * 64


def kv(**values: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in values.items()]


async def put_package(api: httpx.AsyncClient, name: str, **body: Any) -> httpx.Response:
    return await api.put(f"/api/v1/namespaces/_/packages/{name}", json=body)


async def put_action(api: httpx.AsyncClient, name: str, code: str = ECHO, **extra: Any) -> None:
    body = {"exec": {"kind": "python:3", "code": code}, **extra}
    response = await api.put(f"/api/v1/namespaces/_/actions/{name}", json=body)
    assert response.status_code == 200, response.text


async def result_of(api: httpx.AsyncClient, path: str, params: dict[str, Any]) -> Any:
    response = await api.post(
        f"/api/v1/namespaces/{path}", json=params, params={"blocking": "true", "result": "true"}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_package_lifecycle(api: httpx.AsyncClient) -> None:
    pkg = unique("p")
    created = await put_package(api, pkg, parameters=kv(a=1), annotations=kv(description="d"))
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["version"] == "0.0.1" and body["binding"] == {} and body["publish"] is False
    assert_error(await put_package(api, pkg), 409, "already exists")
    updated = await api.put(
        f"/api/v1/namespaces/_/packages/{pkg}",
        params={"overwrite": "true"},
        json={"publish": True},
    )
    assert updated.json()["version"] == "0.0.2" and updated.json()["publish"] is True
    assert updated.json()["parameters"] == kv(a=1)  # an update keeps what it omits
    await put_action(api, f"{pkg}/echo")
    got = (await api.get(f"/api/v1/namespaces/_/packages/{pkg}")).json()
    assert [a["name"] for a in got["actions"]] == ["echo"] and got["feeds"] == []
    listed = (await api.get("/api/v1/namespaces/_/packages")).json()
    assert pkg in [p["name"] for p in listed] and "parameters" not in listed[0]
    count = (await api.get("/api/v1/namespaces/_/packages", params={"count": "true"})).json()
    assert count["packages"] >= 1
    in_package = (await api.get(f"/api/v1/namespaces/_/actions/{pkg}/")).json()
    assert [a["name"] for a in in_package] == ["echo"]
    action = (await api.get(f"/api/v1/namespaces/_/actions/{pkg}/echo")).json()
    assert action["namespace"] == f"guest/{pkg}"
    assert_error(await api.delete(f"/api/v1/namespaces/_/packages/{pkg}"), 409, "not empty")
    deleted = await api.delete(f"/api/v1/namespaces/_/packages/{pkg}", params={"force": "true"})
    assert deleted.status_code == 200, deleted.text
    assert_error(await api.get(f"/api/v1/namespaces/_/packages/{pkg}"), 404)
    assert_error(await api.get(f"/api/v1/namespaces/_/actions/{pkg}/echo"), 404)
    # A package of the same name later starts empty: no cached copy of the old action.
    await put_package(api, pkg)
    assert_error(await api.post(f"/api/v1/namespaces/_/actions/{pkg}/echo", json={}), 404)


async def test_bad_packages(api: httpx.AsyncClient) -> None:
    assert_error(await put_package(api, "default"), 400, "reserved")
    assert_error(await put_package(api, unique("p"), parameters="x"), 400, "array")
    assert_error(await put_package(api, unique("p"), binding={"namespace": "guest"}), 400)
    missing = {"namespace": "_", "name": unique("none")}
    assert_error(await put_package(api, unique("p"), binding=missing), 400, "does not exist")
    assert_error(
        await api.put(
            f"/api/v1/namespaces/_/actions/{unique('nopkg')}/a",
            json={"exec": {"kind": "python:3", "code": ECHO}},
        ),
        404,
    )
    assert_error(await api.delete(f"/api/v1/namespaces/_/packages/{unique('p')}"), 404)
    assert_error(await api.put("/api/v1/namespaces/someone/packages/x", json={}), 403)
    taken = unique("t")
    await put_action(api, taken)
    assert_error(await put_package(api, taken), 409)  # names are unique across collections


async def test_parameter_precedence_and_final(api: httpx.AsyncClient) -> None:
    pkg, binding = unique("p"), unique("b")
    await put_package(api, pkg, parameters=kv(a="package", b="package", c="package"))
    await put_action(api, f"{pkg}/echo", parameters=kv(c="action", d="action"))
    bound = await put_package(
        api, binding, binding={"namespace": "_", "name": pkg}, parameters=kv(b="binding", c="x")
    )
    assert bound.json()["binding"] == {"namespace": "guest", "name": pkg}
    direct = await result_of(api, f"_/actions/{pkg}/echo", {"d": "invoke"})
    assert direct == {"a": "package", "b": "package", "c": "action", "d": "invoke"}
    through = await result_of(api, f"_/actions/{binding}/echo", {})
    assert through == {"a": "package", "b": "binding", "c": "action", "d": "action"}
    view = (await api.get(f"/api/v1/namespaces/_/packages/{binding}")).json()
    assert {p["key"]: p["value"] for p in view["parameters"]}["b"] == "binding"
    assert [a["name"] for a in view["actions"]] == ["echo"]
    record = (
        await api.post(f"/api/v1/namespaces/_/actions/{binding}/echo", params={"blocking": "true"})
    ).json()
    annotations = {a["key"]: a["value"] for a in record["annotations"]}
    assert annotations["binding"] == f"guest/{binding}"
    assert annotations["path"] == f"guest/{pkg}/echo"
    # `final`: parameters with values (from the package too) cannot be overridden.
    await api.put(
        f"/api/v1/namespaces/_/actions/{pkg}/echo",
        params={"overwrite": "true"},
        json={"annotations": kv(final=True)},
    )
    for path in (f"{pkg}/echo", f"{binding}/echo"):
        refused = await api.post(f"/api/v1/namespaces/_/actions/{path}", json={"a": "mine"})
        assert_error(refused, 400, "not allowed")
    assert (await result_of(api, f"_/actions/{pkg}/echo", {"new": 1}))["new"] == 1
    assert_error(
        await api.put(
            f"/api/v1/namespaces/_/actions/{binding}/x",
            json={"exec": {"kind": "python:3", "code": ECHO}},
        ),
        400,
        "binding",
    )


async def test_package_cannot_turn_into_a_binding(api: httpx.AsyncClient) -> None:
    pkg, other = unique("p"), unique("p")
    await put_package(api, pkg)
    await put_package(api, other)
    turned = await api.put(
        f"/api/v1/namespaces/_/packages/{pkg}",
        params={"overwrite": "true"},
        json={"binding": {"namespace": "_", "name": other}},
    )
    assert_error(turned, 409, "cannot be converted")
    binding = unique("b")
    await put_package(api, binding, binding={"namespace": "_", "name": pkg})
    nested = await put_package(api, unique("b"), binding={"namespace": "_", "name": binding})
    assert_error(nested, 400, "another package binding")


async def test_rules_invoke_actions_in_packages_and_bindings(api: httpx.AsyncClient) -> None:
    pkg, binding, trigger = unique("p"), unique("b"), unique("t")
    await put_package(api, pkg, parameters=kv(origin="package"))
    await put_action(api, f"{pkg}/echo")
    await put_package(
        api, binding, binding={"namespace": "_", "name": pkg}, parameters=kv(origin="binding")
    )
    await api.put(f"/api/v1/namespaces/_/triggers/{trigger}", json={})
    for rule, action in ((unique("r"), f"/_/{pkg}/echo"), (unique("r"), f"/_/{binding}/echo")):
        created = await api.put(
            f"/api/v1/namespaces/_/rules/{rule}",
            json={"trigger": f"/_/{trigger}", "action": action},
        )
        assert created.status_code == 200, created.text
    missing = await api.put(
        f"/api/v1/namespaces/_/rules/{unique('r')}",
        json={"trigger": f"/_/{trigger}", "action": f"/_/{pkg}/none"},
    )
    assert_error(missing, 400, "does not exist")
    fired = await api.post(f"/api/v1/namespaces/_/triggers/{trigger}", json={"x": 1})
    assert fired.status_code == 202, fired.text
    trigger_record = await poll(api, fired.json()["activationId"])
    import orjson

    lines = [orjson.loads(line) for line in trigger_record["logs"]]
    assert all(line["success"] for line in lines), lines
    origins = sorted(
        [(await poll(api, line["activationId"]))["response"]["result"]["origin"] for line in lines]
    )
    assert origins == ["binding", "package"]


@pytest.fixture
async def two_namespaces(platform: Platform) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    """Clients for `guest` and for a second namespace `other`, on one in-process platform."""
    await platform.entities.put_subject(subject_record("other", OTHER_AUTH))
    transport = httpx.ASGITransport(app=platform.app)
    clients = [
        httpx.AsyncClient(
            transport=transport, base_url="http://squall", auth=tuple(a.split(":", 1)), timeout=30
        )
        for a in (GUEST_AUTH, OTHER_AUTH)
    ]
    try:
        yield tuple(clients)
    finally:
        for client in clients:
            await client.aclose()


async def test_bindings_to_another_namespace(
    two_namespaces: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    guest, other = two_namespaces
    await put_package(other, "shared", parameters=kv(owner="other", level="package"))
    await put_action(other, "shared/echo")
    await put_package(other, "private")
    await put_action(other, "private/echo")
    await put_action(other, "loose")
    # Unpublished: neither readable, bindable nor invocable from guest.
    assert_error(await guest.get("/api/v1/namespaces/other/packages/shared"), 403)
    assert_error(
        await put_package(guest, "mine", binding={"namespace": "other", "name": "shared"}), 403
    )
    assert_error(await guest.post("/api/v1/namespaces/other/actions/shared/echo", json={}), 403)
    await other.put(
        "/api/v1/namespaces/_/packages/shared", params={"overwrite": "true"}, json={"publish": True}
    )
    listed = (await guest.get("/api/v1/namespaces/other/packages")).json()
    assert [p["name"] for p in listed] == ["shared"]  # only the published one
    assert (await guest.get("/api/v1/namespaces/other/packages/shared")).status_code == 200
    assert_error(await guest.get("/api/v1/namespaces/other/packages/private"), 403)
    assert_error(await guest.post("/api/v1/namespaces/other/actions/loose", json={}), 403)
    assert_error(await guest.delete("/api/v1/namespaces/other/packages/shared"), 403)
    bound = await put_package(
        guest,
        "mine",
        binding={"namespace": "other", "name": "shared"},
        parameters=kv(level="binding"),
    )
    assert bound.status_code == 200, bound.text
    result = await result_of(guest, "_/actions/mine/echo", {"extra": 1})
    assert result == {"owner": "other", "level": "binding", "extra": 1}
    direct = await result_of(guest, "other/actions/shared/echo", {})
    assert direct["level"] == "package"
    # The activation is the caller's, not the package owner's.
    records = (await guest.get("/api/v1/namespaces/_/activations", params={"limit": "5"})).json()
    assert records and all(r["namespace"] == "guest" for r in records)
    # Unpublishing the package closes the binding too.
    await other.put(
        "/api/v1/namespaces/_/packages/shared",
        params={"overwrite": "true"},
        json={"publish": False},
    )
    assert_error(await guest.post("/api/v1/namespaces/_/actions/mine/echo", json={}), 403)
