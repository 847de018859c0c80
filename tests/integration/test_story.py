"""The deployment story behind the project, as tests (issue 6).

A scheduler on Kubernetes restarted forever because Kafka wanted SASL credentials nobody set and
the activation store was not the one it needed. Squall instead: a configuration that cannot
work exits 2 at once with a precise report (so the pod shows the reason, not a loop); a
dependency that refuses or is down keeps the process up and live, not ready, with the reason and
the fix in /readyz and once in the log, and it recovers by itself.

The process is `squall standalone` (the scheduler role runs inside it; cluster mode's
`squall scheduler` reads the same settings and readiness).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from squall.testing import LocalPostgres, LocalTansu, free_port
from tests.conftest import GUEST_AUTH, local_postgres

PASSWORD = "hunter2-never-shown"


@dataclass
class Process:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def readyz(self) -> tuple[int, dict[str, Any]]:
        reply = httpx.get(self.url + "/readyz", timeout=2)
        return reply.status_code, reply.json()


def _environment(env: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SQUALL_", "CONFIG_", "KAFKA_", "LIMITS_"))}  # fmt: skip
    return {**clean, "SQUALL_GUEST_AUTH": GUEST_AUTH, "SQUALL_PREWARM_COUNT": "0", **env}


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Process]]:
    """Start `squall standalone` with `env`; wait until /healthz answers; stop it afterwards."""
    started: list[Process] = []

    def start(env: dict[str, str]) -> Process:
        port = free_port()
        log = tmp_path / f"server-{port}.log"
        argv = [sys.executable, "-m", "squall.cli.main", "standalone", "--port", str(port),
                "--data-dir", str(tmp_path / "data")]  # fmt: skip
        with log.open("ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                       env=_environment(env))  # fmt: skip
        server = Process(f"http://127.0.0.1:{port}", process, log)
        started.append(server)
        wait_until(lambda: _answers(server), 20, lambda: server.output())
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.terminate()
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(timeout=5)


def _answers(server: Process) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"the process exited ({server.process.returncode}):\n"
                             f"{server.output()}")  # fmt: skip
    try:
        return httpx.get(server.url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def wait_until(
    condition: Callable[[], bool], timeout_s: float, explain: Callable[[], str] = lambda: ""
) -> float:
    """Poll `condition` (bounded); seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout_s} s\n{explain()}")


def check(server: Process, name: str) -> dict[str, Any]:
    return dict(server.readyz()[1]["checks"][name])


def test_sasl_without_credentials_exits_2_with_a_precise_report(
    tmp_path: Path, tansu_auth: LocalTansu
) -> None:
    env = {
        "SQUALL_BUS": "kafka",
        "SQUALL_KAFKA_BOOTSTRAP": tansu_auth.bootstrap,
        "CONFIG_whisk_kafka_common_securityProtocol": "SASL_SSL",
        "CONFIG_whisk_kafka_common_saslMechanism": "SCRAM-SHA-512",
        "SQUALL_ACTIVATION_STORE": "couchdb://whisk:pw@couch:5984",
    }
    argv = [sys.executable, "-m", "squall.cli.main", "standalone", "--port", str(free_port()),
            "--data-dir", str(tmp_path)]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, env=_environment(env), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - started < 15  # no retries: a wrong configuration is not retried
    report = done.stderr
    for fragment in (
        "invalid configuration (3 problems)",
        "kafka.sasl_mechanism (env CONFIG_whisk_kafka_common_saslMechanism): SCRAM-SHA-512 needs "
        "SASL credentials, and SQUALL_KAFKA_SASL_USERNAME and SQUALL_KAFKA_SASL_PASSWORD are "
        "not set",
        "SQUALL_KAFKA_SASL_JAAS_CONFIG",
        "kafka.ssl_ca_file: SASL_SSL verifies the broker's certificate but no CA is set",
        "stores.activation_store (env SQUALL_ACTIVATION_STORE)",
        "CouchDB is not supported",
        "Nothing was started",
    ):
        assert fragment in report
    assert "Traceback" not in report and "pw@" not in report


@pytest.mark.slow
def test_refusing_broker_and_absent_store_keep_it_up_not_ready_until_fixed(
    spawn: Callable[[dict[str, str]], Process], tansu_auth: LocalTansu
) -> None:
    postgres = local_postgres()  # initialised, not started: "a PostgreSQL that is not there"
    try:
        _refusing_broker_and_absent_store(spawn, tansu_auth, postgres)
    finally:
        postgres.remove()


