"""Sequences and web actions: what composing actions costs.

- A 5-step sequence invoked blocking, against the same 5 actions invoked blocking one after
  another by the client (what a caller without sequences would do): the sequence saves the
  client's round trips but adds the controller's own bookkeeping (one record more).
- A warm web action (`GET /api/v1/web/guest/default/NAME`) against a blocking invoke of the
  same action with `result=true`.

One keep-alive connection from this process, warm containers, unthrottled settings.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from typing import TYPE_CHECKING, Any

from bench.api import ACTIONS, TRIVIAL_CODE, ApiFailure
from bench.servers import HOST, Server, squall_server
from bench.stats import ratio, summarize_ms

if TYPE_CHECKING:
    from bench.scenarios import Plan

STEPS = 5
STEP = "bench-step"
SEQUENCE = "bench-sequence"
WEB = "bench-web"
WEB_CODE = "def main(args):\n    return {'body': 'ok'}\n"
SETTINGS = {"SQUALL_LIMITS_INVOCATIONS_PER_MINUTE": "100000000"}


class Connection:
    """One keep-alive connection to a Squall server, authenticated as its guest."""

    def __init__(self, server: Server) -> None:
        token = base64.b64encode((server.auth or "").encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self._conn = http.client.HTTPConnection(HOST, server.port, timeout=70)

    def call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> bytes:
        headers = self._headers if auth else {}
        payload = json.dumps(body).encode() if body is not None else None
        self._conn.request(method, path, payload, headers)
        response = self._conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise ApiFailure(f"{method} {path}: HTTP {response.status} {data[:300]!r}")
        return data

    def close(self) -> None:
        self._conn.close()


def create_actions(conn: Connection) -> None:
    for i in range(STEPS):
        body = {"exec": {"kind": "python:3", "code": TRIVIAL_CODE}, "limits": {"memory": 128}}
        conn.call("PUT", f"{ACTIONS}/{STEP}{i}?overwrite=true", body)
    components = [f"/_/{STEP}{i}" for i in range(STEPS)]
    conn.call(
        "PUT",
        f"{ACTIONS}/{SEQUENCE}?overwrite=true",
        {"exec": {"kind": "sequence", "components": components}},
    )
    web = {
        "exec": {"kind": "python:3", "code": WEB_CODE},
        "limits": {"memory": 128},
        "annotations": [{"key": "web-export", "value": True}],
    }
    conn.call("PUT", f"{ACTIONS}/{WEB}?overwrite=true", web)


def timed(action: Any, count: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        action()
    samples = []
    for _ in range(count):
        t0 = time.perf_counter_ns()
        action()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


def phase_composition(plan: Plan) -> dict[str, Any]:
    count = 10 if plan.smoke else 500
    warmup = 2 if plan.smoke else 50
    out: dict[str, Any] = {"settings": SETTINGS, "count": count, "steps": STEPS}
    with squall_server(SETTINGS) as server:
        conn = Connection(server)
        try:
            create_actions(conn)
            out.update(measure(conn, count, warmup))
        finally:
            conn.close()
    return out


def measure(conn: Connection, count: int, warmup: int) -> dict[str, Any]:
    blocking = "?blocking=true&result=true"

    def sequence() -> None:
        if json.loads(conn.call("POST", f"{ACTIONS}/{SEQUENCE}{blocking}", {})) != {"ok": True}:
            raise ApiFailure("the sequence did not return its last step's result")

    def direct() -> None:
        for i in range(STEPS):
            conn.call("POST", f"{ACTIONS}/{STEP}{i}{blocking}", {})

    def web() -> None:
        if conn.call("GET", f"/api/v1/web/guest/default/{WEB}", auth=False) != b"ok":
            raise ApiFailure("the web action did not answer its body")

    def invoke() -> None:
        conn.call("POST", f"{ACTIONS}/{WEB}{blocking}", {})

    results: dict[str, Any] = {
        name: summarize_ms(timed(fn, count, warmup))
        for name, fn in (
            ("sequence", sequence),
            ("direct", direct),
            ("web", web),
            ("invoke", invoke),
        )
    }
    results["sequence_over_direct_p50"] = ratio(
        results["sequence"].get("p50_ms"), results["direct"].get("p50_ms")
    )
    results["web_over_invoke_p50"] = ratio(
        results["web"].get("p50_ms"), results["invoke"].get("p50_ms")
    )
    return results
