"""The `squall` client commands: the exact HTTP requests they send and what they print.

The server is replaced by `FakeWhiskServer`, an `httpx.MockTransport` with canned answers. It is
a fake for checking request shapes and output only; behaviour against a real server is covered
by the integration tests.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from squall.cli.client import WhiskClient, WhiskError, error_from_response, qualified_name
from squall.cli.commands import Session, cli, parse_value, strip_log_line
from squall.cli.properties import normalize_apihost, resolve

APIHOST = "127.0.0.1:3233"
UUID = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502"
KEY = "123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"
AUTH = f"{UUID}:{KEY}"
BASIC = "Basic " + base64.b64encode(AUTH.encode()).decode()
ACTIVATION_ID = "0123456789abcdef0123456789abcdef"
NOT_FOUND = {"error": "The requested resource does not exist.", "code": "tid42"}

Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


class FakeWhiskServer:
    """Stands in for the API: records every request and answers from canned routes.

    Unknown routes get OpenWhisk's 404 body. Nothing here is executed like a real server would.
    """

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], list[Answer]] = {}
        self.transport = httpx.MockTransport(self._handle)

    def answer(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Queue an answer; the last one queued for a route keeps being repeated."""
        response = httpx.Response(status, json=body, headers=headers)
        self.routes.setdefault((method, f"/api/v1{path}"), []).append(response)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if not answers:
            return httpx.Response(404, json=NOT_FOUND)
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(request) if callable(answer) else answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


class FakeClock:
    """Time that moves only when the command sleeps, so `poll` runs instantly."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def server() -> FakeWhiskServer:
    return FakeWhiskServer()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def wskprops(tmp_path: Path) -> Path:
    return tmp_path / "wskprops"


Run = Callable[..., Result]


@pytest.fixture
def run(server: FakeWhiskServer, clock: FakeClock, wskprops: Path) -> Run:
    """Invoke `squall ARGS` with the fake server behind a real `WhiskClient`."""

    def factory(apihost: str, auth: str, *, log: Callable[[str], None] | None) -> WhiskClient:
        return WhiskClient(apihost, auth, transport=server.transport, log=log)

    def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
        session = Session(client_factory=factory, sleep=clock.sleep, clock=clock.time)
        base_env: dict[str, str | None] = {
            "WSK_CONFIG_FILE": str(wskprops),
            "SQUALL_APIHOST": APIHOST,
            "SQUALL_AUTH": AUTH,
        }
        return CliRunner().invoke(cli, list(args), obj=session, env={**base_env, **(env or {})})

    return invoke


def sent_json(request: httpx.Request) -> Any:
    return json.loads(request.content)


def record(**overrides: Any) -> dict[str, Any]:
    """An activation record in OpenWhisk's shape."""
    base: dict[str, Any] = {
        "namespace": "guest",
        "name": "hello",
        "version": "0.0.1",
        "subject": "guest",
        "activationId": ACTIVATION_ID,
        "start": 1_700_000_000_123,
        "end": 1_700_000_000_165,
        "duration": 42,
        "logs": ["2024-01-01T00:00:00.000Z stdout: hi there"],
        "annotations": [
            {"key": "kind", "value": "python:default"},
            {"key": "initTime", "value": 30},
        ],
        "response": {
            "status": "success",
            "statusCode": 0,
            "success": True,
            "result": {"greeting": "hi"},
        },
    }
    return {**base, **overrides}


# ------------------------------------------------------------------------------- properties


def test_property_set_writes_a_0600_file_and_get_reads_it(run: Run, wskprops: Path) -> None:
    unset = {"SQUALL_APIHOST": None, "SQUALL_AUTH": None}
    result = run("property", "set", "--apihost", APIHOST, "--auth", AUTH, env=unset)

    assert result.exit_code == 0, result.output
    assert "ok: squall API host set to 127.0.0.1:3233" in result.stdout
    assert stat.S_IMODE(wskprops.stat().st_mode) == 0o600
    assert wskprops.read_text().splitlines() == [f"APIHOST={APIHOST}", f"AUTH={AUTH}"]

    shown = run("property", "get", env=unset)
    assert shown.exit_code == 0, shown.output
    assert "http://127.0.0.1:3233" in shown.stdout
    assert f"{UUID}:********" in shown.stdout
    assert KEY not in shown.stdout  # masked unless asked for
    assert KEY in run("property", "get", "--show-key", env=unset).stdout


