"""Node.js actions in process sandboxes, and the runtimes manifest that offers them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from squall.config import RuntimeSettings, load_settings
from squall.errors import ConfigurationError
from squall.platform import Platform, build_platform
from squall.runtimes import load_manifest
from tests.conftest import GUEST_KEY, GUEST_UUID, make_settings, require

NS = "/api/v1/namespaces/_"
COUNTER = """
let runs = 0;  // module state survives between runs of a warm sandbox
function main(params) {
  runs += 1;
  console.log('hello from', params.name);
  console.error('to stderr');
  return {greeting: 'Hello ' + params.name, runs, id: process.env.__OW_ACTIVATION_ID,
          action: process.env.__OW_ACTION_NAME};
}
"""


@pytest.fixture
async def node_api(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    require(shutil.which("node") is not None, "Node.js (apt-get install nodejs)")
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://squall", auth=(GUEST_UUID, GUEST_KEY), timeout=30
    ) as api:
        yield api


async def create(api: httpx.AsyncClient, name: str, code: str, kind: str = "nodejs:20",
                 **body: Any) -> dict[str, Any]:  # fmt: skip
    response = await api.put(
        f"{NS}/actions/{name}", json={"exec": {"kind": kind, "code": code}, **body}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def invoke(api: httpx.AsyncClient, name: str, params: Any = None) -> httpx.Response:
    return await api.post(f"{NS}/actions/{name}?blocking=true", json=params or {})


def annotation(record: dict[str, Any], key: str) -> Any:
    return next((a["value"] for a in record["annotations"] if a["key"] == key), None)


async def test_nodejs_is_listed_with_its_default(node_api: httpx.AsyncClient) -> None:
    info = (await node_api.get("/api/v1")).json()
    kinds = {k["kind"]: k["default"] for k in info["runtimes"]["nodejs"]}
    assert kinds == {"nodejs:20": True}


async def test_result_logs_context_and_warm_reuse(node_api: httpx.AsyncClient) -> None:
    await create(node_api, "hello", COUNTER)
    first = await invoke(node_api, "hello", {"name": "Ada"})
    assert first.status_code == 200, first.text
    record = first.json()
    result = record["response"]["result"]
    assert result["greeting"] == "Hello Ada" and result["runs"] == 1
    assert result["id"] == record["activationId"] and result["action"] == "/guest/hello"
    assert [line.split(" ", 1)[1] for line in record["logs"]] == [
        "stdout: hello from Ada",
        "stderr: to stderr",
    ]
    assert annotation(record, "kind") == "nodejs:20" and annotation(record, "initTime") is not None
    second = (await invoke(node_api, "hello", {"name": "Bo"})).json()
    assert second["response"]["result"]["runs"] == 2  # the same, warm sandbox
    assert annotation(second, "initTime") is None
    assert len(second["logs"]) == 2  # only this run's lines


async def test_default_kind_alias_async_main_and_require(node_api: httpx.AsyncClient) -> None:
    code = """
