"""The Kafka bus's client settings and its refusal of impossible configuration (no broker
needed: the clients are only configured here; tests/integration/test_kafka_bus.py runs them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from squall.bus.kafka import KafkaBus
from squall.config import KafkaSettings, load_settings
from squall.errors import ConfigurationError

SASL = KafkaSettings(
    bootstrap=("b1:9093",), security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
    sasl_username="u", sasl_password="p", ssl_ca_file=Path("/ca.pem"), topic_prefix="prod-",
    fetch_wait_ms=50,
)  # fmt: skip


def test_producer_sends_at_once_with_the_security_settings() -> None:
    config = KafkaBus(SASL, client_id="controller0").producer_config()
    assert config["linger.ms"] == 0 and config["acks"] == 1 and config["socket.nagle.disable"]
    assert config["client.id"] == "controller0-producer"
    assert (config["security.protocol"], config["sasl.mechanism"]) == ("sasl_ssl", "SCRAM-SHA-512")
    assert (config["sasl.username"], config["sasl.password"]) == ("u", "p")
    assert config["ssl.ca.location"] == "/ca.pem"


def test_consumers_commit_themselves_and_start_at_the_beginning() -> None:
    config = KafkaBus(SASL).consumer_config("scheduler1")
    assert config["group.id"] == "scheduler1" and config["enable.auto.commit"] is False
    assert config["auto.offset.reset"] == "earliest"
    assert config["fetch.wait.max.ms"] == 50
    assert (config["security.protocol"], config["sasl.mechanism"]) == ("sasl_ssl", "SCRAM-SHA-512")


def test_the_prefix_is_applied_to_every_topic() -> None:
    assert KafkaBus(SASL).topic_name("completed-controller0") == "prod-completed-controller0"


def test_topic_and_fetch_settings_from_the_environment() -> None:
    env = {"SQUALL_KAFKA_PARTITIONS": "4", "SQUALL_KAFKA_REPLICATION_FACTOR": "3",
           "SQUALL_KAFKA_FETCH_WAIT_MS": "100"}  # fmt: skip
    settings = load_settings(env)
    assert (settings.kafka.partitions, settings.kafka.replication_factor) == (4, 3)
    assert settings.kafka.fetch_wait_ms == 100
    defaults = load_settings({}).kafka
    assert (defaults.partitions, defaults.replication_factor, defaults.fetch_wait_ms) == (1, 1, 2)


@pytest.mark.parametrize("key", ["PARTITIONS", "REPLICATION_FACTOR", "FETCH_WAIT_MS"])
def test_less_than_one_is_refused_naming_the_setting(key: str) -> None:
    with pytest.raises(ConfigurationError, match=f"kafka.{key.lower()}=0 must be at least 1"):
        load_settings({f"SQUALL_KAFKA_{key}": "0"})


def test_impossible_bus_configuration_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="SQUALL_KAFKA_BOOTSTRAP"):
        KafkaBus(KafkaSettings())
    with pytest.raises(ConfigurationError, match="at least 1"):
        KafkaBus(KafkaSettings(bootstrap=("b:9092",), partitions=0))


async def test_settings_librdkafka_refuses_fail_start_without_a_secret(tmp_path: Path) -> None:
    missing_ca = tmp_path / "no-such-ca.pem"
    bus = KafkaBus(KafkaSettings(bootstrap=("127.0.0.1:1",), security_protocol="SASL_SSL",
                                 sasl_mechanism="PLAIN", sasl_username="u",
                                 sasl_password="pa55-secret", ssl_ca_file=missing_ca))  # fmt: skip
    with pytest.raises(ConfigurationError, match="refuses its settings") as raised:
        await bus.start()
    assert "pa55-secret" not in str(raised.value)
    await bus.close()