def test_property_set_keeps_other_lines_and_tightens_the_mode(run: Run, wskprops: Path) -> None:
    wskprops.write_text("# mine\nNAMESPACE=guest\nAUTH=old:key\n")
    wskprops.chmod(0o644)

    result = run("property", "set", "--auth", AUTH)

    assert result.exit_code == 0, result.output
    assert wskprops.read_text().splitlines() == ["# mine", "NAMESPACE=guest", f"AUTH={AUTH}"]
    assert stat.S_IMODE(wskprops.stat().st_mode) == 0o600


def test_property_set_needs_an_option_and_a_wellformed_key(run: Run) -> None:
    assert run("property", "set").exit_code == 2
    bad = run("property", "set", "--auth", "no-colon")
    assert bad.exit_code == 1
    assert bad.stderr == "error: the auth key must look like UUID:KEY\n"


def test_options_beat_environment_beat_file(wskprops: Path) -> None:
    wskprops.write_text("APIHOST=file.example\nAUTH=file:key\n")
    env = {"WSK_CONFIG_FILE": str(wskprops), "SQUALL_AUTH": "env:key"}

    settings = resolve(env=env)
    assert (settings.apihost, settings.auth) == ("file.example", "env:key")
    assert settings.auth_source == "SQUALL_AUTH"
    assert resolve(apihost="opt.example", env=env).apihost == "opt.example"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:3233", "http://127.0.0.1:3233"),
        ("localhost:3233/", "http://localhost:3233"),
        ("[::1]:3233", "http://[::1]:3233"),
        ("whisk.example.com", "https://whisk.example.com"),
        ("http://whisk.example.com:8080/api/v1", "http://whisk.example.com:8080"),
    ],
)
def test_apihost_without_scheme_gets_http_only_on_loopback(given: str, expected: str) -> None:
    assert normalize_apihost(given) == expected


def test_missing_settings_are_one_error_line(run: Run) -> None:
    result = run("action", "list", env={"SQUALL_APIHOST": None})
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no API host is set; run 'squall property set")


# ---------------------------------------------------------------------------------- actions


def test_action_create_sends_exec_limits_and_parameters(
    run: Run, server: FakeWhiskServer, tmp_path: Path
) -> None:
    source = tmp_path / "hello.py"
    source.write_text("def handler(args):\n    return args\n")
    server.answer("PUT", "/namespaces/_/actions/hello", {"name": "hello"})

    result = run(
        "action",
        "create",
        "hello",
        str(source),
        "--main",
        "handler",
        "-p",
        "name",
        "world",
        "-p",
        "count",
        "3",
        "-a",
        "web-export",
        "true",
        "--timeout",
        "5000",
        "--memory",
        "256",
        "--logsize",
        "5",
        "--concurrency",
        "2",
    )

    assert result.exit_code == 0, result.output
    assert result.stdout == "ok: created action hello\n"
    request = server.last
    assert request.method == "PUT"
    assert request.url.path == "/api/v1/namespaces/_/actions/hello"
    assert request.url.query == b""  # create must not overwrite
    assert request.headers["authorization"] == BASIC
    assert sent_json(request) == {
        "exec": {"kind": "python:default", "code": source.read_text(), "main": "handler"},
        "parameters": [{"key": "name", "value": "world"}, {"key": "count", "value": 3}],
        "annotations": [{"key": "web-export", "value": True}],
        "limits": {"timeout": 5000, "memory": 256, "logs": 5, "concurrency": 2},
    }


def test_action_update_overwrites_and_sends_only_what_was_given(
    run: Run, server: FakeWhiskServer, tmp_path: Path
) -> None:
    source = tmp_path / "hello.py"
    source.write_text("def main(args):\n    return {}\n")
    server.answer("PUT", "/namespaces/_/actions/hello", {"name": "hello"})

    result = run("action", "update", "hello", str(source))
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok: updated action hello\n"
    assert server.last.url.params["overwrite"] == "true"
    exec_ = {"kind": "python:default", "code": source.read_text()}
    assert sent_json(server.last) == {"exec": exec_}

    params_only = run("action", "update", "hello", "-p", "x", "1")
    assert params_only.exit_code == 0, params_only.output
    assert sent_json(server.last) == {"parameters": [{"key": "x", "value": 1}]}


def test_param_file_is_merged_under_p_values(
    run: Run, server: FakeWhiskServer, tmp_path: Path
) -> None:
    source = tmp_path / "a.py"
    source.write_text("def main(a): return a\n")
    params = tmp_path / "params.json"
    params.write_text('{"a": 1, "b": {"deep": true}}')
    server.answer("PUT", "/namespaces/_/actions/a", {})

    result = run("action", "create", "a", str(source), "-P", str(params), "-p", "a", "2")

    assert result.exit_code == 0, result.output
    assert sent_json(server.last)["parameters"] == [
        {"key": "a", "value": 2},
        {"key": "b", "value": {"deep": True}},
    ]


