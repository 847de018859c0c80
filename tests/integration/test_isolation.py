"""Sandboxes against each other and the platform, on a real server run as root (as in CI).

A warm "victim" sandbox holds a secret in memory and a file in its work dir; a "probe" action,
in its own sandbox, tries to reach both and the platform process by every door a process on
one host has: files, /proc, signals and ptrace.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from click.testing import CliRunner

from squall.cli.main import cli
from tests.conftest import GUEST_KEY, GUEST_UUID, ServerProcess, require

VICTIM = """
import os
SECRET = "victim-secret-" + "7f3a"

def main(args):
    with open("secret.txt", "w") as f:
        f.write(SECRET)
    return {"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "uid": os.getuid()}
"""

PROBE = """
import ctypes, errno, os

PTRACE_ATTACH, PTRACE_DETACH = 16, 17
libc = ctypes.CDLL(None, use_errno=True)

def attempt(fn):
    try:
        fn()
        return "allowed"
    except Exception as exc:
        return type(exc).__name__

def ptrace(pid):
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
        libc.ptrace(PTRACE_DETACH, pid, None, None)
        return "allowed"
    return errno.errorcode.get(ctypes.get_errno(), "error")

def main(args):
    victim, platform, zygote = args["victim"], args["platform"], args["zygote"]
    return {
        "uid": os.getuid(),
        "read_victim_file": attempt(lambda: open(args["victim_cwd"] + "/secret.txt").read()),
        "list_victim_dir": attempt(lambda: os.listdir(args["victim_cwd"])),
        "victim_environ": attempt(lambda: open(f"/proc/{victim}/environ", "rb").read()),
        "victim_memory": attempt(lambda: open(f"/proc/{victim}/mem", "rb").read(1)),
        "platform_environ": attempt(lambda: open(f"/proc/{platform}/environ", "rb").read()),
        "platform_memory": attempt(lambda: open(f"/proc/{platform}/mem", "rb").read(1)),
        "signal_victim": attempt(lambda: os.kill(victim, 0)),
        "signal_zygote": attempt(lambda: os.kill(zygote, 0)),
        "trace_victim": ptrace(victim),
        "trace_platform": ptrace(platform),
        "trace_zygote": ptrace(zygote),
    }
"""


def invoke(api: httpx.Client, name: str, code: str, params: dict[str, Any]) -> dict[str, Any]:
    created = api.put(
        f"/api/v1/namespaces/_/actions/{name}?overwrite=true",
        json={"exec": {"kind": "python:3", "code": code}},
    )
    assert created.status_code == 200, created.text
    answer = api.post(
        f"/api/v1/namespaces/_/actions/{name}?blocking=true&result=true", json=params
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_a_sandbox_cannot_reach_another_or_the_platform(server: ServerProcess) -> None:
    require(os.geteuid() == 0, "sandbox users need root; CI runs as root")
    with httpx.Client(base_url=server.url, auth=(GUEST_UUID, GUEST_KEY), timeout=30) as api:
        victim = invoke(api, "isolation-victim", VICTIM, {})
        seen = invoke(
            api,
            "isolation-probe",
            PROBE,
            {
                "victim": victim["pid"],
                "victim_cwd": victim["cwd"],
                "zygote": victim["ppid"],
                "platform": server.process.pid,
            },
        )
    assert seen["uid"] not in (0, victim["uid"]), "each sandbox has its own unprivileged uid"
    denied = {key: value for key, value in seen.items() if key != "uid"}
    allowed = [key for key, value in denied.items() if value == "allowed"]
    assert not allowed, f"the probe got through: {allowed} ({seen})"
    for key in ("trace_victim", "trace_platform", "trace_zygote"):
        assert seen[key] in ("EPERM", "EACCES"), seen
    # The victim really is alive and warm (the probe's refusals are not a missing target).
    os.kill(victim["pid"], 0)


THIEF = """
import json, os, urllib.request, base64

def get(path):
    key = base64.b64encode(os.environ["__OW_API_KEY"].encode()).decode()
    request = urllib.request.Request(
        os.environ["__OW_API_HOST"] + path, headers={"Authorization": "Basic " + key}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()

def main(args):
    ns, aid = args["victim_ns"], args["victim_activation"]
    paths = [
        f"/api/v1/namespaces/{ns}/actions/secret-code",
        f"/api/v1/namespaces/{ns}/actions",
        f"/api/v1/namespaces/{ns}/activations",
        f"/api/v1/namespaces/{ns}/activations/{aid}",
        f"/api/v1/namespaces/{ns}/activations/{aid}/result",
        f"/api/v1/namespaces/{ns}/activations/{aid}/logs",
        f"/api/v1/namespaces/_/activations/{aid}",
        f"/api/v1/namespaces/{ns}/triggers",
        f"/api/v1/namespaces/{ns}/limits",
    ]
    return {"seen": [[path, *get(path)] for path in paths]}
"""


def test_an_action_cannot_reach_another_namespace_through_the_api(server: ServerProcess) -> None:
    """Tenant B's code, records and entities, probed by tenant A's action with A's own key."""
    made = CliRunner().invoke(
        cli,
        ["admin", "user", "create", "tenant-b"],
        env={"SQUALL_DATA_DIR": str(server.data_dir), "SQUALL_ENTITY_STORE": ""},
    )
    assert made.exit_code == 0, made.output
    uid, _, key = made.output.strip().partition(":")
    marker = "tenant-b-private-4f1c"
    code = f"def main(a):\n    print('{marker}')\n    return {{'secret': '{marker}'}}\n"
    with httpx.Client(base_url=server.url, auth=(uid, key), timeout=30) as tenant_b:
        victim = invoke(tenant_b, "secret-code", code, {})
        listed = tenant_b.get("/api/v1/namespaces/_/activations", params={"limit": 1}).json()
    assert victim == {"secret": marker}
    with httpx.Client(base_url=server.url, auth=(GUEST_UUID, GUEST_KEY), timeout=30) as guest:
        seen = invoke(
            guest,
            "isolation-thief",
            THIEF,
            {"victim_ns": "tenant-b", "victim_activation": listed[0]["activationId"]},
        )["seen"]
    for path, status, body in seen:
        assert marker not in body, (path, status, body)
        assert status in (403, 404), (path, status, body)
