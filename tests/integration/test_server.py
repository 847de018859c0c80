"""A real `squall standalone` process: restarts, credentials, the CLI, and isolation."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    GUEST_AUTH,
    GUEST_KEY,
    GUEST_UUID,
    ServerProcess,
    require,
    start_server,
    stop_server,
)

HELLO = (
    "def main(args):\n    print('hello', args.get('name'))\n    return {'hi': args.get('name')}\n"
)


def client(server: ServerProcess, auth: tuple[str, str] = (GUEST_UUID, GUEST_KEY)) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=auth, timeout=30)


def put_action(api: httpx.Client, name: str, code: str = HELLO) -> None:
    response = api.put(
        f"/api/v1/namespaces/_/actions/{name}", json={"exec": {"kind": "python:3", "code": code}}
    )
    assert response.status_code == 200, response.text


def wait_for_records(api: httpx.Client, name: str, count: int) -> int:
    seen = 0
    for _ in range(100):
        seen = api.get(
            "/api/v1/namespaces/_/activations", params={"name": name, "count": "true"}
        ).json()["activations"]
        if seen >= count:
            return int(seen)
        time.sleep(0.05)
    return int(seen)


def test_entities_and_activations_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data, tmp_path / "first.log")
    try:
        with client(server) as api:
            put_action(api, "survivor")
            blocking = api.post(
                "/api/v1/namespaces/_/actions/survivor?blocking=true", json={"name": "a"}
            )
            assert blocking.status_code == 200
            accepted = [
                api.post("/api/v1/namespaces/_/actions/survivor", json={"name": i}).json()
                for i in range(50)
            ]
            assert all("activationId" in a for a in accepted)
            # Give the 50 asynchronous runs time to finish, then stop while writes are batched.
            assert wait_for_records(api, "survivor", 51) == 51
    finally:
        stop_server(server)
    assert server.process.returncode == 0, server.output()
    again = start_server(data, tmp_path / "second.log")
    try:
        with client(again) as api:
            got = api.get("/api/v1/namespaces/_/actions/survivor")
            assert got.status_code == 200 and got.json()["exec"]["code"] == HELLO
            count = api.get(
                "/api/v1/namespaces/_/activations", params={"name": "survivor", "count": "true"}
            ).json()
            assert count == {"activations": 51}
            first = api.get(f"/api/v1/namespaces/_/activations/{blocking.json()['activationId']}")
            assert first.json()["response"]["result"] == {"hi": "a"}
    finally:
        stop_server(again)


def test_guest_credentials_are_generated_once_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"SQUALL_GUEST_AUTH": ""}
    server = start_server(data, tmp_path / "first.log", env=env)
    try:
        printed = re.search(r"guest namespace auth: (\S+:\S+)", server.output())
        assert printed, server.output()
        auth = printed.group(1)
        assert auth != GUEST_AUTH
        key_file = data / "guest.auth"
        assert key_file.read_text().strip() == auth
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        uid, _, key = auth.partition(":")
        with client(server, (uid, key)) as api:
            assert api.get("/api/v1/namespaces").json() == ["guest"]
    finally:
        stop_server(server)
    again = start_server(data, tmp_path / "second.log", env=env)
    try:
        assert f"guest namespace auth: {auth}" in again.output()
        with client(again, (uid, key)) as api:
            assert api.get("/api/v1/namespaces").status_code == 200
    finally:
        stop_server(again)


def test_chosen_guest_credentials_are_not_echoed(server: ServerProcess) -> None:
    assert GUEST_KEY not in server.output()
    assert f"uuid {GUEST_UUID}" in server.output()


def squall(server: ServerProcess, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WSK_CONFIG_FILE": str(tmp_path / "wskprops")}
    env.pop("SQUALL_APIHOST", None)
    env.pop("SQUALL_AUTH", None)
    return subprocess.run(
        [sys.executable, "-m", "squall.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_against_a_real_server(server: ServerProcess, tmp_path: Path) -> None:
    setup = squall(
        server, tmp_path, "property", "set", "--apihost", server.url, "--auth", GUEST_AUTH
    )
    assert setup.returncode == 0, setup.stderr
    code = tmp_path / "cli_hello.py"
    code.write_text(HELLO)
    created = squall(
        server, tmp_path, "action", "create", "cli-hello", str(code), "-p", "name", "default"
    )
    assert created.returncode == 0 and "ok: created action cli-hello" in created.stdout, (
        created.stderr
    )
    result = squall(
        server, tmp_path, "action", "invoke", "cli-hello", "-p", "name", "Squall", "--result"
    )
    assert result.returncode == 0, result.stderr
    assert '"hi": "Squall"' in result.stdout
    listed = squall(server, tmp_path, "activation", "list", "cli-hello")
    assert listed.returncode == 0 and "cli-hello" in listed.stdout
    logs = squall(server, tmp_path, "activation", "logs", "--last", "--strip")
    assert logs.returncode == 0 and "hello Squall" in logs.stdout, logs.stdout + logs.stderr
    missing = squall(server, tmp_path, "action", "get", "no-such-action")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: The requested resource does not exist.")
    assert "Traceback" not in missing.stderr
    deleted = squall(server, tmp_path, "action", "delete", "cli-hello")
    assert deleted.returncode == 0 and "ok: deleted action cli-hello" in deleted.stdout


def test_cli_triggers_and_rules_against_a_real_server(
    server: ServerProcess, tmp_path: Path
) -> None:
    setup = squall(
        server, tmp_path, "property", "set", "--apihost", server.url, "--auth", GUEST_AUTH
    )
    assert setup.returncode == 0, setup.stderr
    suffix = uuid.uuid4().hex[:8]
    action, trigger, rule = f"cli-echo-{suffix}", f"cli-tick-{suffix}", f"cli-every-{suffix}"
    code = tmp_path / "echo.py"
    code.write_text("def main(args):\n    return args\n")
    steps = [
        ("action", "create", action, str(code)),
        ("trigger", "create", trigger, "-p", "source", "cli"),
        ("rule", "create", rule, trigger, action),
    ]
    for step in steps:
        done = squall(server, tmp_path, *step)
        assert done.returncode == 0 and done.stdout.startswith("ok: created"), done.stderr
    fired = squall(server, tmp_path, "trigger", "fire", trigger, "-p", "n", "1")
    assert fired.returncode == 0, fired.stderr
    match = re.fullmatch(rf"ok: triggered /_/{trigger} with id ([0-9a-f]{{32}})\n", fired.stdout)
    assert match, fired.stdout
    trigger_id = match.group(1)
    listed = ""
    for _ in range(100):
        listed = squall(server, tmp_path, "activation", "list", "--limit", "50").stdout
        if trigger_id in listed and f"guest/{action}" in listed:
            break
        time.sleep(0.1)
    assert f"guest/{trigger}:0.0.1" in listed and f"guest/{action}:0.0.1" in listed, listed
    assert squall(server, tmp_path, "rule", "disable", rule).stdout == f"ok: disabled rule {rule}\n"
    idle = squall(server, tmp_path, "trigger", "fire", trigger)
    assert idle.returncode == 0 and "no active rule" in idle.stdout, idle.stdout + idle.stderr
    for kind, name in (("rule", rule), ("trigger", trigger), ("action", action)):
        deleted = squall(server, tmp_path, kind, "delete", name)
        assert deleted.returncode == 0, deleted.stderr


PROBE = """
import os, glob