def test_zip_needs_kind_and_is_sent_as_base64(
    run: Run, server: FakeWhiskServer, tmp_path: Path
) -> None:
    archive = tmp_path / "app.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("__main__.py", "def main(a): return a\n")
    server.answer("PUT", "/namespaces/_/actions/app", {})

    refused = run("action", "create", "app", str(archive))
    assert refused.exit_code == 2
    assert "--kind" in refused.stderr
    assert server.requests == []

    result = run("action", "create", "app", str(archive), "--kind", "python:3.11")
    assert result.exit_code == 0, result.output
    assert sent_json(server.last)["exec"] == {
        "kind": "python:3.11",
        "code": base64.b64encode(archive.read_bytes()).decode(),
        "binary": True,
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5),
        ("2.5", 2.5),
        ("true", True),
        ("null", None),
        ('"quoted"', "quoted"),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("[1]", [1]),
        ("hello", "hello"),
        ("hello world", "hello world"),
        ("NaN", "NaN"),
        ("{broken", "{broken"),
        ("", ""),
    ],
)
def test_p_values_are_json_when_valid_json_else_strings(text: str, value: Any) -> None:
    assert parse_value(text) == value


def test_action_get_list_and_delete(run: Run, server: FakeWhiskServer) -> None:
    action = {
        "namespace": "guest",
        "name": "hello",
        "version": "0.0.2",
        "publish": False,
        "exec": {"kind": "python:default"},
        "parameters": [{"key": "x", "value": 1}],
    }
    server.answer("GET", "/namespaces/_/actions/hello", action)
    server.answer("GET", "/namespaces/_/actions", [action])
    server.answer("DELETE", "/namespaces/_/actions/hello", action)

    got = run("action", "get", "hello", "--no-code")
    assert got.exit_code == 0, got.output
    assert server.last.url.params["code"] == "false"
    assert got.stdout.startswith("ok: got action hello\n")
    assert json.loads(got.stdout.split("\n", 1)[1]) == action

    summary = run("action", "get", "hello", "--summary")
    assert "action /guest/hello" in summary.stdout
    assert "(parameters: x)" in summary.stdout

    listed = run("action", "list", "--limit", "5", "--skip", "1")
    assert dict(server.last.url.params) == {"limit": "5", "skip": "1"}
    assert listed.stdout.splitlines() == ["actions", "/guest/hello  private  python:default"]

    raw = run("--json", "action", "list")
    assert json.loads(raw.stdout) == [action]

    deleted = run("action", "delete", "hello")
    assert (server.last.method, deleted.stdout) == ("DELETE", "ok: deleted action hello\n")


def test_names_are_quoted_and_qualified_names_keep_their_namespace(
    run: Run, server: FakeWhiskServer
) -> None:
    run("action", "get", "my pkg/say hi")
    assert server.last.url.raw_path == b"/api/v1/namespaces/_/actions/my%20pkg/say%20hi"
    run("action", "delete", "/guest/pkg/a")
    assert server.last.url.path == "/api/v1/namespaces/guest/actions/pkg/a"
    assert qualified_name("pkg/a") == "/_/pkg/a"
    bad = run("action", "get", "a/b/c/d")
    assert bad.stderr == "error: invalid entity name 'a/b/c/d'\n"


# ----------------------------------------------------------------------------------- invoke


def test_invoke_non_blocking_prints_the_activation_id(run: Run, server: FakeWhiskServer) -> None:
    server.answer(
        "POST",
        "/namespaces/_/actions/hello",
        {"activationId": ACTIVATION_ID},
        status=202,
        headers={"x-openwhisk-activation-id": ACTIVATION_ID},
    )

    result = run("action", "invoke", "hello", "-p", "name", "Ada", "-p", "n", "7")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok: invoked /_/hello with id {ACTIVATION_ID}\n"
    assert server.last.method == "POST"
    assert server.last.url.query == b""  # blocking and result default to false server-side
    assert sent_json(server.last) == {"name": "Ada", "n": 7}


def test_invoke_blocking_prints_the_record(run: Run, server: FakeWhiskServer) -> None:
    server.answer("POST", "/namespaces/_/actions/hello", record())

    result = run("action", "invoke", "hello", "--blocking")

    assert result.exit_code == 0, result.output
    assert dict(server.last.url.params) == {"blocking": "true"}
    assert json.loads(result.stdout) == record()


