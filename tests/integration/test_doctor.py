"""`squall doctor` against real services: Tansu (plain, and with --authentication for the
refusals), etcd (with and without authentication), PostgreSQL and osmem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from squall.testing import LocalEtcd, LocalOsmem, LocalPostgres, LocalTansu, free_port
from tests.conftest import etcd_binary, require

PASSWORD = "hunter2-never-shown"


def doctor(env: dict[str, str], *args: str, timeout_s: float = 90) -> tuple[int, str]:
    """Run `squall doctor` in a fresh process with only `env` as Squall settings."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SQUALL_", "CONFIG_", "KAFKA_", "LIMITS_"))}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "squall.cli.main", "doctor", *args],
        env={**clean, **env}, capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    assert PASSWORD not in done.stderr
    return done.returncode, done.stdout


def checks(output: str) -> dict[str, dict[str, str]]:
    return {check["check"]: check for check in json.loads(output)["checks"]}


@pytest.fixture
def etcd_with_auth() -> Iterator[LocalEtcd]:
    server = LocalEtcd(etcd_binary(ctl=True))
    server.start()
    try:
        server.enable_auth(PASSWORD)
        yield server
    finally:
        server.remove()


@pytest.mark.slow
def test_every_check_passes_against_real_services(
    tmp_path: Path,
    tansu: LocalTansu,
    etcd_server: LocalEtcd,
    postgres_server: LocalPostgres,
    osmem_server_process: LocalOsmem,
) -> None:
    postgres_server.create_database("doctor_ok")
    env = {
        "SQUALL_DATA_DIR": str(tmp_path / "data"),
        "SQUALL_BUS": "kafka",
        "SQUALL_KAFKA_BOOTSTRAP": tansu.bootstrap,
        "SQUALL_COORDINATION": "etcd",
        "SQUALL_ETCD_ENDPOINTS": etcd_server.endpoint,
        "SQUALL_ENTITY_STORE": postgres_server.url("doctor_ok"),
        "SQUALL_ACTIVATION_STORE": "opensearch+" + osmem_server_process.url,
    }
    status, output = doctor(env, "--json")
    results = checks(output)
    assert status == 0, output
    assert list(results) == [
        "kafka.connect", "kafka.authenticate", "kafka.topics", "kafka.produce_consume",
        "etcd.connect", "etcd.authenticate", "etcd.lease", "clock.skew",
        "entity_store.connect", "entity_store.probe",
        "activation_store.connect", "activation_store.probe", "sandbox",
    ]  # fmt: skip
    assert all(check["status"] == "ok" for check in results.values()), output
    assert "went through squall-doctor-probe" in results["kafka.produce_consume"]["detail"]
    assert "written, read back and deleted" in results["activation_store.probe"]["detail"]
    assert "probe action ran" in results["sandbox"]["detail"]


def test_broker_demanding_sasl_without_settings(tmp_path: Path, tansu_auth: LocalTansu) -> None:
    env = {"SQUALL_DATA_DIR": str(tmp_path), "SQUALL_KAFKA_BOOTSTRAP": tansu_auth.bootstrap}
    status, output = doctor(env, "--no-sandbox")
    assert status == 1, output
    lines = output.splitlines()
    assert lines[0].startswith("[ ok ] kafka.connect")
    assert lines[1].startswith("[FAIL] kafka.authenticate")
    assert "requires SASL or TLS, and no SASL settings are set" in lines[1]
    assert "fix: set SQUALL_KAFKA_SECURITY_PROTOCOL" in lines[2]
    assert lines[3].startswith("[skip] kafka.topics")
    # The stores (SQLite here) are still checked: one failure does not hide the others.
    assert "[ ok ] entity_store.probe" in output and "1 failed" in output


