"""Kafka through confluent-kafka (librdkafka): the client settings Squall's settings produce, and
a fast, precise diagnosis of whether a broker can be used (connect, authenticate, metadata).

Why confluent-kafka (docs/dependencies.md): librdkafka implements every security protocol and
SASL mechanism Squall offers, is what most Kafka operators already run, and reports a refused
login through `error_cb` within milliseconds (`_AUTHENTICATION ... unknown-user`), where aiokafka
raises a bare `KeyError` and kafka-python waits 30 s. Its calls block, so async code runs them
in a thread.

librdkafka reports every failure as text; `diagnose` turns what it says into one reason and
one fix naming Squall's settings. No password ever reaches these texts: librdkafka does not
quote credentials, and the settings are only named, never shown.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from squall.config import KafkaSettings
from squall.errors import ConfigurationError

log = logging.getLogger("squall.kafka")

Stage = Literal["connect", "authenticate", "metadata"]
_NOISE = re.compile(r"\s*\(after \d+ms in state [A-Z_]+\)")


def client_config(kafka: KafkaSettings, *, client_id: str = "squall") -> dict[str, Any]:
    """librdkafka settings for `kafka`: the exact mapping, tested for every combination."""
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(kafka.bootstrap),
        "client.id": client_id,
        "security.protocol": kafka.security_protocol.lower(),
        # A broker that refuses us is retried calmly, not 20 times a second (the log flood the
        # OpenWhisk scheduler produced); the backoff grows to 10 s.
        "reconnect.backoff.ms": 200,
        "reconnect.backoff.max.ms": 10_000,
    }
    if kafka.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        config["sasl.mechanism"] = kafka.sasl_mechanism
        config["sasl.username"] = kafka.sasl_username
        config["sasl.password"] = kafka.sasl_password
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        config.update(_tls_config(kafka))
    return config


def _tls_config(kafka: KafkaSettings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "enable.ssl.certificate.verification": kafka.ssl_verify,
        "ssl.endpoint.identification.algorithm": "https" if kafka.ssl_check_hostname else "none",
    }
    if kafka.ssl_ca_file is not None:
        config["ssl.ca.location"] = str(kafka.ssl_ca_file)
    if kafka.ssl_cert_file is not None:
        config["ssl.certificate.location"] = str(kafka.ssl_cert_file)
    if kafka.ssl_key_file is not None:
        config["ssl.key.location"] = str(kafka.ssl_key_file)
    if kafka.ssl_key_password is not None:
        config["ssl.key.password"] = kafka.ssl_key_password
    return config


def require_client() -> None:
    """ConfigurationError with the install command when confluent-kafka is missing."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "SQUALL_BUS=kafka needs the 'kafka' extra (confluent-kafka is not installed); run: "
            "pip install 'squall[kafka]'"
        ) from exc


@dataclass
class Diagnosis:
    """Whether the brokers can be used; if not, at which stage, why, and what to set."""

    ok: bool
    stage: Stage
    reason: str = ""
    fix: str = ""
    topics: list[str] = field(default_factory=list)