def test_invoke_result_implies_blocking_and_prints_only_the_result(
    run: Run, server: FakeWhiskServer
) -> None:
    server.answer("POST", "/namespaces/_/actions/hello", {"greeting": "hi"})

    result = run("action", "invoke", "hello", "-r")

    assert result.exit_code == 0, result.output
    assert dict(server.last.url.params) == {"blocking": "true", "result": "true"}
    assert json.loads(result.stdout) == {"greeting": "hi"}


def test_invoke_of_a_failing_action_prints_the_result_and_exits_1(
    run: Run, server: FakeWhiskServer
) -> None:
    server.answer(
        "POST",
        "/namespaces/_/actions/hello",
        {"error": "boom"},
        status=502,
        headers={"x-openwhisk-activation-id": ACTIVATION_ID},
    )

    result = run("action", "invoke", "hello", "-r")

    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": "boom"}
    assert result.stderr == (
        f"error: action /_/hello failed: HTTP 502 (activation {ACTIVATION_ID})\n"
    )


def test_blocking_invoke_that_outlives_the_wait_reports_the_id(
    run: Run, server: FakeWhiskServer
) -> None:
    server.answer("POST", "/namespaces/_/actions/slow", {"activationId": ACTIVATION_ID}, status=202)

    result = run("action", "invoke", "slow", "-b")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok: invoked /_/slow with id {ACTIVATION_ID}\n"
    assert f"squall activation get {ACTIVATION_ID}" in result.stderr


# -------------------------------------------------------------------------- triggers, rules

FEED = "/whisk.system/alarms/alarm"
FEED_URL = "/namespaces/whisk.system/actions/alarms/alarm"


def trigger(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "namespace": "guest",
        "name": "tick",
        "version": "0.0.1",
        "publish": False,
        "parameters": [],
        "annotations": [],
        "limits": {},
        "updated": 1,
    }
    return {**base, **overrides}


def test_trigger_create_update_get_list_delete(run: Run, server: FakeWhiskServer) -> None:
    server.answer("PUT", "/namespaces/_/triggers/tick", trigger())
    server.answer("GET", "/namespaces/_/triggers/tick", trigger())
    server.answer("GET", "/namespaces/_/triggers", [trigger()])
    server.answer("DELETE", "/namespaces/_/triggers/tick", trigger())

    created = run("trigger", "create", "tick", "-p", "n", "1", "-a", "description", "every tick")
    assert created.exit_code == 0, created.output
    assert created.stdout == "ok: created trigger tick\n"
    assert server.last.url.query == b""
    assert sent_json(server.last) == {
        "parameters": [{"key": "n", "value": 1}],
        "annotations": [{"key": "description", "value": "every tick"}],
    }

    updated = run("trigger", "update", "tick", "-p", "n", "2")
    assert updated.exit_code == 0, updated.output
    get, put = server.requests[-2:]
    assert (get.method, put.method) == ("GET", "PUT")  # update looks for a feed first
    assert put.url.params["overwrite"] == "true"
    assert sent_json(put) == {"parameters": [{"key": "n", "value": 2}]}

    got = run("trigger", "get", "tick")
    assert got.stdout.startswith("ok: got trigger tick\n")
    assert json.loads(got.stdout.split("\n", 1)[1]) == trigger()

    listed = run("trigger", "list", "--limit", "3")
    assert dict(server.last.url.params) == {"limit": "3"}
    assert listed.stdout.splitlines() == ["triggers", "/guest/tick  private"]

    deleted = run("trigger", "delete", "tick")
    assert deleted.exit_code == 0, deleted.output
    assert [r.method for r in server.requests[-2:]] == ["GET", "DELETE"]
    assert deleted.stdout == "ok: deleted trigger tick\n"


def test_trigger_create_with_a_feed_invokes_it(run: Run, server: FakeWhiskServer) -> None:
    server.answer("PUT", "/namespaces/_/triggers/tick", trigger())
    server.answer("GET", "/namespaces", ["guest"])
    server.answer("POST", FEED_URL, record(name="alarm"))

    result = run("trigger", "create", "tick", "--feed", FEED, "-p", "cron", "*/2 * * * *")

    assert result.exit_code == 0, result.output
    assert result.stdout == "ok: created trigger tick\n"
    put, namespaces, invoke = server.requests
    # The trigger carries the feed annotation; the parameters go to the feed, not the trigger.
    assert sent_json(put) == {"annotations": [{"key": "feed", "value": FEED}]}
    assert namespaces.url.path == "/api/v1/namespaces"
    assert dict(invoke.url.params) == {"blocking": "true"}
    assert sent_json(invoke) == {
        "cron": "*/2 * * * *",
        "lifecycleEvent": "CREATE",
        "triggerName": "/guest/tick",
        "authKey": AUTH,
    }


