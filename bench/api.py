"""The few Squall REST calls the harness makes itself (creating actions, cold invokes)."""

from __future__ import annotations

import base64
import http.client
import json
import time
from dataclasses import dataclass
from typing import Any

from bench.servers import HOST, Server

ACTIONS = "/api/v1/namespaces/_/actions"
TRIVIAL_CODE = "def main(args):\n    return {'ok': True}\n"


class ApiFailure(RuntimeError):
    """Squall answered a harness request with an unexpected status."""


@dataclass(frozen=True)
class Invocation:
    """One blocking invoke as the client saw it."""

    client_ms: float
    record: dict[str, Any]

    def annotation(self, key: str) -> Any:
        for item in self.record.get("annotations") or []:
            if isinstance(item, dict) and item.get("key") == key:
                return item.get("value")
        return None

    @property
    def succeeded(self) -> bool:
        response = self.record.get("response") or {}
        return bool(response.get("success")) and response.get("result") == {"ok": True}


TRIVIAL_NODE_CODE = "function main(params) { return {ok: true}; }\n"


def action_body(
    memory_mb: int | None, code: str = TRIVIAL_CODE, kind: str = "python:3"
) -> dict[str, Any]:
    body: dict[str, Any] = {"exec": {"kind": kind, "code": code}}
    if memory_mb is not None:
        body["limits"] = {"memory": memory_mb}
    return body


class SquallClient:
    """A keep-alive connection to one Squall server, authenticated as its guest."""

    def __init__(self, server: Server, timeout: float = 70.0) -> None:
        self._headers = self.auth_headers(server)
        self._conn = http.client.HTTPConnection(HOST, server.port, timeout=timeout)

    @staticmethod
    def auth_headers(server: Server) -> dict[str, str]:
        if server.auth is None:
            raise ValueError(f"{server.name} has no guest credentials")
        token = base64.b64encode(server.auth.encode()).decode()
        return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def _call(self, method: str, path: str, body: Any) -> tuple[int, bytes]:
        self._conn.request(method, path, json.dumps(body).encode(), self._headers)
        response = self._conn.getresponse()
        return response.status, response.read()

    def put_action(self, name: str, memory_mb: int | None = None, kind: str = "python:3") -> None:
        """A trivial action returning {"ok": true}, in Python or (kind nodejs:*) JavaScript."""
        path = f"{ACTIONS}/{name}?overwrite=true"
        code = TRIVIAL_NODE_CODE if kind.startswith("nodejs") else TRIVIAL_CODE
        status, data = self._call("PUT", path, action_body(memory_mb, code, kind))
        if status != 200:
            raise ApiFailure(f"PUT {name}: HTTP {status} {data[:300]!r}")

    def invoke(self, name: str) -> Invocation:
        path = f"{ACTIONS}/{name}?blocking=true"
        t0 = time.perf_counter_ns()
        status, data = self._call("POST", path, {})
        elapsed_ms = (time.perf_counter_ns() - t0) / 1e6
        if status != 200:
            raise ApiFailure(f"invoke {name}: HTTP {status} {data[:300]!r}")
        return Invocation(elapsed_ms, json.loads(data))

    def close(self) -> None:
        self._conn.close()
