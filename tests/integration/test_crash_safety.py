"""SIGKILL a real standalone process under load, restart it: nothing it accepted goes missing.

Every activation id a client was given (blocking, non-blocking, trigger fires) must afterwards
have a record: the real one, or one saying it was lost in the crash. Every entity the API
acknowledged must still be there, and SQLite must open cleanly.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import GUEST_KEY, GUEST_UUID, ServerProcess, start_server, stop_server

SLOW = "import time\ndef main(args):\n    time.sleep(0.3)\n    return {'n': args.get('n')}\n"
FAST = "def main(args):\n    return {'n': args.get('n')}\n"
ROUNDS = 3
MAX_REQUESTS_PER_WORKER = 2_000  # a bound for each load loop, besides the kill


@dataclass
class Acknowledged:
    """What the server told clients it accepted, shared by the load threads."""

    activations: dict[str, str] = field(default_factory=dict)  # id -> what made it
    entities: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def activation(self, activation_id: str, what: str) -> None:
        with self.lock:
            self.activations[activation_id] = what


def client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=(GUEST_UUID, GUEST_KEY), timeout=10)


def setup_entities(server: ServerProcess, seen: Acknowledged) -> None:
    with client(server) as api:
        for name, code in (("slow", SLOW), ("fast", FAST)):
            response = api.put(
                f"/api/v1/namespaces/_/actions/{name}",
                json={"exec": {"kind": "python:3", "code": code}},
            )
            assert response.status_code == 200, response.text
            seen.entities.add(f"actions/{name}")
        assert api.put("/api/v1/namespaces/_/triggers/tick", json={}).status_code == 200
        rule = {"trigger": "/_/tick", "action": "/_/fast"}
        assert api.put("/api/v1/namespaces/_/rules/on-tick", json=rule).status_code == 200
        seen.entities.update({"triggers/tick", "rules/on-tick"})


def load(server: ServerProcess, seen: Acknowledged, worker: int, stop: threading.Event) -> None:
    """Mixed requests until the server dies or `stop`; records every acknowledged id."""
    with client(server) as api:
        for i in range(MAX_REQUESTS_PER_WORKER):
            if stop.is_set():
                return
            try:
                acknowledge(api, seen, worker, i)
            except httpx.TransportError:
                return  # killed: a request without an answer was never acknowledged


def acknowledge(api: httpx.Client, seen: Acknowledged, worker: int, i: int) -> None:
    kind = i % 4
    if kind == 0:
        answer = api.post("/api/v1/namespaces/_/actions/slow", json={"n": i})
        if answer.status_code == 202:
            seen.activation(answer.json()["activationId"], "non-blocking")
    elif kind == 1:
        answer = api.post("/api/v1/namespaces/_/actions/fast?blocking=true", json={"n": i})
        if answer.status_code in (200, 202):
            seen.activation(answer.json()["activationId"], "blocking")
    elif kind == 2:
        answer = api.post("/api/v1/namespaces/_/triggers/tick", json={"n": i})
        if answer.status_code == 202:
            seen.activation(answer.json()["activationId"], "trigger")
    else:
        name = f"made-{worker}-{i}"
        answer = api.put(
            f"/api/v1/namespaces/_/actions/{name}",
            json={"exec": {"kind": "python:3", "code": FAST}},
        )
        if answer.status_code == 200:
            with seen.lock:
                seen.entities.add(f"actions/{name}")


def kill_under_load(server: ServerProcess, seen: Acknowledged, after_s: float) -> None:
    stop = threading.Event()
    workers = [
        threading.Thread(target=load, args=(server, seen, n, stop), daemon=True) for n in range(3)
    ]
    for worker in workers:
        worker.start()
    time.sleep(after_s)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)
    stop.set()
    for worker in workers:
        worker.join(timeout=15)
        assert not worker.is_alive(), "a load thread did not stop"


def record_of(api: httpx.Client, activation_id: str, deadline: float) -> dict[str, object] | None:
    # Recovery runs beside the start: poll until one shared deadline before calling it missing.
    while True:
        response = api.get(f"/api/v1/namespaces/_/activations/{activation_id}")
        if response.status_code == 200:
            return dict(response.json())
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def test_sigkill_under_load_loses_nothing_silently(tmp_path: Path) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    data = tmp_path / "data"
    seen = Acknowledged()
    for round_ in range(ROUNDS):
        server = start_server(data, tmp_path / f"round{round_}.log")
        if round_ == 0:
            setup_entities(server, seen)
        kill_under_load(server, seen, after_s=rng.uniform(0.5, 1.5))

    final = start_server(data, tmp_path / "final.log")
    try:
        with sqlite3.connect(data / "squall.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        with client(final) as api:
            for entity in sorted(seen.entities):
                assert api.get(f"/api/v1/namespaces/_/{entity}").status_code == 200, entity
            missing, lost = [], []
            deadline = time.monotonic() + 10
            for activation_id, what in seen.activations.items():
                record = record_of(api, activation_id, deadline)
                if record is None:
                    missing.append((activation_id, what))
                elif is_lost_in_crash(record):
                    assert record["response"]["status"] == "whisk internal error"  # type: ignore[index]
                    lost.append(activation_id)
        assert not missing, f"seed {seed}: acknowledged, no record: {missing[:10]}"
        # Slow non-blocking runs were in flight at every kill: the journal must have caught some.
        assert lost, f"seed {seed}: no activation was recorded as lost; the test lost its teeth"
        assert len(seen.activations) > len(lost)
        assert "recorded them as lost in the crash" in final.output()
    finally:
        stop_server(final)
    assert not (data / "activations.journal").exists(), "a clean stop leaves no journal"
    # Keys are kept hashed: no file of the data dir but the 0600 key file handed to the
    # operator (guest.auth), and no log, holds the guest key.
    for path in [*data.rglob("*"), *tmp_path.glob("*.log")]:
        if path.is_file() and path.name != "guest.auth":
            assert GUEST_KEY.encode() not in path.read_bytes(), path


def is_lost_in_crash(record: dict[str, object]) -> bool:
    annotations = record.get("annotations") or []
    return any(a.get("key") == "lostInCrash" for a in annotations)  # type: ignore[union-attr]