def _refusing_broker_and_absent_store(
    spawn: Callable[[dict[str, str]], Process], tansu_auth: LocalTansu, postgres: LocalPostgres
) -> None:
    env = {
        "SQUALL_BUS": "kafka",
        "SQUALL_KAFKA_BOOTSTRAP": tansu_auth.bootstrap,
        "SQUALL_ACTIVATION_STORE": postgres.url() + "?pool_timeout=1",
    }
    server = spawn(env)
    # Kafka's refusal is known within 2 s of the process answering.
    took = wait_until(lambda: check(server, "kafka")["state"] == "unavailable", 10, server.output)
    assert took < 2.0
    wait_until(lambda: check(server, "activation_store")["state"] == "unavailable", 15,
               server.output)  # fmt: skip
    status, body = server.readyz()
    assert status == 503 and body["ready"] is False
    kafka, store = body["checks"]["kafka"], body["checks"]["activation_store"]
    assert tansu_auth.bootstrap in kafka["reason"] and "requires SASL" in kafka["reason"]
    assert "SQUALL_KAFKA_SASL_MECHANISM" in kafka["fix"]
    assert "SQUALL_ACTIVATION_STORE" in store["fix"]
    # It stays up and live while retrying (a restart would fix nothing).
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert server.process.poll() is None
        assert httpx.get(server.url + "/healthz", timeout=2).status_code == 200
        time.sleep(0.5)
    log = server.output()
    assert log.count("readiness: kafka is not ready") == 1, log  # once, not per retry
    assert log.count("readiness: activation_store is unavailable") == 1, log
    # `squall doctor` with the same settings names both problems, each with its fix.
    doctor = subprocess.run(
        [sys.executable, "-m", "squall.cli.main", "doctor", "--no-sandbox"],
        env=_environment(env), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert "[FAIL] kafka.authenticate" in doctor.stdout
    assert "[FAIL] activation_store.connect" in doctor.stdout
    assert doctor.stdout.count("fix: ") >= 2
    # The store comes up: that part turns ready by itself, without a restart.
    postgres.start()
    wait_until(lambda: check(server, "activation_store")["ready"] is True, 20, server.output)
    assert check(server, "kafka")["ready"] is False
    assert server.process.poll() is None


def test_refused_credentials_name_broker_mechanism_and_settings_never_the_password(
    spawn: Callable[[dict[str, str]], Process], tansu_auth: LocalTansu
) -> None:
    server = spawn({
        "SQUALL_BUS": "kafka",
        "SQUALL_KAFKA_BOOTSTRAP": tansu_auth.bootstrap,
        "SQUALL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SQUALL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "SQUALL_KAFKA_SASL_USERNAME": "scheduler",
        "SQUALL_KAFKA_SASL_PASSWORD": PASSWORD,
        "SQUALL_LOG_FORMAT": "json",
    })  # fmt: skip
    took = wait_until(lambda: check(server, "kafka")["state"] == "unavailable", 10, server.output)
    assert took < 2.0
    kafka = check(server, "kafka")
    assert f"the broker {tansu_auth.bootstrap} refused SASL SCRAM-SHA-256" in kafka["reason"]
    assert "user 'scheduler'" in kafka["reason"]
    assert "SQUALL_KAFKA_SASL_PASSWORD" in kafka["fix"]
    assert server.readyz()[0] == 503 and server.process.poll() is None
    assert PASSWORD not in httpx.get(server.url + "/readyz").text
    assert PASSWORD not in httpx.get(server.url + "/metrics").text
    assert PASSWORD not in server.output()
    wait_until(lambda: "kafka is not ready" in server.output(), 5, server.output)
    entries = [json.loads(line) for line in server.output().splitlines() if line.strip()]
    (refusal,) = [e for e in entries if "kafka is not ready" in e["message"]]
    assert refusal["level"] == "WARNING" and refusal["logger"] == "squall.ops"


def test_health_is_served_while_the_entity_store_is_down_at_start(
    spawn: Callable[[dict[str, str]], Process],
) -> None:
    postgres = local_postgres()
    try:
        server = spawn({"SQUALL_ENTITY_STORE": postgres.url() + "?pool_timeout=1"})
        wait_until(lambda: check(server, "entity_store")["state"] == "unavailable", 15,
                   server.output)  # fmt: skip
        entity = check(server, "entity_store")
        assert "unreachable" in entity["reason"] and "SQUALL_ENTITY_STORE" in entity["fix"]
        assert httpx.get(server.url + "/healthz").status_code == 200
        api = httpx.get(server.url + "/api/v1/namespaces", auth=tuple(GUEST_AUTH.split(":")))  # type: ignore[arg-type]
        assert api.status_code == 503
        assert api.json()["error"].startswith("Squall is starting: ") and api.json()["code"]
        postgres.start()
        wait_until(lambda: server.readyz()[0] == 200, 30, server.output)
        assert httpx.get(server.url + "/ping").status_code == 200
    finally:
        postgres.remove()