def test_a_failing_feed_deletes_the_new_trigger(run: Run, server: FakeWhiskServer) -> None:
    server.answer("PUT", "/namespaces/guest/triggers/tick", trigger())
    server.answer("DELETE", "/namespaces/guest/triggers/tick", trigger())
    failed = record(
        response={
            "status": "application error",
            "statusCode": 1,
            "success": False,
            "result": {"error": "cron pattern is not valid"},
        }
    )
    headers = {"x-openwhisk-activation-id": ACTIVATION_ID}
    feed_url = "/namespaces/guest/actions/feeds/alarm"
    server.answer("POST", feed_url, failed, status=502, headers=headers)

    result = run("trigger", "create", "/guest/tick", "--feed", "/guest/feeds/alarm")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: feed /guest/feeds/alarm failed to create trigger /guest/tick: "
        "cron pattern is not valid\n"
    )
    assert [r.method for r in server.requests] == ["PUT", "POST", "DELETE"]
    assert sent_json(server.requests[1])["triggerName"] == "/guest/tick"  # no lookup needed


def test_feed_triggers_are_updated_and_deleted_through_their_feed(
    run: Run, server: FakeWhiskServer
) -> None:
    fed = trigger(annotations=[{"key": "feed", "value": FEED}])
    server.answer("GET", "/namespaces/_/triggers/tick", fed)
    server.answer("GET", "/namespaces", ["guest"])
    server.answer("POST", FEED_URL, record(name="alarm"))
    server.answer("DELETE", "/namespaces/_/triggers/tick", fed)

    updated = run("trigger", "update", "tick", "-p", "cron", "0 * * * *")
    assert updated.exit_code == 0, updated.output
    assert [r.method for r in server.requests] == ["GET", "GET", "POST"]  # no PUT
    assert sent_json(server.last) == {
        "cron": "0 * * * *",
        "lifecycleEvent": "UPDATE",
        "triggerName": "/guest/tick",
        "authKey": AUTH,
    }

    server.requests.clear()
    deleted = run("trigger", "delete", "tick")
    assert deleted.exit_code == 0, deleted.output
    assert [r.method for r in server.requests] == ["GET", "GET", "POST", "DELETE"]
    assert sent_json(server.requests[2])["lifecycleEvent"] == "DELETE"
    assert deleted.stdout == "ok: deleted trigger tick\n"

    other_feed = run("trigger", "update", "tick", "--feed", "/other/feed")
    assert other_feed.exit_code == 2 and "already has the feed" in other_feed.stderr


def test_trigger_delete_goes_on_when_the_feed_fails(run: Run, server: FakeWhiskServer) -> None:
    fed = trigger(annotations=[{"key": "feed", "value": "/guest/feeds/alarm"}])
    server.answer("GET", "/namespaces/_/triggers/tick", fed)
    server.answer("GET", "/namespaces", ["guest"])
    server.answer("DELETE", "/namespaces/_/triggers/tick", fed)
    # The feed action is missing: 404 from the API.

    result = run("trigger", "delete", "tick")

    assert result.exit_code == 0, result.output
    assert server.last.method == "DELETE"
    assert "warning: feed /guest/feeds/alarm failed" in result.stderr


def test_trigger_fire_prints_the_id_or_a_note(run: Run, server: FakeWhiskServer) -> None:
    headers = {"x-openwhisk-activation-id": ACTIVATION_ID}
    url = "/namespaces/_/triggers/tick"
    server.answer("POST", url, {"activationId": ACTIVATION_ID}, status=202, headers=headers)
    server.answer("POST", url, None, status=204)

    fired = run("trigger", "fire", "tick", "-p", "n", "3")
    assert fired.exit_code == 0, fired.output
    assert fired.stdout == f"ok: triggered /_/tick with id {ACTIVATION_ID}\n"
    assert sent_json(server.last) == {"n": 3}
    assert server.last.url.query == b""

    idle = run("trigger", "fire", "tick")
    assert idle.exit_code == 0, idle.output
    assert idle.stdout == "ok: triggered /_/tick; it has no active rule, so nothing was invoked\n"
    assert sent_json(server.last) == {}
    assert json.loads(run("--json", "trigger", "fire", "tick").stdout) == {}

    missing = run("trigger", "fire", "nope")
    assert missing.exit_code == 1 and "does not exist" in missing.stderr


