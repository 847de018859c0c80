"""Fuzzing the web-action route against a real server (Hypothesis).

Any method, extension, trailing path, query, header and body sent to real web actions (plain,
`raw-http`, and one whose result is whatever the caller asks for) is answered without a platform
error (no 500, 503 or traceback), and a refusal has OpenWhisk's `{"error", "code"}` shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import (
    FUZZ_DERANDOMIZE,
    FUZZ_EXAMPLES,
    GUEST_KEY,
    GUEST_UUID,
    ServerProcess,
    served,
)

EXAMPLES = FUZZ_EXAMPLES * 8
# Echoes what it got; with `shape` it answers whatever statusCode, headers and body it is sent,
# so generated requests also make the platform render generated results.
ECHO = """
def main(args):
    if "shape" in args:
        return args["shape"]
    return {"got": {k: v for k, v in args.items() if k.startswith("__ow_")}}
"""
ACTIONS = {"plain": {}, "raw": {"raw-http": True}}

header_names = st.sampled_from(
    ["content-type", "accept", "x-custom", "x-require-whisk-auth", "authorization", "cookie"]
)
# What HTTP allows in a header value: visible ASCII and inner spaces.
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
    str.strip
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
shapes = st.fixed_dictionaries(
    {},
    optional={
        "statusCode": st.integers(-5, 1000) | json_values,
        "headers": st.dictionaries(st.text(max_size=10), json_values, max_size=3) | json_values,
        "body": json_values | st.binary(max_size=30).map(lambda b: b.hex()),
    },
)
requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
        "action": st.sampled_from(sorted(ACTIONS)),
        "extension": st.sampled_from([".json", ".http", ".html", ".text", ".svg", "", ".xyz"]),
        "tail": st.sampled_from(["", "/a", "/a/b", "/%2e%2e", "/x?y"]),
        "query": st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=3),
        "headers": st.dictionaries(header_names, header_values, max_size=3),
        "body": st.none()
        | json_values.map(lambda v: {"v": v})
        | shapes.map(lambda s: {"shape": s})
        | st.binary(max_size=60),
    }
)


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with (
        served(tmp_path_factory, "web") as server,
        httpx.Client(base_url=server.url, auth=(GUEST_UUID, GUEST_KEY), timeout=30) as api,
    ):
        for name, extra in ACTIONS.items():
            annotations = [{"key": "web-export", "value": True}] + [
                {"key": k, "value": v} for k, v in extra.items()
            ]
            body = {"exec": {"kind": "python:3", "code": ECHO}, "annotations": annotations}
            created = api.put(f"/api/v1/namespaces/_/actions/{name}", json=body)
            assert created.status_code == 200, created.text
        yield server


@pytest.mark.timeout(max(120, EXAMPLES))
@given(request=requests)
@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=FUZZ_DERANDOMIZE,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_web_requests_never_break_the_platform(
    web_server: ServerProcess, request: dict[str, Any]
) -> None:
    url = f"{web_server.url}/api/v1/web/guest/default/{request['action']}{request['extension']}"
    body = request["body"]
    content: bytes | None = body if isinstance(body, bytes) else None
    as_json = body if isinstance(body, dict) else None
    answer = httpx.request(
        request["method"], url + request["tail"], params=request["query"],
        headers=request["headers"], content=content, json=as_json, timeout=10,
    )  # fmt: skip
    assert answer.status_code not in (500, 503), answer.text
    if answer.status_code in (400, 401, 403, 404, 405, 413) and request["method"] != "HEAD":
        if answer.headers.get("content-type", "").startswith("application/json"):
            error = answer.json()
            if isinstance(error, dict) and "error" in error and "code" in error:
                return
        # Otherwise the action chose this status itself (a `shape` with its own statusCode).
        assert body is not None and isinstance(body, dict) and "shape" in body, answer.text


def test_the_server_is_clean_after_web_fuzzing(web_server: ServerProcess) -> None:
    assert httpx.get(web_server.url + "/readyz", timeout=5).status_code == 200
    log = web_server.output()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


@pytest.mark.parametrize("status", [100, 101, 199])
def test_an_informational_status_is_refused_not_hung(
    web_server: ServerProcess, status: int
) -> None:
    # Found by the fuzzer: a 1xx from the action went out as the final response and the client
    # waited for the real one until its timeout.
    url = f"{web_server.url}/api/v1/web/guest/default/plain.http"
    answer = httpx.post(url, json={"shape": {"statusCode": status}}, timeout=10)
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) == {"error", "code"}
