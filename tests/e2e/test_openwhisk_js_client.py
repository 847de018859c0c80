"""Compatibility with a client nobody here wrote: the official OpenWhisk JavaScript client."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import GUEST_AUTH, ServerProcess, require

HERE = Path(__file__).parent

pytestmark = pytest.mark.e2e


def test_official_client_drives_squall(server: ServerProcess) -> None:
    require(shutil.which("node") is not None, "Node.js is not installed")
    require(
        (HERE / "node_modules" / "openwhisk").is_dir(), "run `make e2e-deps` (npm ci in tests/e2e)"
    )
    completed = subprocess.run(
        ["node", str(HERE / "openwhisk_client.js")],
        env={"APIHOST": server.url, "AUTH": GUEST_AUTH, "PATH": "/usr/bin:/bin:/usr/local/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    steps = [json.loads(line)["step"] for line in completed.stdout.splitlines()]
    assert steps == [
        "create",
        "get",
        "list",
        "invoke-result",
        "invoke-async",
        "activation",
        "logs",
        "activation-list",
        "trigger-rule",
        "fire",
        "feed",
        "rule-toggle-delete",
        "package",
        "sequence",
        "web",
        "delete",
        "done",
    ]