def test_rule_commands(run: Run, server: FakeWhiskServer) -> None:
    rule = {
        "namespace": "guest",
        "name": "every",
        "version": "0.0.1",
        "publish": False,
        "annotations": [],
        "trigger": {"path": "guest", "name": "tick"},
        "action": {"path": "guest", "name": "hello"},
        "status": "active",
        "updated": 1,
    }
    url = "/namespaces/_/rules/every"
    server.answer("PUT", url, rule)
    server.answer("GET", url, rule)
    server.answer("POST", url, rule)
    server.answer("DELETE", url, rule)
    server.answer("GET", "/namespaces/_/rules", [rule])

    created = run("rule", "create", "every", "tick", "pkg/hello")
    assert created.exit_code == 0, created.output
    assert created.stdout == "ok: created rule every\n"
    assert server.last.url.query == b""
    assert sent_json(server.last) == {"trigger": "/_/tick", "action": "/_/pkg/hello"}

    updated = run("rule", "update", "every", "/guest/tick", "hello")
    assert updated.exit_code == 0, updated.output
    assert server.last.url.params["overwrite"] == "true"
    assert sent_json(server.last) == {"trigger": "/guest/tick", "action": "/_/hello"}

    for command, status in (("disable", "inactive"), ("enable", "active")):
        result = run("rule", command, "every")
        assert result.exit_code == 0, result.output
        assert result.stdout == f"ok: {command}d rule every\n"
        assert (server.last.method, sent_json(server.last)) == ("POST", {"status": status})

    got = run("rule", "get", "every")
    assert json.loads(got.stdout.split("\n", 1)[1]) == rule
    assert run("rule", "status", "every").stdout == "ok: rule every is active\n"
    listed = run("rule", "list")
    assert listed.stdout.splitlines() == ["rules", "/guest/every  private  active"]

    deleted = run("rule", "delete", "every", "--disable")
    assert deleted.exit_code == 0, deleted.output
    assert [r.method for r in server.requests[-2:]] == ["POST", "DELETE"]
    assert deleted.stdout == "ok: deleted rule every\n"


# ------------------------------------------------------------------------------ activations


def test_activation_list_prints_a_table(run: Run, server: FakeWhiskServer) -> None:
    warm = record(
        activationId="f" * 32,
        annotations=[{"key": "kind", "value": "python:default"}],
        statusCode=1,
        duration=7,
    )
    server.answer("GET", "/namespaces/_/activations", [record(), warm])

    result = run("activation", "list", "hello", "--limit", "2", "--since", "1", "--upto", "9")

    assert result.exit_code == 0, result.output
    assert dict(server.last.url.params) == {
        "name": "hello",
        "limit": "2",
        "since": "1",
        "upto": "9",
    }
    when = datetime.fromtimestamp(1_700_000_000.123).strftime("%Y-%m-%d %H:%M:%S")
    header, cold_row, warm_row = result.stdout.splitlines()
    assert header.split() == [
        "Datetime",
        "Activation",
        "ID",
        "Kind",
        "Start",
        "Duration",
        "Status",
        "Entity",
    ]
    assert cold_row.split() == [
        *when.split(),
        ACTIVATION_ID,
        "python:default",
        "cold",
        "42ms",
        "success",
        "guest/hello:0.0.1",
    ]
    assert warm_row.split() == [
        *when.split(),
        "f" * 32,
        "python:default",
        "warm",
        "7ms",
        "application",
        "error",
        "guest/hello:0.0.1",
    ]


def test_last_uses_the_newest_activation(run: Run, server: FakeWhiskServer) -> None:
    server.answer("GET", "/namespaces/_/activations", [record()])
    server.answer("GET", f"/namespaces/_/activations/{ACTIVATION_ID}", record())
    server.answer(
        "GET", f"/namespaces/_/activations/{ACTIVATION_ID}/logs", {"logs": record()["logs"]}
    )

    got = run("activation", "get", "--last")
    assert got.exit_code == 0, got.output
    listing, fetch = server.requests
    assert dict(listing.url.params) == {"limit": "1"}
    assert fetch.url.path == f"/api/v1/namespaces/_/activations/{ACTIVATION_ID}"
    assert got.stdout.startswith(f"ok: got activation {ACTIVATION_ID}\n")

    logs = run("activation", "logs", "--last", "--strip")
    assert logs.exit_code == 0, logs.output
    assert logs.stdout == "hi there\n"


def test_activation_result_and_logs_by_id(run: Run, server: FakeWhiskServer) -> None:
    path = f"/namespaces/_/activations/{ACTIVATION_ID}"
    server.answer("GET", f"{path}/result", record()["response"])
    server.answer("GET", f"{path}/logs", {"logs": record()["logs"]})

    result = run("activation", "result", ACTIVATION_ID)
    assert json.loads(result.stdout) == {"greeting": "hi"}
    logs = run("activation", "logs", ACTIVATION_ID)
    assert logs.stdout == "2024-01-01T00:00:00.000Z stdout: hi there\n"
    assert run("activation", "logs").exit_code == 2  # neither an ID nor --last


def test_strip_removes_timestamp_and_stream() -> None:
    assert strip_log_line("2024-01-01T00:00:00.1Z stderr: oops: bad") == "oops: bad"
    assert strip_log_line("no prefix here") == "no prefix here"


def test_poll_prints_each_new_activation_once_and_stops(
    run: Run, server: FakeWhiskServer, clock: FakeClock
) -> None:
    first = record()
    second = record(activationId="e" * 32, name="other", logs=["t stdout: second"])
    listing = "/namespaces/_/activations"
    server.answer("GET", listing, [])
    server.answer("GET", listing, [first])
    server.answer("GET", listing, [second, first])  # newest first, as the API lists

    result = run("activation", "poll", "--exit", "3")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"Activation: 'hello' ({ACTIVATION_ID})",
        "    2024-01-01T00:00:00.000Z stdout: hi there",
        f"Activation: 'other' ({'e' * 32})",
        "    t stdout: second",
    ]
    assert clock.sleeps == [1.0, 1.0, 1.0]
    assert len(server.requests) == 4
    assert dict(server.last.url.params) == {
        "since": "1700000000000",
        "limit": "200",
        "docs": "true",
    }


# ---------------------------------------------------------------------------------- errors


def test_error_body_becomes_one_line_and_exit_1(run: Run, server: FakeWhiskServer) -> None:
    result = run("action", "get", "missing")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "error: The requested resource does not exist. (code tid42)\n"


def test_error_without_openwhisk_body_falls_back_to_text() -> None:
    response = httpx.Response(502, text="<html>Bad Gateway</html>\nmore")
    error = error_from_response(response)
    assert (error.status, str(error)) == (502, "HTTP 502 Bad Gateway: <html>Bad Gateway</html>")
    assert isinstance(error, WhiskError)


def test_connection_refused_names_the_host_without_a_traceback(wskprops: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"WSK_CONFIG_FILE": str(wskprops), "SQUALL_AUTH": AUTH, "SQUALL_APIHOST": None}

    result = CliRunner().invoke(cli, ["--apihost", f"127.0.0.1:{port}", "action", "list"], env=env)

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot reach the API at http://127.0.0.1:{port}: ")
    assert result.stderr.endswith("(is 'squall standalone' running?)\n")
    assert "Traceback" not in result.output


def test_verbose_prints_requests_but_never_the_key(run: Run, server: FakeWhiskServer) -> None:
    server.answer("GET", "/namespaces/_/actions", [])

    result = run("action", "list", "-v", env={"SQUALL_APIHOST": f"http://u:pw@{APIHOST}"})

    assert result.exit_code == 0, result.output
    assert server.last.headers["authorization"] == BASIC  # the key was sent...
    assert result.stderr.startswith(f"GET http://{APIHOST}/api/v1/namespaces/_/actions -> 200 (")
    secrets = [KEY, BASIC.split()[1], "Authorization", "authorization", "pw"]
    assert not [s for s in secrets if s in result.output]  # ...but never shown


def test_every_command_has_help(run: Run) -> None:
    commands = [
        [],
        ["property"],
        ["property", "set"],
        ["property", "get"],
        ["action"],
        *[["action", c] for c in ("create", "update", "get", "list", "delete", "invoke")],
        ["trigger"],
        *[["trigger", c] for c in ("create", "update", "get", "list", "delete", "fire")],
        ["rule"],
        *[
            ["rule", c]
            for c in ("create", "update", "get", "status", "list", "enable", "disable", "delete")
        ],
        ["activation"],
        *[["activation", c] for c in ("list", "get", "result", "logs", "poll")],
        ["package"],
        *[["package", c] for c in ("create", "update", "bind", "get", "list", "delete")],
    ]
    for words in commands:
        result = run(*words, "--help")
        assert result.exit_code == 0, words
        assert "Usage:" in result.stdout