def attempt(fn):
    try:
        fn()
        return "allowed"
    except Exception as exc:
        return type(exc).__name__

def main(args):
    return {
        "uid": os.getuid(),
        "squall_env": sorted(k for k in os.environ if k.startswith("SQUALL")),
        "read_db": attempt(lambda: open(args["db"], "rb").read(1)),
        "read_key": attempt(lambda: open(args["key"]).read()),
        "list_data": attempt(lambda: os.listdir(args["data"])),
        "signal_platform": attempt(lambda: os.kill(args["pid"], 0)),
        "list_sandboxes": attempt(lambda: os.listdir(os.path.dirname(os.getcwd()))),
    }
"""


def test_actions_cannot_reach_platform_secrets(server: ServerProcess) -> None:
    require(os.geteuid() == 0, "sandbox users need root; CI runs as root")
    with client(server) as api:
        put_action(api, "probe", PROBE)
        params: dict[str, Any] = {
            "db": str(server.data_dir / "squall.db"),
            "key": str(server.data_dir / "guest.auth"),
            "data": str(server.data_dir),
            "pid": server.process.pid,
        }
        response = api.post(
            "/api/v1/namespaces/_/actions/probe?blocking=true&result=true", json=params
        )
        assert response.status_code == 200, response.text
        seen = response.json()
    assert seen["uid"] != 0
    assert seen["squall_env"] == []
    assert seen["read_db"] == "PermissionError"
    assert seen["read_key"] == "PermissionError"
    assert seen["list_data"] == "PermissionError"
    assert seen["signal_platform"] == "PermissionError"
    assert seen["list_sandboxes"] == "PermissionError"


@pytest.mark.parametrize("flag", ["--port", "--host"])
def test_bad_flags_exit_with_a_clear_message(flag: str, tmp_path: Path) -> None:
    value = "99999" if flag == "--port" else ""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "squall.cli.main",
            "standalone",
            flag,
            value,
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr
