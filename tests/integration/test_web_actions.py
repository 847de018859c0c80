"""Web actions over HTTP (in-process and against a real server): the request as parameters,
the result as the response, authentication annotations, CORS and the errors."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.integration.test_api import assert_error, unique

ECHO = "def main(args):\n    return {'body': args}\n"
HTTP = (
    "import base64\n"
    "def main(args):\n"
    "    kind = args.get('kind')\n"
    "    if kind == 'png':\n"
    "        return {'headers': {'Content-Type': 'image/png'},\n"
    "                'body': base64.b64encode(b'\\x89PNG\\x00\\xff').decode()}\n"
    "    if kind == 'empty':\n"
    "        return {'statusCode': 201}\n"
    "    if kind == 'json':\n"
    "        return {'statusCode': '202', 'headers': {'X-Many': ['a', 'b'], 'X-Flag': True},\n"
    "                'body': {'ok': True}}\n"
    "    if kind == 'fail':\n"
    "        return {'error': {'statusCode': 418, 'body': 'teapot'}}\n"
    "    if kind == 'crash':\n"
    "        raise SystemExit(3)\n"
    "    if kind == 'badcode':\n"
    "        return {'statusCode': 'nope'}\n"
    "    return {'body': '<p>hi ' + args.get('name', '?') + '</p>'}\n"
)


def kv(**values: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in values.items()]


async def web_action(
    api: httpx.AsyncClient, name: str, code: str = ECHO, web: Any = True, **annotations: Any
) -> str:
    body = {
        "exec": {"kind": "python:3", "code": code},
        "annotations": kv(**{"web-export": web}, **annotations),
    }
    response = await api.put(f"/api/v1/namespaces/_/actions/{name}", json=body)
    assert response.status_code == 200, response.text
    return f"/api/v1/web/guest/default/{name}"


async def test_request_becomes_parameters(api: httpx.AsyncClient) -> None:
    url = await web_action(api, unique("w"))
    response = await api.post(
        url + ".json/some/path?q=1",
        json={"name": "web"},
        headers={"X-Custom": "v"},
        auth=None,
    )
    assert response.status_code == 200, response.text
    args = response.json()["body"]
    assert args["__ow_method"] == "post" and args["__ow_path"] == "/some/path"
    assert args["__ow_headers"]["x-custom"] == "v" and args["q"] == "1" and args["name"] == "web"
    assert "__ow_user" not in args and "__ow_body" not in args
    assert response.headers["access-control-allow-origin"] == "*"
    assert len(response.headers["x-openwhisk-activation-id"]) == 32
    form = await api.put(url + ".json", data={"f": "x"}, auth=None)
    assert form.json()["body"]["f"] == "x" and form.json()["body"]["__ow_method"] == "put"
    text = await api.post(
        url + ".json", content=b"plain", headers={"Content-Type": "text/plain"}, auth=None
    )
    assert text.json()["body"]["__ow_body"] == "plain"


async def test_http_results(api: httpx.AsyncClient) -> None:
    url = await web_action(api, unique("w"), HTTP)
    page = await api.get(url, params={"name": "you"}, auth=None)  # no extension: .http
    assert page.status_code == 200 and page.text == "<p>hi you</p>"
    assert page.headers["content-type"].startswith("text/html")
    png = await api.get(url + ".http", params={"kind": "png"}, auth=None)
    assert png.content == b"\x89PNG\x00\xff" and png.headers["content-type"] == "image/png"
    empty = await api.get(url + ".http", params={"kind": "empty"}, auth=None)
    assert empty.status_code == 201 and empty.content == b""
    as_json = await api.get(url + ".http", params={"kind": "json"}, auth=None)
    assert as_json.status_code == 202 and as_json.json() == {"ok": True}
    assert as_json.headers.get_list("x-many") == ["a", "b"]
    assert as_json.headers["x-flag"] == "true"
    failed = await api.get(url + ".http", params={"kind": "fail"}, auth=None)
    assert failed.status_code == 418 and failed.text == "teapot"
    assert_error(await api.get(url, params={"kind": "crash"}, auth=None), 400, "error processing")
    assert_error(await api.get(url, params={"kind": "badcode"}, auth=None), 400, "message/http")


@pytest.mark.parametrize(
    ("extension", "code", "status", "content_type", "body"),
    [
        (".html", "def main(a):\n    return {'html': '<b>x</b>'}\n", 200, "text/html", "<b>x</b>"),
        (".svg", "def main(a):\n    return {'svg': '<svg/>'}\n", 200, "image/svg+xml", "<svg/>"),
        (".text", "def main(a):\n    return {'text': 'plain'}\n", 200, "text/plain", "plain"),
        (".text", "def main(a):\n    return {'other': 1}\n", 404, "application/json", None),
        (".json", "def main(a):\n    return [1, 2]\n", 200, "application/json", "[1,2]"),
        (".html", "def main(a):\n    return {'html': 5}\n", 400, "application/json", None),
    ],
)
async def test_media_extensions(
    api: httpx.AsyncClient, extension: str, code: str, status: int, content_type: str, body: Any
) -> None:
    url = await web_action(api, unique("w"), code)
    response = await api.get(url + extension, auth=None)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(content_type)
    if body is not None:
        assert response.text == body


async def test_raw_http(api: httpx.AsyncClient) -> None:
    url = await web_action(api, unique("w"), **{"raw-http": True})
    response = await api.post(url + ".json?a=1&b=2", json={"x": 1}, auth=None)
    args = response.json()["body"]
    assert args["__ow_query"] == "a=1&b=2" and "a" not in args and "x" not in args
    assert base64.b64decode(args["__ow_body"]) == b'{"x":1}'  # JSON travels base64, as in OW
    # raw-http does not check the reserved names: they are opaque text.
    allowed = await api.get(url + ".json?__ow_method=x", auth=None)
    assert allowed.status_code == 200 and allowed.json()["body"]["__ow_method"] == "get"


async def test_reserved_and_final_parameters(api: httpx.AsyncClient) -> None:
    url = await web_action(api, unique("w"))
    assert_error(await api.get(url + ".json?__ow_user=x", auth=None), 400, "not allowed")
    assert_error(await api.post(url + ".json", json={"__ow_path": "/x"}, auth=None), 400)
    name = unique("w")
    final = await web_action(api, name, final=True)
    await api.put(
        f"/api/v1/namespaces/_/actions/{name}",
        params={"overwrite": "true"},
        json={"parameters": kv(fixed="yes")},
    )
    assert_error(await api.get(final + ".json?fixed=no", auth=None), 400, "not allowed")
    assert (await api.get(final + ".json", auth=None)).json()["body"]["fixed"] == "yes"


async def test_require_whisk_auth(api: httpx.AsyncClient) -> None:
    secured = await web_action(api, unique("w"), **{"require-whisk-auth": True})
    assert_error(await api.get(secured + ".json", auth=None), 401)
    authenticated = await api.get(secured + ".json")
    assert authenticated.status_code == 200
    assert authenticated.json()["body"]["__ow_user"] == "guest"
    secret = await web_action(api, unique("w"), **{"require-whisk-auth": "s3cret"})
    assert_error(await api.get(secret + ".json", auth=None), 401)
    wrong = await api.get(secret + ".json", headers={"X-Require-Whisk-Auth": "no"}, auth=None)
    assert_error(wrong, 401)
    right = await api.get(secret + ".json", headers={"X-Require-Whisk-Auth": "s3cret"}, auth=None)
    assert right.status_code == 200
    numeric = await web_action(api, unique("w"), **{"require-whisk-auth": 1234})
    ok = await api.get(numeric + ".json", headers={"X-Require-Whisk-Auth": "1234"}, auth=None)
    assert ok.status_code == 200


async def test_options_and_cors(api: httpx.AsyncClient) -> None:
    url = await web_action(api, unique("w"), **{"require-whisk-auth": True})
    preflight = await api.options(
        url + ".json", headers={"Access-Control-Request-Headers": "X-Mine"}, auth=None
    )
    assert preflight.status_code == 200 and preflight.content == b""
    assert preflight.headers["access-control-allow-headers"] == "X-Mine"
    assert "PATCH" in preflight.headers["access-control-allow-methods"]
    custom = await web_action(
        api,
        unique("w"),
        "def main(a):\n    return {'statusCode': 204, 'headers': {'Allow': 'GET'}}\n",
        **{"web-custom-options": True},
    )
    handled = await api.options(custom, auth=None)
    assert handled.status_code == 204 and handled.headers["allow"] == "GET"
    assert "access-control-allow-origin" not in handled.headers


async def test_not_web_actions_are_404(api: httpx.AsyncClient) -> None:
    name = unique("w")
    await web_action(api, name, web=False)
    for path in (
        f"guest/default/{name}.json",
        f"guest/default/{unique('none')}.json",
        f"nobody/default/{name}.json",
        f"guest/{unique('nopkg')}/{name}.json",
        "guest/default",
        "guest/default/bad$name",
    ):
        assert_error(await api.get(f"/api/v1/web/{path}", auth=None), 404)


async def test_web_action_in_a_package_and_too_large(api: httpx.AsyncClient) -> None:
    pkg, name = unique("p"), unique("w")
    await api.put(f"/api/v1/namespaces/_/packages/{pkg}", json={"parameters": kv(p="pkg")})
    await web_action(api, f"{pkg}/{name}")
    response = await api.get(f"/api/v1/web/guest/{pkg}/{name}.json", auth=None)
    assert response.status_code == 200 and response.json()["body"]["p"] == "pkg"
    huge = await api.post(
        f"/api/v1/web/guest/{pkg}/{name}.json",
        content=b"x" * (1024 * 1024 + 1),
        headers={"Content-Type": "text/plain"},
        auth=None,
    )
    assert_error(huge, 413)


async def test_web_sequence(api: httpx.AsyncClient) -> None:
    first, seq = unique("a"), unique("s")
    code = "def main(args):\n    return {'name': args['__ow_method'] + '-' + args.get('n', '')}\n"
    await api.put(
        f"/api/v1/namespaces/_/actions/{first}", json={"exec": {"kind": "python:3", "code": code}}
    )
    second = unique("b")
    await api.put(
        f"/api/v1/namespaces/_/actions/{second}",
        json={
            "exec": {"kind": "python:3", "code": "def main(a):\n    return {'body': a['name']}\n"}
        },
    )
    await api.put(
        f"/api/v1/namespaces/_/actions/{seq}",
        json={
            "exec": {"kind": "sequence", "components": [first, second]},
            "annotations": kv(**{"web-export": True}),
        },
    )
    response = await api.get(f"/api/v1/web/guest/default/{seq}.http?n=7", auth=None)
    assert response.status_code == 200 and response.text == "get-7"