def test_settings_file_is_not_needed_for_help(tmp_path: Path) -> None:
    env = {"WSK_CONFIG_FILE": str(tmp_path / "absent"), "SQUALL_APIHOST": None}
    assert CliRunner().invoke(cli, ["action", "list", "--help"], env=env).exit_code == 0
    assert not os.path.exists(tmp_path / "absent")


# ---------------------------------------------------------------------------------- packages


def test_package_commands_send_openwhisk_shapes(run: Run, server: FakeWhiskServer) -> None:
    server.answer("PUT", "/namespaces/_/packages/tools", {"name": "tools"})
    created = run("package", "create", "tools", "-p", "region", "eu", "--shared", "yes")
    assert created.exit_code == 0, created.output
    assert created.stdout == "ok: created package tools\n"
    assert server.last.url.query == b""
    assert sent_json(server.last) == {
        "parameters": [{"key": "region", "value": "eu"}],
        "publish": True,
    }
    updated = run("package", "update", "tools", "-a", "description", "kit")
    assert updated.exit_code == 0, updated.output
    assert server.last.url.params["overwrite"] == "true"
    assert sent_json(server.last) == {"annotations": [{"key": "description", "value": "kit"}]}

    server.answer("PUT", "/namespaces/_/packages/mine", {"name": "mine"})
    bound = run("package", "bind", "/other/shared", "mine", "-p", "level", "2")
    assert bound.exit_code == 0, bound.output
    assert sent_json(server.last) == {
        "binding": {"namespace": "other", "name": "shared"},
        "parameters": [{"key": "level", "value": 2}],
    }
    local = run("package", "bind", "tools", "mine")
    assert local.exit_code == 0, local.output
    assert sent_json(server.last)["binding"] == {"namespace": "_", "name": "tools"}
    assert run("package", "bind", "a/b", "mine").exit_code == 2

    package = {
        "namespace": "guest",
        "name": "tools",
        "publish": True,
        "binding": {},
        "parameters": [{"key": "region", "value": "eu"}],
        "actions": [{"name": "echo"}],
    }
    server.answer("GET", "/namespaces/_/packages/tools", package)
    summary = run("package", "get", "tools", "--summary")
    assert summary.stdout.splitlines() == [
        "package /guest/tools",
        "   (parameters: region)",
        " action /guest/tools/echo",
    ]
    server.answer("GET", "/namespaces/other/packages", [package])
    listed = run("package", "list", "/other", "--limit", "5")
    assert listed.stdout.splitlines() == ["packages", "/guest/tools  shared"]
    assert server.last.url.params["limit"] == "5"

    server.answer("DELETE", "/namespaces/_/packages/tools", package)
    assert run("package", "delete", "tools", "--force").exit_code == 0
    assert server.last.url.params["force"] == "true"
    assert run("package", "delete", "tools").exit_code == 0
    assert "force" not in server.last.url.params


def test_action_create_sequence_and_web_annotations(
    run: Run, server: FakeWhiskServer, tmp_path: Path
) -> None:
    server.answer("PUT", "/namespaces/_/actions/seq", {"name": "seq"})
    result = run(
        "action", "create", "seq", "--sequence", "a, tools/b,/other/pkg/c", "--web", "true"
    )
    assert result.exit_code == 0, result.output
    assert sent_json(server.last) == {
        "exec": {"kind": "sequence", "components": ["/_/a", "/_/tools/b", "/other/pkg/c"]},
        "annotations": [
            {"key": "web-export", "value": True},
            {"key": "raw-http", "value": False},
            {"key": "final", "value": True},
        ],
    }
    server.answer("PUT", "/namespaces/_/actions/tools/page", {"name": "page"})
    source = tmp_path / "page.py"
    source.write_text("def main(args):\n    return {'body': 'hi'}\n")
    raw = run(
        "action", "update", "tools/page", str(source), "--web", "raw", "--web-secure", "s3cret"
    )
    assert raw.exit_code == 0, raw.output
    assert server.last.url.path == "/api/v1/namespaces/_/actions/tools/page"
    annotations = {a["key"]: a["value"] for a in sent_json(server.last)["annotations"]}
    assert annotations == {
        "web-export": True,
        "raw-http": True,
        "final": True,
        "require-whisk-auth": "s3cret",
    }
    generated = run("action", "update", "tools/page", "--web-secure", "true")
    secret = sent_json(server.last)["annotations"][0]["value"]
    assert generated.exit_code == 0 and isinstance(secret, int) and secret >= 10**14
    for bad in (
        ["action", "create", "x"],
        ["action", "create", "x", str(source), "--sequence", "a"],
    ):
        assert run(*bad).exit_code == 2