def test_refused_credentials_name_user_and_mechanism_never_the_password(
    tmp_path: Path, tansu_auth: LocalTansu
) -> None:
    jaas = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="squall" password="{PASSWORD}";')  # fmt: skip
    env = {
        "SQUALL_DATA_DIR": str(tmp_path),
        "KAFKA_HOSTS": tansu_auth.bootstrap,
        "CONFIG_whisk_kafka_common_securityProtocol": "SASL_PLAINTEXT",
        "CONFIG_whisk_kafka_common_saslMechanism": "SCRAM-SHA-512",
        "CONFIG_whisk_kafka_common_saslJaasConfig": jaas,
    }
    status, output = doctor(env, "--no-sandbox", "--json")
    assert status == 1
    auth = checks(output)["kafka.authenticate"]
    assert auth["status"] == "fail"
    assert "refused SASL SCRAM-SHA-512 authentication as user 'squall'" in auth["detail"]
    assert "unknown-user" in auth["detail"] and "SQUALL_KAFKA_SASL_JAAS_CONFIG" in auth["fix"]
    assert PASSWORD not in output


def test_etcd_login_refused_then_accepted(tmp_path: Path, etcd_with_auth: LocalEtcd) -> None:
    env = {
        "SQUALL_DATA_DIR": str(tmp_path),
        "SQUALL_COORDINATION": "etcd",
        "SQUALL_ETCD_ENDPOINTS": etcd_with_auth.endpoint,
        "SQUALL_ETCD_USERNAME": "root",
        "SQUALL_ETCD_PASSWORD": "wrong-" + PASSWORD,
    }
    status, output = doctor(env, "--no-sandbox", "--json")
    refused = checks(output)
    assert status == 1
    assert refused["etcd.connect"]["status"] == "ok"
    assert refused["etcd.authenticate"]["status"] == "fail"
    assert "refused the login of user 'root'" in refused["etcd.authenticate"]["detail"]
    assert refused["etcd.lease"]["status"] == "skip" and PASSWORD not in output
    status, output = doctor({**env, "SQUALL_ETCD_PASSWORD": PASSWORD}, "--no-sandbox", "--json")
    accepted = checks(output)
    assert status == 0, output
    assert accepted["etcd.lease"]["status"] == "ok" and accepted["clock.skew"]["status"] == "ok"


def test_unreachable_services_fail_with_a_fix(tmp_path: Path) -> None:
    dead = free_port()
    env = {
        "SQUALL_DATA_DIR": str(tmp_path),
        "SQUALL_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead}",
        "SQUALL_ETCD_ENDPOINTS": f"127.0.0.1:{dead}",
        "SQUALL_ACTIVATION_STORE": f"postgresql://squall:{PASSWORD}@127.0.0.1:{dead}/squall?pool_timeout=1",
    }
    require(_has("confluent_kafka") and _has("psycopg_pool"), "kafka and postgres extras")
    status, output = doctor(env, "--no-sandbox", "--json")
    results = checks(output)
    assert status == 1
    assert results["kafka.connect"]["status"] == "fail"
    assert "SQUALL_KAFKA_BOOTSTRAP" in results["kafka.connect"]["fix"]
    assert results["etcd.connect"]["status"] == "fail"
    assert results["activation_store.connect"]["status"] == "fail"
    assert results["entity_store.connect"]["status"] == "ok"  # SQLite: checked all the same
    assert PASSWORD not in output


def test_configuration_error_is_exit_status_2(tmp_path: Path) -> None:
    status, output = doctor({"SQUALL_KAFKA_SASL_MECHANISM": "PLAIN"}, "--no-sandbox", "--json")
    assert status == 2
    problems = json.loads(output)["configuration"]
    assert [p["key"] for p in problems] == ["kafka.sasl_mechanism", "kafka.sasl_mechanism"]
    assert {p["source"] for p in problems} == {"env SQUALL_KAFKA_SASL_MECHANISM"}
    assert "the security protocol is PLAINTEXT" in problems[0]["problem"]
    assert "needs SASL credentials" in problems[1]["problem"]
    status, text = doctor({"SQUALL_KAFKA_SASL_MECHANISM": "PLAIN"}, "--no-sandbox")
    assert status == 2 and text == ""  # the report goes to stderr


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