class Collected:
    """librdkafka's log lines and error callbacks, gathered while a probe runs (or, for the bus,
    since the last success). It stands in for a logger: confluent-kafka only calls
    `log(level, format, *args)` on what it is given. Bounded, and safe to feed from librdkafka's
    threads while another thread reads it."""

    def __init__(self, keep: int = 200) -> None:
        self._lines: deque[str] = deque(maxlen=keep)
        self._errors: deque[tuple[str, str]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    @property
    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    @property
    def errors(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._errors)

    def log(self, level: int, message: str, *args: Any) -> None:
        with self._lock:
            self._lines.append(message % args if args else message)

    def on_error(self, error: Any) -> None:
        with self._lock:
            self._errors.append((error.name(), _NOISE.sub("", error.str())))

    def clear(self) -> None:
        with self._lock:
            self._lines.clear()
            self._errors.clear()

    def authentication_error(self) -> str | None:
        return next((text for name, text in self.errors if name == "_AUTHENTICATION"), None)


def diagnose(kafka: KafkaSettings, timeout_s: float = 3.0) -> Diagnosis:
    """Connect, authenticate and read metadata once; returns as soon as the answer is known."""
    require_client()
    from confluent_kafka.admin import AdminClient

    unreachable = _unreachable(kafka.bootstrap, min(timeout_s, 2.0))
    if unreachable:
        return Diagnosis(False, "connect", f"cannot connect to {', '.join(unreachable)}",
                         _fix_connect(kafka))  # fmt: skip
    collected = Collected()
    config: dict[str, Any] = {**client_config(kafka, client_id="squall-probe"),
                              "error_cb": collected.on_error, "logger": collected}  # fmt: skip
    return probe(AdminClient(config), collected, kafka, timeout_s)


def probe(admin: Any, collected: Collected, kafka: KafkaSettings, timeout_s: float) -> Diagnosis:
    """One metadata request through `admin` (whose error_cb and logger feed `collected`); a
    refusal is answered as soon as librdkafka reports it, not at the timeout."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            metadata = admin.list_topics(timeout=0.3)
        except KafkaException:
            admin.poll(0)  # serves error_cb
            if collected.authentication_error() is not None or _dropped(collected):
                break
            continue
        return Diagnosis(True, "metadata", topics=sorted(metadata.topics))
    unreachable = _unreachable(kafka.bootstrap, 1.0)
    if unreachable:
        return Diagnosis(False, "connect", f"cannot connect to {', '.join(unreachable)}",
                         _fix_connect(kafka))  # fmt: skip
    return _refused(kafka, collected)


def _unreachable(bootstrap: tuple[str, ...], timeout_s: float) -> list[str]:
    down = []
    for server in bootstrap:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or server, int(port)), timeout_s):
                pass
        except (OSError, ValueError):
            down.append(server)
    return down if len(down) == len(bootstrap) else []


def _refused(kafka: KafkaSettings, collected: Collected) -> Diagnosis:
    brokers = ", ".join(kafka.bootstrap)
    auth_error = collected.authentication_error()
    if auth_error is not None:
        text = auth_error.split(": ", 1)[-1]
        return Diagnosis(
            False, "authenticate",
            f"the broker {brokers} refused SASL {kafka.sasl_mechanism} authentication as "
            f"user {kafka.sasl_username!r}: {text}",
            "check SQUALL_KAFKA_SASL_USERNAME / SQUALL_KAFKA_SASL_PASSWORD (or the JAAS line in "
            "SQUALL_KAFKA_SASL_JAAS_CONFIG) and SQUALL_KAFKA_SASL_MECHANISM against the user "
            "defined on the broker",
        )  # fmt: skip
    if kafka.security_protocol == "PLAINTEXT" and _closed_by_broker(collected):
        return Diagnosis(
            False, "authenticate",
            f"the broker {brokers} accepts connections but closes them when Squall talks "
            "plain Kafka: it requires SASL or TLS, and no SASL settings are set",
            "set SQUALL_KAFKA_SECURITY_PROTOCOL (SASL_SSL, SASL_PLAINTEXT or SSL), "
            "SQUALL_KAFKA_SASL_MECHANISM, SQUALL_KAFKA_SASL_USERNAME and "
            "SQUALL_KAFKA_SASL_PASSWORD (or SQUALL_KAFKA_SASL_JAAS_CONFIG) as the broker's "
            "listener expects",
        )  # fmt: skip
    last = next((text for _, text in reversed(collected.errors)), "no answer")
    return Diagnosis(False, "metadata", f"the broker {brokers} did not answer a metadata "
                     f"request: {last}", _fix_connect(kafka))  # fmt: skip


def _dropped(collected: Collected) -> bool:
    """Every broker went down although TCP connects: the broker hangs up on us (no waiting
    for the full timeout, the answer will not change)."""
    return any(name == "_ALL_BROKERS_DOWN" for name, _ in collected.errors)


def _closed_by_broker(collected: Collected) -> bool:
    texts = collected.lines + [text for _, text in collected.errors]
    return any("by peer" in text or "brokers are down" in text for text in texts)


def _fix_connect(kafka: KafkaSettings) -> str:
    return (
        "check SQUALL_KAFKA_BOOTSTRAP (the brokers' advertised host:port), that the broker "
        f"runs, and that its listener speaks {kafka.security_protocol} "
        "(SQUALL_KAFKA_SECURITY_PROTOCOL); Squall retries by itself"
    )


def round_trip(kafka: KafkaSettings, topic: str, timeout_s: float = 10.0) -> float:
    """Produce one probe message and consume it back; seconds taken. RuntimeError why not."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    base: dict[str, Any] = {
        **client_config(kafka, client_id="squall-doctor"),
        "logger": Collected(),
    }
    started = time.monotonic()
    admin = AdminClient(base)
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    with contextlib.suppress(KafkaException):  # it may exist already
        futures[topic].result(timeout_s)
    marker = uuid.uuid4().hex.encode()
    delivered: list[Any] = []
    producer = Producer({**base, "message.timeout.ms": int(timeout_s * 1000)})
    producer.produce(topic, marker, on_delivery=lambda err, msg: delivered.append((err, msg)))
    producer.flush(timeout_s)
    if not delivered or delivered[0][0] is not None:
        error = delivered[0][0] if delivered else "no delivery report"
        raise RuntimeError(f"producing to {topic} failed: {error}")
    message = delivered[0][1]
    consumer = Consumer({**base, "group.id": f"squall-doctor-{marker.decode()}",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, message.partition(), message.offset())])
        return _consume_marker(consumer, marker, started, timeout_s)
    finally:
        consumer.close()


def _consume_marker(consumer: Any, marker: bytes, started: float, timeout_s: float) -> float:
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        received = consumer.poll(0.2)
        if received is None:
            continue
        if received.error() is None and received.value() == marker:
            return time.monotonic() - started
    raise RuntimeError(f"the probe message did not come back within {timeout_s:g} s")
