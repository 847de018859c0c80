"""Hostile action code against a real server: every run ends as a record with a clear status,
and the platform stays healthy afterwards (issue 10's fuzzing of the action code path)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import GUEST_KEY, GUEST_UUID, ServerProcess

APPLICATION = "application error"
DEVELOPER = "action developer error"

# name -> (code, expected record status, a fragment of the error it must say)
HOSTILE: dict[str, tuple[str, str, str]] = {
    "huge-result": (
        "def main(a):\n    return {'x': 'y' * (2 * 1024 * 1024)}\n",
        APPLICATION,
        "exceeded the allowed length",
    ),
    "binary-stdout": (
        "import sys, os\n"
        "def main(a):\n"
        "    os.write(1, bytes(range(256)) * 64)\n"
        "    sys.stdout.buffer.write(b'\\xff\\xfe\\x00')\n"
        "    return {'ok': True}\n",
        "success",
        "",
    ),
    "deep-recursion": (
        "def f(n):\n    return f(n + 1)\ndef main(a):\n    return {'n': f(0)}\n",
        APPLICATION,
        "maximum recursion depth exceeded",
    ),
    "c-stack-overflow": (
        "import sys\n"
        "sys.setrecursionlimit(10**8)\n"
        "def f(n):\n    return f(n + 1)\n"
        "def main(a):\n    return {'n': f(0)}\n",
        DEVELOPER,
        "",
    ),
    "fork-bomb": (
        "import os\n"
        "def main(a):\n"
        "    for _ in range(100000):\n"
        "        try:\n            os.fork()\n"
        "        except OSError:\n            pass\n"
        "    return {'survived': True}\n",
        DEVELOPER,
        "",
    ),
    "no-newline-forever": (
        "import sys\ndef main(a):\n    while True:\n        sys.stdout.write('x')\n",
        DEVELOPER,
        "exceeded its time limits of 3000 milliseconds",
    ),
    "exit-at-once": (
        "import os\ndef main(a):\n    os._exit(3)\n",
        DEVELOPER,
        "exited unexpectedly",
    ),
    "segfault": (
        "import ctypes\ndef main(a):\n    ctypes.string_at(0)\n",
        DEVELOPER,
        "exited unexpectedly",
    ),
    "closes-its-pipes": (
        "import os\n"
        "def main(a):\n"
        "    for fd in range(0, 64):\n"
        "        try:\n            os.close(fd)\n"
        "        except OSError:\n            pass\n"
        "    return {'closed': True}\n",
        DEVELOPER,
        "",
    ),
}


def client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=(GUEST_UUID, GUEST_KEY), timeout=60)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_code_ends_as_a_clear_record(server: ServerProcess, name: str) -> None:
    code, status, says = HOSTILE[name]
    with client(server) as api:
        created = api.put(
            f"/api/v1/namespaces/_/actions/hostile-{name}?overwrite=true",
            json={
                "exec": {"kind": "python:3", "code": code},
                "limits": {"timeout": 3000, "memory": 128, "logs": 1},
            },
        )
        assert created.status_code == 200, created.text
        answer = api.post(f"/api/v1/namespaces/_/actions/hostile-{name}?blocking=true")
        assert answer.status_code in (200, 502), answer.text
        record = answer.json()
        activation_id = record["activationId"]
        assert record["response"]["status"] == status, record["response"]
        if status != "success":
            error = str(record["response"]["result"].get("error", ""))
            assert error, record["response"]
            assert says in error, error
        stored = api.get(f"/api/v1/namespaces/_/activations/{activation_id}")
        assert stored.status_code == 200
        assert stored.json()["response"]["status"] == status
        # The platform is unharmed: it answers and runs a well-behaved action.
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
        api.put(
            "/api/v1/namespaces/_/actions/well-behaved?overwrite=true",
            json={"exec": {"kind": "python:3", "code": "def main(a):\n    return {'ok': 1}\n"}},
        )
        fine = api.post("/api/v1/namespaces/_/actions/well-behaved?blocking=true&result=true")
        assert fine.status_code == 200 and fine.json() == {"ok": 1}
