"""The OpenWhisk REST API, in-process and against a real server process."""

from __future__ import annotations

import asyncio
import base64
import io
import uuid
import zipfile
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_CONCURRENT_INVOCATIONS

HELLO = (
    "def main(args):\n"
    "    print('hi', args.get('name'))\n"
    "    return {'greeting': 'Hello ' + args.get('name', 'stranger')}\n"
)


def unique(prefix: str = "a") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create(
    api: httpx.AsyncClient, name: str, code: str = HELLO, **extra: Any
) -> httpx.Response:
    body = {"exec": {"kind": "python:3", "code": code}, **extra}
    response = await api.put(f"/api/v1/namespaces/_/actions/{name}", json=body)
    assert response.status_code == 200, response.text
    return response


async def invoke(
    api: httpx.AsyncClient, name: str, params: dict[str, Any] | None = None, **query: str
) -> httpx.Response:
    return await api.post(f"/api/v1/namespaces/_/actions/{name}", json=params or {}, params=query)


def assert_error(response: httpx.Response, status: int, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code"}, body
    assert fragment in body["error"]
    assert body["code"] == response.headers["x-request-id"]


async def test_info_and_namespaces(api: httpx.AsyncClient) -> None:
    info = (await api.get("/api/v1")).json()
    assert info["api_version"] == "1.0.0" and info["api_version_path"] == "v1"
    assert (await api.get("/api/v1/namespaces")).json() == ["guest"]
    limits = (await api.get("/api/v1/namespaces/_/limits")).json()
    assert limits["concurrentInvocations"] == TEST_CONCURRENT_INVOCATIONS
    assert limits["maxActionTimeout"] == 300000
    assert [k["kind"] for k in info["runtimes"]["python"] if k["default"]] == ["python:3.11"]


async def test_authentication_is_required(api: httpx.AsyncClient) -> None:
    for auth in [None, ("nobody", "nokey"), (str(uuid.uuid4()), "x" * 64)]:
        response = await api.get("/api/v1/namespaces/_/actions", auth=auth)  # type: ignore[arg-type]
        assert_error(response, 401)

    def garbled(request: httpx.Request) -> httpx.Request:
        request.headers["Authorization"] = "Basic !!!"
        return request

    assert_error(await api.get("/api/v1/namespaces/_/actions", auth=garbled), 401)


async def test_other_namespace_is_forbidden(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/api/v1/namespaces/someone/actions"), 403, "not authorized")
    assert_error(await api.post("/api/v1/namespaces/someone/actions/x", json={}), 403)
    assert_error(await api.get("/api/v1/namespaces/someone/activations"), 403)


async def test_action_lifecycle(api: httpx.AsyncClient) -> None:
    name = unique()
    created = (await create(api, name, limits={"timeout": 5000})).json()
    assert created["version"] == "0.0.1" and created["limits"]["timeout"] == 5000
    assert_error(
        await api.put(
            f"/api/v1/namespaces/_/actions/{name}",
            json={"exec": {"kind": "python:3", "code": HELLO}},
        ),
        409,
        "already exists",
    )
    updated = await api.put(
        f"/api/v1/namespaces/_/actions/{name}",
        params={"overwrite": "true"},
        json={"parameters": [{"key": "name", "value": "default"}]},
    )
    assert updated.status_code == 200
    assert updated.json()["version"] == "0.0.2"
    got = (await api.get(f"/api/v1/namespaces/_/actions/{name}")).json()
    assert got["exec"]["code"] == HELLO and got["parameters"] == [
        {"key": "name", "value": "default"}
    ]
    no_code = (
        await api.get(f"/api/v1/namespaces/_/actions/{name}", params={"code": "false"})
    ).json()
    assert "code" not in no_code["exec"]
    listed = (await api.get("/api/v1/namespaces/_/actions")).json()
    assert name in [a["name"] for a in listed]
    count = (await api.get("/api/v1/namespaces/_/actions", params={"count": "true"})).json()
    assert count["actions"] >= 1
    deleted = await api.delete(f"/api/v1/namespaces/_/actions/{name}")
    assert deleted.status_code == 200 and deleted.json()["name"] == name
    assert_error(await api.get(f"/api/v1/namespaces/_/actions/{name}"), 404, "does not exist")
    assert_error(await api.delete(f"/api/v1/namespaces/_/actions/{name}"), 404)


async def test_blocking_invoke_returns_record(api: httpx.AsyncClient) -> None:
    name = unique()
    await create(api, name, parameters=[{"key": "name", "value": "default"}])
    response = await invoke(api, name, {"name": "Squall"}, blocking="true")
    assert response.status_code == 200, response.text
    record = response.json()
    assert response.headers["x-openwhisk-activation-id"] == record["activationId"]
    assert record["response"] == {
        "status": "success",
        "statusCode": 0,
        "success": True,
        "result": {"greeting": "Hello Squall"},
    }
    assert (
        record["name"] == name and record["namespace"] == "guest" and record["subject"] == "guest"
    )
    assert record["duration"] == record["end"] - record["start"]
    annotations = {a["key"]: a["value"] for a in record["annotations"]}
    assert annotations["path"] == f"guest/{name}" and annotations["kind"] == "python:3"
    assert annotations["timeout"] is False and annotations["limits"]["memory"] == 256
    assert "waitTime" in annotations and "initTime" in annotations
    assert any(line.endswith("stdout: hi Squall") for line in record["logs"])
    # Default parameters are merged under the invoke body; a warm run has no initTime.
    again = (await invoke(api, name, blocking="true", result="true")).json()
    assert again == {"greeting": "Hello default"}


async def test_warm_run_has_no_init_time(api: httpx.AsyncClient) -> None:
    name = unique()
    await create(api, name)
    await invoke(api, name, blocking="true")
    record = (await invoke(api, name, blocking="true")).json()
    assert "initTime" not in {a["key"] for a in record["annotations"]}


async def test_non_blocking_invoke_and_activation_api(api: httpx.AsyncClient) -> None:
    name = unique()
    await create(api, name)
    response = await invoke(api, name, {"name": "async"})
    assert response.status_code == 202
    activation_id = response.json()["activationId"]
    assert len(activation_id) == 32
    record = await poll(api, activation_id)
    assert record["response"]["result"] == {"greeting": "Hello async"}
    result = (await api.get(f"/api/v1/namespaces/_/activations/{activation_id}/result")).json()
    assert result["success"] is True and result["result"] == {"greeting": "Hello async"}
    logs = (await api.get(f"/api/v1/namespaces/_/activations/{activation_id}/logs")).json()
    assert any("stdout: hi async" in line for line in logs["logs"])
    listed = (await api.get("/api/v1/namespaces/_/activations", params={"name": name})).json()
    assert [a["activationId"] for a in listed] == [activation_id]
    assert "logs" not in listed[0] and "response" not in listed[0]
    docs = (
        await api.get("/api/v1/namespaces/_/activations", params={"name": name, "docs": "true"})
    ).json()
    assert docs[0]["response"]["success"] is True
    count = (
        await api.get("/api/v1/namespaces/_/activations", params={"name": name, "count": "true"})
    ).json()
    assert count == {"activations": 1}


async def poll(api: httpx.AsyncClient, activation_id: str) -> dict[str, Any]:
    for _ in range(200):
        response = await api.get(f"/api/v1/namespaces/_/activations/{activation_id}")
        if response.status_code == 200:
            return dict(response.json())
        assert response.status_code == 404
        await asyncio.sleep(0.05)
    raise AssertionError(f"activation {activation_id} never appeared")


async def test_activation_list_filters(api: httpx.AsyncClient) -> None:
    name = unique()
    await create(api, name)
    ids = [(await invoke(api, name, blocking="true")).json()["activationId"] for _ in range(3)]
    listed = (await api.get("/api/v1/namespaces/_/activations", params={"name": name})).json()
    assert [a["activationId"] for a in listed] == ids[::-1]
    page = (
        await api.get(
            "/api/v1/namespaces/_/activations", params={"name": name, "limit": "1", "skip": "1"}
        )
    ).json()
    assert [a["activationId"] for a in page] == [ids[1]]
    first = (await api.get(f"/api/v1/namespaces/_/activations/{ids[0]}")).json()
    since = (
        await api.get(
            "/api/v1/namespaces/_/activations",
            params={"name": name, "since": str(first["start"] + 100_000)},
        )
    ).json()
    assert since == []
    upto = (
        await api.get(
            "/api/v1/namespaces/_/activations", params={"name": name, "upto": str(first["start"])}
        )
    ).json()
    assert ids[0] in [a["activationId"] for a in upto]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"limit": "201"}, "not in the range of 0 to 200 for limit"),
        ({"limit": "abc"}, "must be an integer"),
        ({"skip": "-1"}, "not in the range"),
        ({"count": "true", "docs": "true"}, "cannot be combined"),
        ({"docs": "maybe"}, "true or false"),
        ({"name": "bad$name"}, "illegal characters"),
    ],
)
async def test_activation_list_bad_queries(
    api: httpx.AsyncClient, query: dict[str, str], fragment: str
) -> None:
    assert_error(await api.get("/api/v1/namespaces/_/activations", params=query), 400, fragment)


async def test_activation_get_errors(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/api/v1/namespaces/_/activations/" + "0" * 32), 404)
    assert_error(await api.get("/api/v1/namespaces/_/activations/not-an-id"), 400, "not valid")


@pytest.mark.parametrize(
    ("code", "status", "fragment"),
    [
        ("def main(args):\n    return {'error': 'nope'}\n", 1, "nope"),
        ("def main(args):\n    raise ValueError('kaboom')\n", 1, "kaboom"),
        ("def main(args):\n    return 'a string'\n", 2, "valid JSON"),
        ("def main(args)\n    return {}\n", 2, ""),
        ("def other(args):\n    return {}\n", 2, ""),
    ],
)
async def test_errors_are_502_with_the_record(
    api: httpx.AsyncClient, code: str, status: int, fragment: str
) -> None:
    name = unique()
    await create(api, name, code=code)
    response = await invoke(api, name, blocking="true")
    assert response.status_code == 502, response.text
    record = response.json()
    assert record["response"]["statusCode"] == status
    assert record["response"]["success"] is False
    assert fragment in str(record["response"]["result"]["error"])
    result_only = await invoke(api, name, blocking="true", result="true")
    assert result_only.status_code == 502 and "error" in result_only.json()


async def test_exception_traceback_goes_to_logs(api: httpx.AsyncClient) -> None:
    name = unique()
    await create(api, name, code="def main(args):\n    raise ValueError('kaboom')\n")
    record = (await invoke(api, name, blocking="true")).json()
    assert any("stderr:" in line and "Traceback" in line for line in record["logs"]), record["logs"]


async def test_array_result_returned_as_is(api: httpx.AsyncClient) -> None:
    name = unique()
    await create(api, name, code="def main(args):\n    return [1, 2, 3]\n")
    assert (await invoke(api, name, blocking="true", result="true")).json() == [1, 2, 3]


async def test_timeout_limit(api: httpx.AsyncClient) -> None:
    name = unique()
    code = "import time\ndef main(args):\n    time.sleep(10)\n    return {}\n"
    await create(api, name, code=code, limits={"timeout": 300})
    response = await invoke(api, name, blocking="true")
    assert response.status_code == 502
    record = response.json()
    assert record["response"]["result"] == {
        "error": "The action exceeded its time limits of 300 milliseconds."
    }
    assert {"key": "timeout", "value": True} in record["annotations"]
    # The container was discarded; the next call gets a fresh one and still works.
    assert (await invoke(api, name, blocking="true")).status_code == 502


async def test_blocking_wait_past_timeout_gives_202(api: httpx.AsyncClient) -> None:
    name = unique()
    await create(
        api,
        name,
        code="import time\ndef main(args):\n    time.sleep(1)\n    return {'done': True}\n",
    )
    response = await invoke(api, name, blocking="true", timeout="100")
    assert response.status_code == 202
    record = await poll(api, response.json()["activationId"])
    assert record["response"]["result"] == {"done": True}


async def test_zip_action(api: httpx.AsyncClient) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "__main__.py", "from helper import greet\ndef main(args):\n    return {'v': greet()}\n"
        )
        archive.writestr("helper.py", "def greet():\n    return 'from zip'\n")
    code = base64.b64encode(buffer.getvalue()).decode()
    name = unique()
    response = await api.put(
        f"/api/v1/namespaces/_/actions/{name}",
        json={"exec": {"kind": "python:3", "code": code, "binary": True}},
    )
    assert response.status_code == 200, response.text
    assert (await invoke(api, name, blocking="true", result="true")).json() == {"v": "from zip"}


async def test_named_entry_point(api: httpx.AsyncClient) -> None:
    name = unique()
    response = await api.put(
        f"/api/v1/namespaces/_/actions/{name}",
        json={
            "exec": {
                "kind": "python:default",
                "code": "def handler(a):\n    return {'ok': 1}\n",
                "main": "handler",
            }
        },
    )
    assert response.status_code == 200
    assert (await invoke(api, name, blocking="true", result="true")).json() == {"ok": 1}


async def test_update_changes_code_for_next_invoke(api: httpx.AsyncClient) -> None:
    name = unique()
    await create(api, name, code="def main(a):\n    return {'v': 1}\n")
    assert (await invoke(api, name, blocking="true", result="true")).json() == {"v": 1}
    await api.put(
        f"/api/v1/namespaces/_/actions/{name}",
        params={"overwrite": "true"},
        json={"exec": {"kind": "python:3", "code": "def main(a):\n    return {'v': 2}\n"}},
    )
    assert (await invoke(api, name, blocking="true", result="true")).json() == {"v": 2}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "malformed"),
        (b"[1, 2]", 400, "malformed"),
        (b'{"exec": {"kind": "cobol:1", "code": "x"}}', 400, "kind 'cobol:1'"),
        (b'{"exec": {"kind": "python:3"}}', 400, "code"),
        (
            b'{"exec": {"kind": "python:3", "code": "x"}, "limits": {"memory": 4096}}',
            400,
            "Memory 4096 MB exceeds",
        ),
        (
            b'{"exec": {"kind": "python:3", "code": "x"}, "limits": {"timeout": 1}}',
            400,
            "below allowed threshold",
        ),
        (b'{"exec": {"kind": "python:3", "code": "x"}, "parameters": "nope"}', 400, "parameters"),
        (b"", 400, "malformed"),
    ],
)
async def test_bad_action_bodies(
    api: httpx.AsyncClient, body: bytes, status: int, fragment: str
) -> None:
    response = await api.put(
        f"/api/v1/namespaces/_/actions/{unique()}",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert_error(response, status, fragment)


async def test_bad_names_and_invokes(api: httpx.AsyncClient) -> None:
    assert_error(
        await api.put(
            "/api/v1/namespaces/_/actions/bad$name",
            json={"exec": {"kind": "python:3", "code": "x"}},
        ),
        400,
        "illegal",
    )
    assert_error(await invoke(api, unique()), 404)
    name = unique()
    await create(api, name)
    response = await api.post(
        f"/api/v1/namespaces/_/actions/{name}",
        content=b"[1]",
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, "malformed")
    assert_error(await invoke(api, name, blocking="true", timeout="0"), 400, "Timeout must be")
    assert_error(await invoke(api, name, blocking="true", timeout="70000"), 400, "up to 60000")
    assert_error(await invoke(api, name, blocking="sometimes"), 400)


async def test_huge_payload_is_413(api: httpx.AsyncClient) -> None:
    name = unique()
    await create(api, name)
    response = await invoke(api, name, {"blob": "x" * (1024 * 1024 + 10)})
    assert_error(response, 413, "larger than allowed")


async def test_action_in_missing_package_is_404(api: httpx.AsyncClient) -> None:
    response = await api.put(
        f"/api/v1/namespaces/_/actions/nopkg/{unique()}",
        json={"exec": {"kind": "python:3", "code": HELLO}},
    )
    assert_error(response, 404)


async def test_unknown_route_and_method(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/api/v1/nothing-here"), 404)
    assert_error(await api.patch("/api/v1/namespaces/_/actions/x"), 405)


async def test_concurrent_blocking_invokes(api: httpx.AsyncClient) -> None:
    name = unique()
    await create(api, name, code="def main(a):\n    return {'n': a['n']}\n")
    responses = await asyncio.gather(
        *[invoke(api, name, {"n": i}, blocking="true", result="true") for i in range(40)]
    )
    assert sorted(r.json()["n"] for r in responses) == list(range(40))


async def test_memory_limit(api: httpx.AsyncClient) -> None:
    name = unique()
    code = (
        "def main(args):\n    blob = bytearray(400 * 1024 * 1024)\n    return {'size': len(blob)}\n"
    )
    await create(api, name, code=code, limits={"memory": 128})
    response = await invoke(api, name, blocking="true")
    assert response.status_code == 502, response.text
    assert response.json()["response"]["result"] == {
        "error": "The action exhausted its memory and was aborted."
    }
    # Within its limit the same action works: the limit is the action's, not the platform's.
    await api.put(
        f"/api/v1/namespaces/_/actions/{name}",
        params={"overwrite": "true"},
        json={"exec": {"kind": "python:3", "code": code.replace("400", "50")}},
    )
    assert (await invoke(api, name, blocking="true", result="true")).json() == {
        "size": 50 * 1024 * 1024
    }


async def test_log_limit_truncates_with_a_note(api: httpx.AsyncClient) -> None:
    name = unique()
    code = "def main(args):\n    for i in range(50000):\n        print(i, 'x' * 40)\n    return {}"
    await create(api, name, code=code, limits={"logs": 1})
    record = (await invoke(api, name, blocking="true")).json()
    assert record["response"]["success"] is True
    assert (
        "Logs were truncated because the total bytes size exceeds the limit of 1048576 bytes."
        in record["logs"][-1]
    )
    # The limit counts what the action wrote, not the timestamps and stream names added to it.
    written = sum(len(line.split(": ", 1)[1]) for line in record["logs"][:-1])
    assert 1024 * 1024 - 200 < written <= 1024 * 1024


async def test_invoke_context_reaches_the_action(api: httpx.AsyncClient) -> None:
    name = unique()
    code = (
        "import os\n"
        "def main(args):\n"
        "    return {k: os.environ.get(k) for k in ('__OW_ACTIVATION_ID', '__OW_ACTION_NAME',\n"
        "            '__OW_NAMESPACE', '__OW_API_KEY', '__OW_DEADLINE', '__OW_API_HOST')}\n"
    )
    await create(api, name, code=code)
    record = (await invoke(api, name, blocking="true")).json()
    seen = record["response"]["result"]
    assert seen["__OW_ACTIVATION_ID"] == record["activationId"]
    assert seen["__OW_ACTION_NAME"] == f"/guest/{name}"
    assert seen["__OW_NAMESPACE"] == "guest"
    assert seen["__OW_API_KEY"] is not None and ":" in seen["__OW_API_KEY"]
    assert int(seen["__OW_DEADLINE"]) > record["start"]
    assert seen["__OW_API_HOST"].startswith("http://")