const crypto = require('crypto');
exports.main = async function (params) {
  await new Promise((resolve) => setTimeout(resolve, 10));
  return {digest: crypto.createHash('sha256').update(params.text).digest('hex').slice(0, 8)};
};
"""
    created = await create(node_api, "digest", code, kind="nodejs:default")
    assert created["exec"]["kind"] == "nodejs:default"
    bare = await create(node_api, "digest2", code, kind="nodejs")
    assert bare["exec"]["kind"] == "nodejs:default"
    response = await invoke(node_api, "digest", {"text": "squall"})
    assert response.status_code == 200
    expected = hashlib.sha256(b"squall").hexdigest()[:8]
    assert response.json()["response"]["result"] == {"digest": expected}


async def test_errors_are_application_errors(node_api: httpx.AsyncClient) -> None:
    await create(node_api, "reject", "async function main() { throw new Error('boom'); }")
    response = await invoke(node_api, "reject")
    assert response.status_code == 502
    body = response.json()["response"]
    assert body["status"] == "application error" and body["result"] == {"error": "boom"}
    await create(node_api, "broken", "function main( {")
    broken = await invoke(node_api, "broken")
    assert broken.status_code == 502
    assert broken.json()["response"]["status"] == "action developer error"
    assert "Initialization has failed" in broken.json()["response"]["result"]["error"]


async def test_timeout_and_memory_limits(node_api: httpx.AsyncClient) -> None:
    await create(node_api, "spin", "function main() { for (;;) {} }", limits={"timeout": 300})
    spun = (await invoke(node_api, "spin")).json()
    assert spun["response"]["result"] == {
        "error": "The action exceeded its time limits of 300 milliseconds."
    }
    assert annotation(spun, "timeout") is True
    hog = "function main() { const keep = []; for (;;) keep.push(new Array(1e5).fill(1)); }"
    await create(node_api, "hog", hog, limits={"memory": 128})
    hogged = (await invoke(node_api, "hog")).json()
    assert hogged["response"]["result"] == {
        "error": "The action exhausted its memory and was aborted."
    }
    # A fresh sandbox serves the next call.
    await create(node_api, "fine", "function main() { return {ok: true}; }", limits={"memory": 128})
    assert (await invoke(node_api, "fine")).json()["response"]["result"] == {"ok": True}


# ------------------------------------------------------------------------------ manifest


async def test_a_kind_without_its_runtime_is_not_offered(tmp_path: Path) -> None:
    manifest = {"runtimes": {
        "python": [{"kind": "python:3.11", "default": True, "stemCells": [{"initialCount": 0}]}],
        "nodejs": [{"kind": "nodejs:20", "default": True, "executable": "no-such-node-binary"}],
    }}  # fmt: skip
    settings = replace(make_settings(tmp_path / "data"),
                       runtimes=RuntimeSettings(manifest=json.dumps(manifest)))  # fmt: skip
    platform = build_platform(settings)
    assert any("nodejs:20 (no-such-node-binary not found)" in w for w in platform.warnings)
    await platform.start()
    try:
        transport = httpx.ASGITransport(app=platform.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://squall",
                                     auth=(GUEST_UUID, GUEST_KEY)) as api:  # fmt: skip
            info = (await api.get("/api/v1")).json()
            assert set(info["runtimes"]) == {"python"}
            refused = await api.put(
                f"{NS}/actions/n", json={"exec": {"kind": "nodejs:20", "code": "x"}}
            )
            assert refused.status_code == 400
            assert "kind 'nodejs:20' not in" in refused.json()["error"]
            assert platform.invoker.prewarm.cells() == 1  # SQUALL_PREWARM_COUNT=1 overrides
    finally:
        await platform.close()


def test_manifest_from_a_file_and_the_openwhisk_variable(tmp_path: Path) -> None:
    path = tmp_path / "runtimes.json"
    python = [{"kind": "python:3.12", "default": True}]
    path.write_text(json.dumps({"runtimes": {"python": python}}))
    settings = load_settings({"RUNTIMES_MANIFEST": str(path)})
    variable = settings.runtimes.variable(settings.source("runtimes.manifest"))
    assert variable == "RUNTIMES_MANIFEST"  # what messages about the manifest name
    manifest = load_manifest(settings.runtimes.manifest, variable)
    assert manifest.names() == {"python:3.12", "python:default"}
    assert manifest.resolve("python:default") is manifest.kinds["python:3.12"]


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [
        ("{not json", "not JSON"),
        ('{"runtimes": {"ruby": []}}', "family 'ruby' is not supported"),
        ('{"runtimes": {"python": [{"kind": "python:3", "default": true}, '
         '{"kind": "python:4", "default": true}]}}', "more than one default"),
        ('{"runtimes": {"python": [{"kind": "nodejs:20"}]}}', "must be 'python:<version>'"),
        ('{"runtimes": {"python": [{"kind": "python:3", "stemCells": [{"initialCount": -1}]}]}}',
         "initialCount >= 0"),
        ("/no/such/manifest.json", "cannot read the runtimes manifest"),
    ],
)  # fmt: skip
def test_bad_manifests_name_the_setting(manifest: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match="RUNTIMES_MANIFEST") as raised:
        load_manifest(manifest, "RUNTIMES_MANIFEST")
    assert fragment in str(raised.value)


async def test_node_sandboxes_are_isolated_like_python_ones(
    node_api: httpx.AsyncClient, platform: Platform
) -> None:
    require(os.geteuid() == 0, "root (sandboxes get their own uid only when Squall runs as root)")
    key_file = platform.settings.data_dir / "guest.auth"
    code = f"""
const fs = require('fs');
function main() {{
  let read = 'yes';
  try {{ fs.readFileSync({json.dumps(str(key_file))}); }} catch (e) {{ read = e.code; }}
  const squall = Object.keys(process.env).filter((k) => k.startsWith('SQUALL_'));
  return {{uid: process.getuid(), read, squall, home: process.env.HOME}};
}}
"""
    await create(node_api, "peek", code)
    result = (await invoke(node_api, "peek")).json()["response"]["result"]
    assert result["uid"] >= 200000  # its own unprivileged uid
    assert result["read"] == "EACCES" and result["squall"] == []
    assert "sbx-" in result["home"]
