"""The settings tree: layers and their sources, OpenWhisk's names, secrets, and validation that
reports every problem at once (issue 6), plus the Kafka client settings it produces (issue 7)."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import pytest
from click.testing import CliRunner

from squall.bus.kafka_client import client_config
from squall.cli.main import cli
from squall.config import (
    InvalidConfiguration,
    KafkaSettings,
    Source,
    effective,
    load_settings,
    normalize,
    parse_jaas,
    specs,
)

PLAIN_JAAS = (
    'org.apache.kafka.common.security.plain.PlainLoginModule required username="alice" '
    'password="pa ss\\"word";'
)
SCRAM_JAAS = (
    "org.apache.kafka.common.security.scram.ScramLoginModule required "
    'username="bob" password="hunter2";'
)
CA = "/etc/ssl/certs/ca-certificates.crt"


def problems(env: dict[str, str], **kwargs: object) -> str:
    with pytest.raises(InvalidConfiguration) as raised:
        load_settings(env, **kwargs)  # type: ignore[arg-type]
    return str(raised.value)


def test_layers_default_file_env_flag_and_their_sources(tmp_path: Path) -> None:
    config = tmp_path / "squall.toml"
    config.write_text(
        'port = 4000\nhost = "127.0.0.2"\nbus = "kafka"\n'
        '[kafka]\nbootstrap = ["b1:9092", "b2:9092"]\n'
        "[limits]\nconcurrent_invocations = 5\n"
    )
    env = {"SQUALL_PORT": "5000", "SQUALL_HOST": "127.0.0.3"}
    settings = load_settings(env, config_file=config, flags={"port": (6000, "--port")})
    assert settings.port == 6000 and settings.source("port") == Source("flag", "--port")
    assert settings.host == "127.0.0.3" and settings.source("host") == Source("env", "SQUALL_HOST")
    assert settings.kafka.bootstrap == ("b1:9092", "b2:9092")
    assert settings.source("kafka.bootstrap") == Source("file", f"{config}: kafka.bootstrap")
    assert settings.limits.concurrent_invocations == 5
    assert settings.limits.invocations_per_minute == 60
    assert settings.source("limits.invocations_per_minute") == Source("default")


def test_yaml_file_with_openwhisk_nested_keys(tmp_path: Path) -> None:
    config = tmp_path / "squall.yaml"
    config.write_text(
        "bus: kafka\n"
        "whisk:\n"
        "  scheduler:\n"
        "    kafka:\n"
        "      security.protocol: SASL_PLAINTEXT\n"
        "      sasl:\n"
        "        mechanism: SCRAM-SHA-512\n"
        f"        jaas.config: '{SCRAM_JAAS}'\n"
        "  etcd:\n"
        "    hosts: etcd-0:2379,etcd-1:2379\n"
        "    lease:\n"
        "      timeout: 5\n"
        "KAFKA_HOSTS: kafka:9092\n"
    )
    settings = load_settings({}, config_file=config)
    kafka = settings.kafka
    assert kafka.security_protocol == "SASL_PLAINTEXT" and kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert (kafka.sasl_username, kafka.sasl_password) == ("bob", "hunter2")
    assert settings.etcd.endpoints == ("etcd-0:2379", "etcd-1:2379")
    assert settings.etcd.lease_ttl_s == 5.0
    assert settings.source("kafka.sasl_password").kind == "derived"


def test_openwhisk_environment_form_and_legacy_names() -> None:
    settings = load_settings({
        "KAFKA_HOSTS": "k1:9092,k2:9092",
        "CONFIG_whisk_kafka_common_securityProtocol": "sasl_ssl",
        "CONFIG_whisk_kafka_common_saslJaasConfig": PLAIN_JAAS,
        "CONFIG_whisk_kafka_common_sslCaLocation": CA,
        "CONFIG_whisk_etcd_hosts": "etcd:2379",
        "LIMITS_ACTIONS_INVOKES_PERMINUTE": "120",
        "CONFIG_whisk_scheduler_queue_idleGrace": "10 minutes",
        "CONFIG_whisk_somethingSquallIgnores": "x",
    })  # fmt: skip
    kafka = settings.kafka
    assert kafka.bootstrap == ("k1:9092", "k2:9092") and kafka.security_protocol == "SASL_SSL"
    # PlainLoginModule means PLAIN; the JAAS line gives user and password.
    assert (kafka.sasl_mechanism, kafka.sasl_username, kafka.sasl_password) == (
        "PLAIN", "alice", 'pa ss"word'
    )  # fmt: skip
    assert kafka.ssl_ca_file == Path(CA)
    assert settings.etcd.endpoints == ("etcd:2379",)
    assert settings.limits.invocations_per_minute == 120
    assert settings.scheduler.idle_grace_s == 600
    assert settings.source("limits.invocations_per_minute").name == (
        "LIMITS_ACTIONS_INVOKES_PERMINUTE"
    )


def test_squall_name_beats_an_openwhisk_alias() -> None:
    env = {"LIMITS_ACTIONS_INVOKES_PERMINUTE": "120", "SQUALL_LIMITS_INVOCATIONS_PER_MINUTE": "7"}
    assert load_settings(env).limits.invocations_per_minute == 7


def test_alias_normalisation() -> None:
    assert normalize("CONFIG_whisk_kafka_common_saslJaasConfig") == (
        "whisk.kafka.common.sasl.jaas.config"
    )
    assert normalize("whisk.kafka.common.sasl-jaas-config") == normalize(
        "whisk.kafka.common.sasl.jaas.config"
    )


def test_every_setting_has_a_unique_variable_and_alias() -> None:
    variables = [spec.env for spec in specs().values()]
    assert len(variables) == len(set(variables))
    aliases = [normalize(a) for spec in specs().values() for a in spec.meta.aliases]
    assert len(aliases) == len(set(aliases))


def test_secrets_from_files_as_kubernetes_mounts_them(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-secret\n")
    settings = load_settings({
        "SQUALL_KAFKA_BOOTSTRAP": "k:9092",
        "SQUALL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SQUALL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "SQUALL_KAFKA_SASL_USERNAME": "carol",
        "SQUALL_KAFKA_SASL_PASSWORD_FILE": str(secret),
    })  # fmt: skip
    assert settings.kafka.sasl_password == "from-a-secret"
    config = tmp_path / "c.toml"
    config.write_text(f'[etcd]\nusername = "root"\npassword_file = "{secret}"\n')
    assert load_settings({}, config_file=config).etcd.password == "from-a-secret"
    missing = problems({"SQUALL_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "nope")})
    assert "cannot read the secret file" in missing and "mount the Secret" in missing


def test_every_problem_is_reported_at_once_with_key_source_and_fix(tmp_path: Path) -> None:
    config = tmp_path / "squall.toml"
    config.write_text("[kafka]\nbootstrp = 'k:9092'\n")
    text = problems(
        {
            "SQUALL_PORTT": "1",
            "SQUALL_PORT": "abc",
            "SQUALL_BUS": "kafka",
            "SQUALL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "SQUALL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "SQUALL_ENTITY_STORE": "mysql://u:secretpw@db/squall",
            "SQUALL_COORDINATION": "etcd",
            "SQUALL_KAFKA_SSL_VERIFY": "maybe",
        },
        config_file=config,
    )
    expected = [
        "invalid configuration (9 problems)",
        f"kafka.bootstrp (file {config}: kafka.bootstrp): unknown key",
        "did you mean kafka.bootstrap?",
        "SQUALL_PORTT (env SQUALL_PORTT): unknown setting; did you mean SQUALL_PORT?"
        .replace("; did", "\n    fix: did"),
        "port (env SQUALL_PORT): 'abc' must be a whole number",
        "kafka.ssl_verify (env SQUALL_KAFKA_SSL_VERIFY): 'maybe' must be true or false",
        "bus (env SQUALL_BUS): the Kafka bus needs brokers",
        "fix: set SQUALL_KAFKA_BOOTSTRAP",
        "kafka.sasl_mechanism (env SQUALL_KAFKA_SASL_MECHANISM): SCRAM-SHA-512 needs SASL "
        "credentials, and SQUALL_KAFKA_SASL_USERNAME and SQUALL_KAFKA_SASL_PASSWORD are not set",
        "SASL_SSL verifies the broker's certificate but no CA is set",
        "unknown store scheme 'mysql'",
        "coordination (env SQUALL_COORDINATION): etcd coordination needs endpoints",
    ]
    for fragment in expected:
        assert fragment in text
    assert "secretpw" not in text


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"SQUALL_KAFKA_SASL_MECHANISM": "PLAIN", "SQUALL_KAFKA_SASL_USERNAME": "u",
          "SQUALL_KAFKA_SASL_PASSWORD": "p"},
         ["security protocol is PLAINTEXT", "SQUALL_KAFKA_SECURITY_PROTOCOL=SASL_SSL"]),
        ({"SQUALL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SQUALL_KAFKA_SASL_USERNAME": "u",
          "SQUALL_KAFKA_SASL_PASSWORD": "p"}, ["needs a SASL mechanism"]),
        ({"SQUALL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
          "SQUALL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
          "SQUALL_KAFKA_SASL_JAAS_CONFIG": PLAIN_JAAS},
         ["PlainLoginModule does not match the SASL mechanism SCRAM-SHA-256"]),
        ({"SQUALL_KAFKA_SASL_JAAS_CONFIG": "username=alice password=hunter2"},
         ["is not a JAAS line"]),
        ({"SQUALL_KAFKA_SECURITY_PROTOCOL": "SSL",
          "SQUALL_KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"},
         ["/nonexistent/ca.pem is not a readable file"]),
        ({"SQUALL_KAFKA_SECURITY_PROTOCOL": "SSL", "SQUALL_KAFKA_SSL_VERIFY": "false",
          "SQUALL_KAFKA_SSL_CERT_FILE": CA}, ["a client certificate needs its key"]),
        ({"SQUALL_KAFKA_SSL_CA_FILE": CA}, ["which does not use TLS"]),
        ({"SQUALL_KAFKA_SECURITY_PROTOCOL": "SASL_GSSAPI"},
         ["must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"]),
        ({"CONFIG_whisk_kafka_common_sslTruststoreLocation": "/x.jks"},
         ["not supported", "not Java truststores", "SQUALL_KAFKA_SSL_CA_FILE"]),
        ({"SQUALL_ETCD_ENDPOINTS": "etcd:2379", "SQUALL_ETCD_USERNAME": "root"},
         ["needs both a user and a password"]),
        ({"SQUALL_ETCD_ENDPOINTS": "etcd/2379/x"}, ["is not host:port"]),
        ({"SQUALL_LOG_FORMAT": "xml"}, ["must be one of text, json"]),
    ],
)  # fmt: skip
def test_impossible_combinations(env: dict[str, str], fragments: list[str]) -> None:
    text = problems(env)
    for fragment in fragments:
        assert fragment in text
    assert "hunter2" not in text


def test_file_values_keep_their_types(tmp_path: Path) -> None:
    config = tmp_path / "s.toml"
    config.write_text("port = 4000.0\n[kafka]\nssl_verify = false\n")
    settings = load_settings({}, config_file=config)
    assert settings.port == 4000 and settings.kafka.ssl_verify is False
    config.write_text('host = ["a", "b"]\nport = 1.5\n')
    text = problems({}, config_file=config)
    assert "host (file" in text and "must be a single value" in text
    assert "port (file" in text and "must be a whole number" in text


def test_jaas_lines() -> None:
    jaas = parse_jaas(SCRAM_JAAS)
    assert jaas.options == {"username": "bob", "password": "hunter2"}
    assert jaas.mechanisms == ("SCRAM-SHA-256", "SCRAM-SHA-512")
    with pytest.raises(ValueError, match="cannot use") as raised:
        parse_jaas('com.sun.security.auth.module.Krb5LoginModule required keyTab="k" x="hunter2";')
    assert "hunter2" not in str(raised.value)


def test_effective_configuration_masks_secrets() -> None:
    settings = load_settings({
        "SQUALL_KAFKA_BOOTSTRAP": "k:9092",
        "CONFIG_whisk_kafka_common_securityProtocol": "SASL_PLAINTEXT",
        "CONFIG_whisk_kafka_common_saslJaasConfig": SCRAM_JAAS,
        "SQUALL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "SQUALL_ACTIVATION_STORE": "postgresql://squall:hunter2@db/squall",
    })  # fmt: skip
    rows = {row["key"]: row for row in effective(settings)}
    assert "hunter2" not in json.dumps(rows)
    assert rows["kafka.sasl_password"]["value"] == "***"
    assert rows["kafka.sasl_password"]["source"] == (
        "derived from env CONFIG_whisk_kafka_common_saslJaasConfig"
    )
    assert rows["kafka.sasl_username"]["value"] == "bob"
    assert rows["stores.activation_store"]["value"] == "postgresql://squall:***@db/squall"
    assert rows["port"] == {"key": "port", "value": 3233, "source": "default", "env": "SQUALL_PORT"}


def test_config_show_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith(("SQUALL_", "CONFIG_", "LIMITS_", "KAFKA_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SQUALL_ETCD_PASSWORD", "hunter2")
    monkeypatch.setenv("SQUALL_ETCD_USERNAME", "root")
    config = tmp_path / "s.toml"
    config.write_text("port = 4100\n")
    runner = CliRunner()
    shown = runner.invoke(cli, ["config", "show", "--config", str(config)])
    assert shown.exit_code == 0, shown.output
    assert f"4100  [file {config}: port]" in shown.output
    assert "etcd.password" in shown.output and "hunter2" not in shown.output
    as_json = runner.invoke(cli, ["config", "show", "--json", "--config", str(config)])
    rows = {row["key"]: row for row in json.loads(as_json.output)["settings"]}
    assert rows["etcd.username"] == {"key": "etcd.username", "value": "root",
                                     "source": "env SQUALL_ETCD_USERNAME",
                                     "env": "SQUALL_ETCD_USERNAME"}  # fmt: skip
    monkeypatch.setenv("SQUALL_BUS", "kafak")
    bad = runner.invoke(cli, ["config", "show"])
    assert bad.exit_code == 2
    assert "bus (env SQUALL_BUS): 'kafak' must be one of memory, kafka" in bad.output


def _kafka(protocol: str, mechanism: str | None) -> KafkaSettings:
    return KafkaSettings(
        bootstrap=("b1:9093", "b2:9093"), security_protocol=protocol,  # type: ignore[arg-type]
        sasl_mechanism=mechanism, sasl_username="u", sasl_password="p",  # type: ignore[arg-type]
        ssl_ca_file=Path("/ca.pem"), ssl_cert_file=Path("/c.pem"), ssl_key_file=Path("/k.pem"),
        ssl_check_hostname=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    list(product(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
                 ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])),
)  # fmt: skip
def test_client_settings_for_every_protocol_and_mechanism(protocol: str, mechanism: str) -> None:
    config = client_config(_kafka(protocol, mechanism))
    assert config["bootstrap.servers"] == "b1:9093,b2:9093"
    assert config["security.protocol"] == protocol.lower()
    sasl = {k: config.get(k) for k in ("sasl.mechanism", "sasl.username", "sasl.password")}
    if protocol.startswith("SASL"):
        assert sasl == {"sasl.mechanism": mechanism, "sasl.username": "u", "sasl.password": "p"}
    else:
        assert sasl == dict.fromkeys(sasl)
    tls = {k: config.get(k) for k in ("ssl.ca.location", "ssl.certificate.location",
                                      "ssl.key.location", "ssl.endpoint.identification.algorithm",
                                      "enable.ssl.certificate.verification")}  # fmt: skip
    if protocol.endswith("SSL"):
        assert tls == {"ssl.ca.location": "/ca.pem", "ssl.certificate.location": "/c.pem",
                       "ssl.key.location": "/k.pem",
                       "ssl.endpoint.identification.algorithm": "none",
                       "enable.ssl.certificate.verification": True}  # fmt: skip
    else:
        assert tls == dict.fromkeys(tls)
