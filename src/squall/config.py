"""Squall's settings: one typed tree, its sources, OpenWhisk's names for it, and validation.

Values come in layers, each overriding the one before: the defaults written below, a config
file (`--config` or `SQUALL_CONFIG`, TOML or YAML), the environment (`SQUALL_*`, plus
OpenWhisk's names) and command-line flags. Every value remembers where it came from, so
`squall config show` can say so and every problem names the setting the operator actually set.

The tree *is* the registry: each dataclass field is a setting whose canonical key is its path
(`kafka.sasl_mechanism`) and whose environment variable is `SQUALL_` plus the key in capitals
(`SQUALL_KAFKA_SASL_MECHANISM`), unless its `setting(...)` metadata names another. Aliases are
declared on the field they set, so adding a setting with OpenWhisk's names is one line::

    invocations_per_minute: int = setting(60, aliases=("LIMITS_ACTIONS_INVOKES_PERMINUTE",))

Aliases match loosely, the way OpenWhisk spells the same key in several places: case, `-`, `_`
and `.` are interchangeable, and `CONFIG_whisk_kafka_common_saslMechanism` (OpenWhisk's
environment form) is read as `whisk.kafka.common.sasl-mechanism`.

Validation collects every problem before anything starts and raises one ConfigurationError
listing them all; the CLI exits with status 2 on it, and nothing retries a wrong configuration.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import quote, urlencode

from squall.errors import ConfigurationError
from squall.stores.select import StoreURL, parse_store_url
from squall.stores.urls import redact

# -- declaring settings ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Meta:
    """How one field is read: its environment name, aliases, and whether it is a secret."""

    env: str | None = None
    aliases: tuple[str, ...] = ()
    secret: bool = False
    duration: bool = False  # accepts 30s, 15m, 12h, 1d, 100ms besides plain seconds
    help: str = ""
    internal: bool = False  # not a setting: derived or bookkeeping


def setting(
    default: Any = MISSING,
    *,
    default_factory: Callable[[], Any] | None = None,
    env: str | None = None,
    aliases: tuple[str, ...] = (),
    secret: bool = False,
    duration: bool = False,
    help: str = "",
    internal: bool = False,
) -> Any:
    """A dataclass field that is also a setting (see the module docstring)."""
    meta = {"squall": Meta(env, aliases, secret, duration, help, internal)}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


# -- the tree ----------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class ActionLimitRange:
    """System range and default of one per-action limit (OpenWhisk's min/std/max)."""

    minimum: int
    default: int
    maximum: int


@dataclass(slots=True, frozen=True)
class SystemLimits:
    """OpenWhisk's system limits, as the helm chart and standalone set them."""

    invocations_per_minute: int = setting(
        60, aliases=("LIMITS_ACTIONS_INVOKES_PERMINUTE", "whisk.limits.actions.invokes.perMinute")
    )
    concurrent_invocations: int = setting(
        30, aliases=("LIMITS_ACTIONS_INVOKES_CONCURRENT", "whisk.limits.actions.invokes.concurrent")
    )
    fires_per_minute: int = setting(
        60, aliases=("LIMITS_TRIGGERS_FIRES_PERMINUTE", "whisk.limits.triggers.fires.perMinute")
    )
    sequence_max_length: int = setting(
        50, aliases=("LIMITS_ACTIONS_SEQUENCE_MAXLENGTH", "whisk.limits.actions.sequence.maxLength")
    )
    timeout_ms: ActionLimitRange = ActionLimitRange(100, 60_000, 300_000)
    memory_mb: ActionLimitRange = ActionLimitRange(128, 256, 512)
    logs_mb: ActionLimitRange = ActionLimitRange(0, 10, 10)
    concurrency: ActionLimitRange = ActionLimitRange(1, 1, 1)
    code_bytes: int = 48 * 1024 * 1024
    parameters_bytes: int = 1024 * 1024
    payload_bytes: int = 1024 * 1024
    result_bytes: int = 1024 * 1024
    query_limit: int = 200
    max_blocking_wait_ms: int = 60_000
    auth_failure_burst: int = 10  # failed logins per client address before one a second


@dataclass(slots=True, frozen=True)
class SchedulerSettings:
    """The scheduling decision maker's knobs (OpenWhisk's `whisk.scheduler.*`)."""

    check_interval_s: float = setting(
        0.1, duration=True, aliases=("whisk.scheduler.scheduling.check-interval",)
    )
    stale_threshold_ms: int = 100
    max_retention_size: int = setting(10_000, aliases=("whisk.scheduler.queue.max-retention-size",))
    max_retention_ms: int = setting(60_000, aliases=("whisk.scheduler.queue.max-retention-ms",))
    throttling_fraction: float = setting(
        0.9, aliases=("whisk.scheduler.queue.throttling-fraction",)
    )
    duration_buffer_size: int = setting(10, aliases=("whisk.scheduler.queue.duration-buffer-size",))
    idle_grace_s: float = setting(
        20.0, duration=True, aliases=("whisk.scheduler.queue.idle-grace",)
    )
    # How far back the activation store's duration statistics look when a queue is created
    # (OpenWhisk's `whisk.duration-checker.time-window`, 1 day in its charts).
    duration_window_s: float = setting(
        86_400.0, duration=True, aliases=("whisk.duration-checker.time-window",)
    )
    # Alarm ticks fired at once (their first attempt). A fire with an active rule waits for
    # its trigger record's group commit before its actions are sent (the fire ledger), so this
    # many fires per commit latency is the most a scheduler delivers. Higher helps while the
    # CPU has room; each waiting fire's actions count against the namespace's in-flight quota
    # (measured on 2 cores: 2048 gave 1,063 fires/s with two thirds of the rules' invocations
    # refused by a quota of 1,000, and 903 fires/s with every action run once it was lifted).
    alarm_fires_in_flight: int = 256


@dataclass(slots=True, frozen=True)
class InvokerSettings:
    """Container pool knobs (OpenWhisk's `whisk.container-pool.*`, `container-proxy.*`)."""

    user_memory_mb: int = setting(4096, env="SQUALL_USER_MEMORY_MB")
    # None: each runtime's stem-cell count from the runtimes manifest; a number overrides them all.
    prewarm_count: int | None = setting(None, env="SQUALL_PREWARM_COUNT")
    idle_container_s: float = setting(
        600.0, duration=True, aliases=("whisk.container-proxy.timeouts.idle-container",)
    )


@dataclass(slots=True, frozen=True)
class StoreSettings:
    """Where entities and activations live, and how long activations are kept."""

    entity_store: str | None = setting(None, env="SQUALL_ENTITY_STORE")  # None: SQLite
    activation_store: str | None = setting(None, env="SQUALL_ACTIVATION_STORE")
    # The settings the URLs came from, named in every error about them.
    entity_variable: str = setting("SQUALL_ENTITY_STORE", internal=True)
    activation_variable: str = setting("SQUALL_ACTIVATION_STORE", internal=True)
    # None keeps activations forever, as OpenWhisk does.
    retention_s: float | None = setting(None, env="SQUALL_ACTIVATION_RETENTION", duration=True)
    # Activation records held while the store is unreachable.
    buffer_max: int = setting(100_000, env="SQUALL_ACTIVATION_BUFFER_MAX")


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
_KAFKA_COMMON = ("whisk.kafka.common.", "whisk.scheduler.kafka.")


def _kafka_aliases(*names: str) -> tuple[str, ...]:
    """OpenWhisk's `whisk.kafka.common.*` (its env form included) and `whisk.scheduler.kafka.*`."""
    return tuple(prefix + name for name in names for prefix in _KAFKA_COMMON)


@dataclass(slots=True, frozen=True)
class KafkaSettings:
    """How to reach Kafka when `bus` is `kafka` (see docs/configuration.md)."""

    bootstrap: tuple[str, ...] = setting(
        (), aliases=("KAFKA_HOSTS", *_kafka_aliases("bootstrap.servers")),
        help="host:port of one or more brokers, comma separated",
    )  # fmt: skip
    security_protocol: SecurityProtocol = setting(
        "PLAINTEXT", aliases=_kafka_aliases("security.protocol")
    )
    sasl_mechanism: SaslMechanism | None = setting(None, aliases=_kafka_aliases("sasl.mechanism"))
    sasl_username: str | None = setting(None, aliases=_kafka_aliases("sasl.username"))
    sasl_password: str | None = setting(None, secret=True, aliases=_kafka_aliases("sasl.password"))
    sasl_jaas_config: str | None = setting(
        None, secret=True, aliases=_kafka_aliases("sasl.jaas.config"),
        help="a JAAS line; its username and password are used when those are not set",
    )  # fmt: skip
    ssl_ca_file: Path | None = setting(None, aliases=_kafka_aliases("ssl.ca.location"))
    ssl_cert_file: Path | None = setting(None, aliases=_kafka_aliases("ssl.certificate.location"))
    ssl_key_file: Path | None = setting(None, aliases=_kafka_aliases("ssl.key.location"))
    ssl_key_password: str | None = setting(
        None, secret=True, aliases=_kafka_aliases("ssl.key.password")
    )
    ssl_verify: bool = setting(True, help="verify the broker's certificate against the CA")
    ssl_check_hostname: bool = setting(True, help="check the broker's name in its certificate")
    topic_prefix: str = setting(
        "", aliases=("whisk.kafka.topics.prefix",), help="prepended to every topic name"
    )
    # Topics Squall creates (on start and subscribe, and again after a broker lost them).
    partitions: int = setting(1, help="partitions of each topic Squall creates")
    replication_factor: int = setting(1, help="replicas of each topic Squall creates")
    # How long the broker may hold a consumer's fetch when no message is there. Apache Kafka
    # answers a held fetch as soon as a message arrives, so there a larger value (100) only
    # saves requests; Tansu holds every fetch for the full time, so it is each hop's latency.
    fetch_wait_ms: int = setting(2, help="fetch.wait.max.ms of the bus's consumers")


@dataclass(slots=True, frozen=True)
class EtcdSettings:
    """How to reach etcd when `coordination` is `etcd`."""

    endpoints: tuple[str, ...] = setting(
        (), aliases=("whisk.etcd.hosts",), help="host:port or http(s)://host:port, comma separated"
    )
    username: str | None = setting(None, aliases=("whisk.etcd.username",))
    password: str | None = setting(None, secret=True, aliases=("whisk.etcd.password",))
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    lease_ttl_s: float = setting(3.0, duration=True, aliases=("whisk.etcd.lease.timeout",))
    prefix: str = setting("squall", aliases=("whisk.cluster.name",))


@dataclass(slots=True, frozen=True)
class ClusterSettings:
    """How role processes (controller, scheduler, invoker) find and trust each other."""

    # This process's member id, unique per role: its Kafka topic and etcd membership key.
    # Unset: the role and the host name (a pod's name is unique in its StatefulSet).
    id: str | None = setting(None, help="member id, e.g. scheduler0; default: role-hostname")
    # Shared secret on the internal endpoints (invokers fetching from schedulers, controllers
    # managing alarms). Unset: the internal endpoints accept any caller on the network.
    token: str | None = setting(None, secret=True, help="bearer token for internal endpoints")
    # Where the other members reach this process (its internal endpoints); default
    # http://{host}:{port}, with this host's address when listening on every interface.
    url: str | None = setting(None, help="advertised URL, e.g. http://10.0.0.7:3233")
    # Alarms are split into this many shards, each owned by one live scheduler.
    alarm_shards: int = 64
    # How often an invoker publishes its free memory to the coordinator.
    capacity_interval_s: float = setting(1.0, duration=True)


@dataclass(slots=True, frozen=True)
class LogSettings:
    """How the process logs."""

    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value came from: `default`, `file`, `env`, `flag` or `derived`."""

    kind: Literal["default", "file", "env", "flag", "derived"]
    name: str = ""

    def __str__(self) -> str:
        return self.kind if not self.name else f"{self.kind} {self.name}"


DEFAULT = Source("default")


@dataclass(slots=True, frozen=True)
class Settings:
    """The whole configuration of one Squall process."""

    host: str = "127.0.0.1"
    port: int = setting(3233, aliases=("PORT",))
    data_dir: Path = setting(default_factory=lambda: Path.home() / ".squall")
    guest_auth: str | None = setting(None, secret=True)
    api_host: str | None = None  # what actions see as __OW_API_HOST; default http://host:port
    bus: Literal["memory", "kafka"] = setting("memory", help="memory (one process) or kafka")
    coordination: Literal["local", "etcd"] = setting("local", help="local (one process) or etcd")
    limits: SystemLimits = field(default_factory=SystemLimits)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    invoker: InvokerSettings = field(default_factory=InvokerSettings)
    stores: StoreSettings = field(default_factory=lambda: StoreSettings())
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    log: LogSettings = field(default_factory=LogSettings)
    runtimes: RuntimeSettings = field(default_factory=lambda: RuntimeSettings())
    access: AccessSettings = field(default_factory=lambda: AccessSettings())
    # Where each value came from (canonical key -> source); defaults are not listed.
    sources: Mapping[str, Source] = setting(default_factory=dict, internal=True)

    @property
    def database_path(self) -> Path:
        """The embedded SQLite file."""
        return self.data_dir / "squall.db"

    @property
    def entity_store_url(self) -> StoreURL:
        """The entity store's URL (`sqlite://`: the data dir's file, when unset)."""
        return parse_store_url(self.stores.entity_store or "sqlite://", self.stores.entity_variable,
                               "entity")  # fmt: skip

    @property
    def activation_store_url(self) -> StoreURL:
        return parse_store_url(self.stores.activation_store or "sqlite://",
                               self.stores.activation_variable, "activation")  # fmt: skip

    def with_overrides(self, **values: Any) -> Settings:
        """A copy with top-level values replaced (None means keep), e.g. from CLI flags."""
        kept = {k: v for k, v in values.items() if v is not None}
        return replace(self, **kept)

    def source(self, key: str) -> Source:
        return self.sources.get(key, DEFAULT)


# ---------------------------------------------------------------------------------------------
# Runtimes and namespaces (issue 4): the runtimes manifest, and how fresh the controller's view
# of a namespace's key and limits is (`squall admin` writes them to the entity store).
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class RuntimeSettings:
    """Which action kinds exist: OpenWhisk's RUNTIMES_MANIFEST."""

    # JSON text or a path to a JSON file; None is the manifest shipped in squall/runtimes.json.
    manifest: str | None = setting(
        None, env="SQUALL_RUNTIMES_MANIFEST", aliases=("RUNTIMES_MANIFEST",)
    )

    def variable(self, source: Source) -> str:
        """The variable (or file key) the manifest came from, for messages about it."""
        return source.name or "SQUALL_RUNTIMES_MANIFEST"


@dataclass(slots=True, frozen=True)
class AccessSettings:
    """How long a verified key, and the namespace limits read with it, are trusted before the
    entity store is read again: `squall admin` changes reach a running server within this."""

    identity_ttl_s: float = setting(2.0, duration=True, env="SQUALL_IDENTITY_TTL")


# -- the registry derived from the tree --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    """One setting: canonical key, environment name, aliases, and how to read a value."""

    key: str
    path: tuple[str, ...]
    env: str
    hint: Any  # the field's type
    meta: Meta

    @property
    def secret(self) -> bool:
        return self.meta.secret


@cache
def specs() -> dict[str, Spec]:
    """Every setting of the tree by canonical key, in declaration order."""
    return {spec.key: spec for spec in _walk(Settings, ())}


def _walk(cls: type, prefix: tuple[str, ...]) -> Iterator[Spec]:
    hints = get_type_hints(cls)
    for f in fields(cls):
        meta = f.metadata.get("squall", Meta())
        if meta.internal:
            continue
        hint, path = hints[f.name], (*prefix, f.name)
        if isinstance(hint, type) and is_dataclass(hint):
            yield from _walk(hint, path)
            continue
        key = ".".join(path)
        yield Spec(key, path, meta.env or "SQUALL_" + "_".join(path).upper(), hint, meta)


def normalize(name: str) -> str:
    """One spelling for every way OpenWhisk writes a key (see the module docstring)."""
    if name.startswith("CONFIG_"):
        segments = name.removeprefix("CONFIG_").split("_")
        name = ".".join(re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", s) for s in segments)
    return re.sub(r"[-_.]+", ".", name.strip().lower())


@cache
def _alias_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for spec in specs().values():
        for name in (spec.key, *spec.meta.aliases):
            index[normalize(name)] = spec.key
    return index


@cache
def _env_index() -> dict[str, str]:
    return {spec.env: spec.key for spec in specs().values()}


# Names that are not settings of the tree but are read (the OpenWhisk activation-store keys,
# which together make one URL) or belong to something else (the CLI client's variables).
_CLIENT_ENV = frozenset({"SQUALL_APIHOST", "SQUALL_AUTH", "SQUALL_CONFIG"})
_OW_BACKEND = ("activationStoreBackend", "ACTIVATION_STORE_BACKEND")
_OW_PROVIDER = ("CONFIG_whisk_spi_ActivationStoreProvider", "whisk.spi.ActivationStoreProvider")
_OW_ES_KEYS = {
    key: (f"CONFIG_whisk_activationStore_elasticsearch_{camel}",
          f"whisk.activation-store.elasticsearch.{dotted}")
    for key, camel, dotted in (
        ("protocol", "protocol", "protocol"),
        ("hosts", "hosts", "hosts"),
        ("index_pattern", "indexPattern", "index-pattern"),
        ("username", "username", "username"),
        ("password", "password", "password"),
    )
}  # fmt: skip
_OW_STORE_NAMES = {normalize(n) for n in (*_OW_BACKEND, *_OW_PROVIDER)} | {
    normalize(n) for names in _OW_ES_KEYS.values() for n in names
}
# OpenWhisk names Squall understands but cannot honour: the fix says what to set instead.
_REFUSED = {
    normalize(f"whisk.kafka.common.{name}"): fix
    for name, fix in (
        ("ssl.truststore.location", "Squall reads PEM files, not Java truststores: export the CA "
         "(keytool -exportcert -rfc) and set SQUALL_KAFKA_SSL_CA_FILE to it"),
        ("ssl.keystore.location", "Squall reads PEM files, not Java keystores: export the client "
         "certificate and key and set SQUALL_KAFKA_SSL_CERT_FILE and SQUALL_KAFKA_SSL_KEY_FILE"),
    )
}  # fmt: skip


# -- reading the layers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Raw:
    """A value as written, before conversion, with its source."""

    value: Any
    source: Source
    rank: int = 0  # within a layer the canonical name (0) beats an alias (1)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration: which key, from where, what, and the fix."""

    key: str
    source: Source
    message: str
    fix: str = ""

    def __str__(self) -> str:
        where = f" ({self.source})" if self.source.kind != "default" else ""
        text = f"{self.key}{where}: {self.message}"
        return f"{text}\n    fix: {self.fix}" if self.fix else text

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "source": str(self.source), "problem": self.message,
                "fix": self.fix}  # fmt: skip


class InvalidConfiguration(ConfigurationError):
    """Every problem found, reported together (exit status 2)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        lines = "\n  - ".join(str(p) for p in problems)
        super().__init__(f"invalid configuration ({count}):\n  - {lines}")


@dataclass
class Layers:
    """Raw values by canonical key after merging the layers, plus what was read on the way."""

    raw: dict[str, Raw] = field(default_factory=dict)
    names: dict[str, tuple[str, Source]] = field(default_factory=dict)  # every name seen
    problems: list[Problem] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def merge(self, layer: dict[str, Raw]) -> None:
        self.raw.update(layer)


def _offer(layer: dict[str, Raw], key: str, raw: Raw) -> None:
    current = layer.get(key)
    if current is None or raw.rank < current.rank:
        layer[key] = raw


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else "see docs/configuration.md for every key"


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's settings as flat dotted keys; TOML by default, YAML for .yaml/.yml."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidConfiguration(
            [
                Problem(
                    "--config",
                    Source("flag", str(path)),
                    f"cannot read it ({exc.strerror})",
                    "give the path of a readable TOML or YAML file",
                )
            ]
        ) from exc
    try:
        data = _parse_file(path, text)
    except ValueError as exc:
        raise InvalidConfiguration(
            [
                Problem(
                    "--config",
                    Source("flag", str(path)),
                    f"not valid {_format(path)}: {exc}",
                    "fix the syntax at the place named",
                )
            ]
        ) from exc
    return dict(_flatten(data, ""))


def _format(path: Path) -> str:
    return "YAML" if path.suffix.lower() in (".yaml", ".yml") else "TOML"


def _parse_file(path: Path, text: str) -> dict[str, Any]:
    if _format(path) == "YAML":
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ValueError(str(exc)) from exc
    else:
        data = tomllib.loads(text)  # TOMLDecodeError is a ValueError
    if not isinstance(data, dict):
        raise ValueError("the top level must be a table of keys")
    return data


def _flatten(data: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            yield from _flatten(value, key + ".")
        else:
            yield key, value


def _file_layer(values: dict[str, Any], path: Path, layers: Layers) -> dict[str, Raw]:
    layer: dict[str, Raw] = {}
    keys = list(specs())
    for name, value in values.items():
        source = Source("file", f"{path}: {name}")
        layers.names[normalize(name)] = (str(value), source)
        if name.endswith("_file") and (key := _secret_key(normalize(name.removesuffix("_file")))):
            _offer(layer, key, _read_secret_file(key, Path(str(value)), source, layers))
        elif (key := _alias_index().get(normalize(name))) is not None:
            _offer(layer, key, Raw(value, source, 0 if name == key else 1))
        elif (fix := _REFUSED.get(normalize(name))) is not None:
            layers.problems.append(Problem(name, source, "not supported", fix))
        elif normalize(name) not in _OW_STORE_NAMES:
            layers.problems.append(Problem(name, source, "unknown key", _suggest(name, keys)))
    return layer


def _env_layer(env: Mapping[str, str], layers: Layers) -> dict[str, Raw]:
    layer: dict[str, Raw] = {}
    env_names = list(_env_index())
    for name, value in env.items():
        if not value:  # empty means unset, as in OpenWhisk's own CONFIG_ handling
            continue
        source = Source("env", name)
        layers.names[normalize(name)] = (value, source)
        if name in _env_index():
            _offer(layer, _env_index()[name], Raw(value, source, 0))
        elif (
            name.startswith("SQUALL_")
            and name.endswith("_FILE")
            and (key := _secret_key_by_env(name.removesuffix("_FILE")))
        ):
            _offer(layer, key, _read_secret_file(key, Path(value), source, layers))
        elif name.startswith("SQUALL_"):
            if name not in _CLIENT_ENV:
                layers.problems.append(Problem(
                    name, source, "unknown setting", _suggest(name, env_names)
                ))  # fmt: skip
        elif (key := _alias_index().get(normalize(name))) is not None:
            _offer(layer, key, Raw(value, source, 1))
        elif (fix := _REFUSED.get(normalize(name))) is not None:
            layers.problems.append(Problem(name, source, "not supported", fix))
        elif name.startswith("CONFIG_whisk_") and normalize(name) not in _OW_STORE_NAMES:
            layers.ignored.append(name)  # OpenWhisk deployments carry many Squall has no use for
    return layer


def _secret_key(normalized: str) -> str | None:
    key = _alias_index().get(normalized)
    return key if key is not None and specs()[key].secret else None


def _secret_key_by_env(env_name: str) -> str | None:
    key = _env_index().get(env_name)
    return key if key is not None and specs()[key].secret else None


def _read_secret_file(key: str, path: Path, source: Source, layers: Layers) -> Raw:
    """A secret from a file, as Kubernetes mounts a Secret: the content, trailing newline off."""
    try:
        return Raw(path.read_text().rstrip("\r\n"), source)
    except OSError as exc:
        layers.problems.append(Problem(
            key, source, f"cannot read the secret file {path} ({exc.strerror})",
            "mount the Secret there, or point the setting at the file that holds it",
        ))  # fmt: skip
        return Raw(None, source)


# -- converting --------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def convert(spec: Spec, value: Any) -> Any:
    """The typed value of `value` for `spec`; ValueError says what was expected."""
    hint = spec.hint
    optional = _is_optional(hint)
    if optional:
        hint = next(a for a in get_args(hint) if a is not type(None))
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
    if get_origin(hint) is tuple:
        items = value if isinstance(value, list | tuple) else str(value).split(",")
        return tuple(str(item).strip() for item in items if str(item).strip())
    if isinstance(value, list | tuple | dict):  # from a file: a table or list for one value
        raise ValueError("must be a single value, not a list or table")
    if spec.meta.duration:
        return parse_duration(spec.key, str(value))
    if get_origin(hint) is Literal:
        return _choice(get_args(hint), value)
    if hint is bool:
        return _boolean(value)
    if hint is int:
        return _integer(value)
    if hint is float:
        return _number(value)
    if hint is Path:
        return Path(str(value)).expanduser()
    return str(value)


def _is_optional(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


def _choice(choices: tuple[str, ...], value: Any) -> str:
    for choice in choices:
        if str(value).strip().upper() == choice.upper():
            return choice
    raise ValueError("must be one of " + ", ".join(choices))


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError("must be true or false")


def _integer(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("must be a whole number")
    if isinstance(value, float):
        return int(value)
    try:
        return int(str(value).strip().replace("_", ""))
    except ValueError:
        raise ValueError("must be a whole number") from None


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError("must be a number") from None


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*$")
_DURATION_UNITS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "ms": 0.001, "millis": 0.001, "milliseconds": 0.001,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86_400.0, "day": 86_400.0, "days": 86_400.0,
}  # fmt: skip


def parse_duration(name: str, raw: str) -> float:
    """Seconds from `90`, `90s`, `100ms`, `15m`, `10 minutes`, `12h` or `30d` (HOCON-like)."""
    match = _DURATION.match(raw.lower())
    unit = _DURATION_UNITS.get(match.group(2)) if match else None
    if match is None or unit is None:
        raise ConfigurationError(
            f"{name}={raw!r} is not a duration; write e.g. 30d, 12h, 15m, 100ms or 3600 (seconds)"
        )
    seconds = float(match.group(1)) * unit
    if seconds <= 0:
        raise ConfigurationError(f"{name}={raw!r} must be positive (e.g. 30d)")
    return seconds


# -- building the tree -------------------------------------------------------------------------


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    config_file: Path | None = None,
    flags: Mapping[str, tuple[Any, str]] | None = None,
) -> Settings:
    """Settings from defaults < config file < environment < flags, validated.

    `flags` maps canonical keys to (value, flag name); None values are skipped. The config file
    is `config_file`, else the one `SQUALL_CONFIG` names, else none. Raises
    InvalidConfiguration listing every problem.
    """
    env = os.environ if environ is None else environ
    layers = Layers()
    path = config_file or (Path(env["SQUALL_CONFIG"]) if env.get("SQUALL_CONFIG") else None)
    if path is not None:
        layers.merge(_file_layer(read_config_file(path), path, layers))
    layers.merge(_env_layer(env, layers))
    for key, (value, flag) in (flags or {}).items():
        if value is not None:
            layers.raw[key] = Raw(value, Source("flag", flag))
    settings = _build(layers)
    validate(settings, layers.problems)
    return settings


def _build(layers: Layers) -> Settings:
    typed: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for key, raw in layers.raw.items():
        if raw.value is None:
            continue  # an unreadable secret file: already a problem
        spec = specs()[key]
        try:
            typed[key] = convert(spec, raw.value)
            sources[key] = raw.source
        except (ValueError, ConfigurationError) as exc:
            shown = "***" if spec.secret else repr(raw.value)
            layers.problems.append(Problem(
                key, raw.source, f"{shown} {_reason(exc)}", f"e.g. {spec.env}={_example(spec)}"
            ))  # fmt: skip
    _activation_store_from_openwhisk(layers, typed, sources)
    _credentials_from_jaas(layers, typed, sources)
    tree: Settings = _assemble(Settings, (), typed)
    stores = replace(
        tree.stores,
        entity_variable=_variable(sources.get("stores.entity_store"), "SQUALL_ENTITY_STORE"),
        activation_variable=_variable(
            sources.get("stores.activation_store"), "SQUALL_ACTIVATION_STORE"
        ),
    )
    return replace(tree, stores=stores, sources=sources)


def _example(spec: Spec) -> str:
    default = _value_at(Settings(), spec.path)
    if isinstance(default, tuple):
        return ",".join(default) or "host:port"
    if get_origin(spec.hint) is Literal:
        return str(get_args(spec.hint)[0])
    return str(default).lower() if isinstance(default, bool) else str(default)


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.split("; ", 1)[1] if isinstance(exc, ConfigurationError) and "; " in text else text


def _variable(source: Source | None, default: str) -> str:
    if source is None:
        return default
    if source.kind == "file":
        return source.name
    return source.name or default


def _assemble(cls: type, prefix: tuple[str, ...], typed: dict[str, Any]) -> Any:
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        meta = f.metadata.get("squall", Meta())
        if meta.internal:
            continue
        hint, path = hints[f.name], (*prefix, f.name)
        if isinstance(hint, type) and is_dataclass(hint):
            if hint is ActionLimitRange:
                default = getattr(cls(), f.name)
                values[f.name] = _assemble_range(default, ".".join(path), typed)
            else:
                values[f.name] = _assemble(hint, path, typed)
        elif ".".join(path) in typed:
            values[f.name] = typed[".".join(path)]
    return cls(**values)


def _assemble_range(default: ActionLimitRange, key: str, typed: dict[str, Any]) -> ActionLimitRange:
    chosen = {name: typed[f"{key}.{name}"] for name in ("minimum", "default", "maximum")
              if f"{key}.{name}" in typed}  # fmt: skip
    return replace(default, **chosen)


def store_settings(env: Mapping[str, str]) -> StoreSettings:
    """The store settings `env` gives, validated with everything else (the older entry point)."""
    return load_settings(env).stores


# OpenWhisk's names for the Elasticsearch activation store: the helm chart's environment form
# and the dotted keys of its application.conf; together they make one store URL.
_COUCHDB_FIX = (
    "CouchDB is not supported as Squall's activation store; set SQUALL_ACTIVATION_STORE="
    "postgresql://user:password@host:5432/squall, or elasticsearch+http://host:9200 "
    "(activationStoreBackend=ElasticSearch with CONFIG_whisk_activationStore_elasticsearch_hosts)"
)


def _activation_store_from_openwhisk(
    layers: Layers, typed: dict[str, Any], sources: dict[str, Source]
) -> None:
    if "stores.activation_store" in typed:
        return  # a Squall URL wins over OpenWhisk's keys
    try:
        found = _openwhisk_activation_store(layers.names)
    except ConfigurationError as exc:
        layers.problems.append(Problem("stores.activation_store", DEFAULT, str(exc)))
        return
    if found is not None:
        url, (name, source) = found
        typed["stores.activation_store"] = url
        sources["stores.activation_store"] = Source(source.kind, name)


def _first(
    names: Mapping[str, tuple[str, Source]], keys: tuple[str, ...]
) -> tuple[str, str, Source] | None:
    for key in keys:
        if (found := names.get(normalize(key))) is not None:
            value, source = found
            return _display(source), value, source
    return None


def _display(source: Source) -> str:
    return source.name.rpartition(": ")[2] if source.kind == "file" else source.name


def _openwhisk_activation_store(
    names: Mapping[str, tuple[str, Source]],
) -> tuple[str, tuple[str, Source]] | None:
    """A store URL from OpenWhisk's keys and the key to name in messages; None if unset."""
    backend = _first(names, _OW_BACKEND)
    provider = _first(names, _OW_PROVIDER)
    es = {key: found for key, keys in _OW_ES_KEYS.items() if (found := _first(names, keys))}
    for chosen in (backend, provider):
        if chosen and ("couch" in chosen[1].lower() or "artifact" in chosen[1].lower()):
            raise ConfigurationError(f"{chosen[0]}={chosen[1]}: {_COUCHDB_FIX}")
    if backend and backend[1].lower() != "elasticsearch":
        raise ConfigurationError(
            f"{backend[0]}={backend[1]!r} is not a known activation store backend; use "
            "ElasticSearch, or set SQUALL_ACTIVATION_STORE to a URL"
        )
    if not (backend or provider or es):
        return None
    if "hosts" not in es:
        named = (backend or provider or ("the Elasticsearch keys",))[0]
        raise ConfigurationError(
            f"{named} selects Elasticsearch but no hosts are set; set "
            "CONFIG_whisk_activationStore_elasticsearch_hosts=host:9200 (or "
            "SQUALL_ACTIVATION_STORE=elasticsearch+http://host:9200)"
        )
    url = _elasticsearch_url({k: v for k, (_, v, _) in es.items()})
    return url, (es["hosts"][0], es["hosts"][2])


def _elasticsearch_url(values: dict[str, str]) -> str:
    protocol = values.get("protocol", "http").lower()
    userinfo = ""
    if values.get("username"):
        userinfo = quote(values["username"], safe="")
        if values.get("password"):
            userinfo += ":" + quote(values["password"], safe="")
        userinfo += "@"
    hosts = ",".join(h.strip() for h in values["hosts"].split(",") if h.strip())
    pattern = values.get("index_pattern")
    query = urlencode({"index_pattern": pattern}) if pattern else ""
    return f"elasticsearch+{protocol}://{userinfo}{hosts}" + (f"?{query}" if query else "")


# -- JAAS --------------------------------------------------------------------------------------

_JAAS = re.compile(r"^\s*(?P<module>[\w.$]+)\s+(?P<flag>required|requisite|sufficient|optional)"
                   r"(?P<options>.*?);?\s*$", re.DOTALL)  # fmt: skip
_JAAS_OPTION = re.compile(r"""(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+?))(?=\s|;|$)""")
_JAAS_MODULES = {
    "PlainLoginModule": ("PLAIN",),
    "ScramLoginModule": ("SCRAM-SHA-256", "SCRAM-SHA-512"),
}


@dataclass(frozen=True, slots=True)
class Jaas:
    """A parsed JAAS line: its login module and options (username and password among them)."""

    module: str
    options: dict[str, str]

    @property
    def mechanisms(self) -> tuple[str, ...]:
        return _JAAS_MODULES.get(self.module.rpartition(".")[2], ())


def parse_jaas(line: str) -> Jaas:
    """`org.apache.kafka.common.security.plain.PlainLoginModule required username="u"
    password="p";` -> Jaas. ValueError (never quoting the line: it holds a password)."""
    match = _JAAS.match(line)
    if match is None:
        raise ValueError("is not a JAAS line (<LoginModule> required username=\"...\" "
                         "password=\"...\";)")  # fmt: skip
    options = {
        name: bytes(dq, "utf-8").decode("unicode_escape") if dq else (sq or bare or "")
        for name, dq, sq, bare in _JAAS_OPTION.findall(match.group("options"))
    }
    jaas = Jaas(match.group("module"), options)
    if not jaas.mechanisms:
        raise ValueError(f"uses the login module {jaas.module}, which Squall cannot use; use "
                         "PlainLoginModule or ScramLoginModule")  # fmt: skip
    return jaas


def _credentials_from_jaas(
    layers: Layers, typed: dict[str, Any], sources: dict[str, Source]
) -> None:
    line = typed.get("kafka.sasl_jaas_config")
    if not line:
        return
    source = sources["kafka.sasl_jaas_config"]
    try:
        jaas = parse_jaas(line)
    except ValueError as exc:
        layers.problems.append(Problem("kafka.sasl_jaas_config", source, str(exc)))
        return
    derived = Source("derived", f"from {source}")
    for option, key in (("username", "kafka.sasl_username"), ("password", "kafka.sasl_password")):
        if option in jaas.options and key not in typed:
            typed[key], sources[key] = jaas.options[option], derived
    if "kafka.sasl_mechanism" not in typed and len(jaas.mechanisms) == 1:
        typed["kafka.sasl_mechanism"] = jaas.mechanisms[0]
        sources["kafka.sasl_mechanism"] = derived
    mechanism = typed.get("kafka.sasl_mechanism")
    if mechanism and mechanism not in jaas.mechanisms:
        layers.problems.append(Problem(
            "kafka.sasl_jaas_config", source,
            f"its {jaas.module.rpartition('.')[2]} does not match the SASL mechanism {mechanism}",
            "use PlainLoginModule for PLAIN and ScramLoginModule for SCRAM-SHA-256/512",
        ))  # fmt: skip


# -- validation --------------------------------------------------------------------------------


def validate(settings: Settings, found: list[Problem] | None = None) -> None:
    """Raise one InvalidConfiguration listing every problem (those found while reading too)."""
    problems = list(found or [])
    for check in (_check_basics, _check_limits, _check_stores, _check_kafka, _check_etcd):
        problems.extend(check(settings))
    if problems:
        raise InvalidConfiguration(problems)


def _problem(settings: Settings, key: str, message: str, fix: str = "") -> Problem:
    return Problem(key, settings.source(key), message, fix)


def _check_basics(s: Settings) -> Iterator[Problem]:
    if not s.host.strip():
        yield _problem(s, "host", "the listen address is empty",
                       "set SQUALL_HOST or --host (e.g. 127.0.0.1)")  # fmt: skip
    if not 0 < s.port < 65536:
        yield _problem(s, "port", f"port {s.port} is out of range", "use 1-65535")
    if s.guest_auth is not None and not _valid_auth(s.guest_auth):
        yield _problem(s, "guest_auth", "SQUALL_GUEST_AUTH must be 'uuid:key'",
                       "a uuid, a colon, then letters and digits")  # fmt: skip


def _check_limits(s: Settings) -> Iterator[Problem]:
    for spec in specs().values():
        if spec.path[0] != "limits":
            continue
        value = _value_at(s, spec.path)
        if isinstance(value, int) and value < 0:
            yield _problem(s, spec.key, f"{value} must not be negative")
    if s.invoker.prewarm_count is not None and s.invoker.prewarm_count < 0:
        yield _problem(s, "invoker.prewarm_count", "SQUALL_PREWARM_COUNT must be 0 or more")
    if s.stores.buffer_max < 1_000:
        yield _problem(s, "stores.buffer_max", "SQUALL_ACTIVATION_BUFFER_MAX must be at least 1000")
    if s.scheduler.alarm_fires_in_flight < 1:
        yield _problem(s, "scheduler.alarm_fires_in_flight",
                       "SQUALL_SCHEDULER_ALARM_FIRES_IN_FLIGHT must be at least 1",
                       "set it to 1 or more (default 256)")  # fmt: skip


def _value_at(settings: Settings, path: tuple[str, ...]) -> Any:
    value: Any = settings
    for name in path:
        value = getattr(value, name)
    return value


def _check_stores(s: Settings) -> Iterator[Problem]:
    for key, seam in (("stores.entity_store", "entity_store_url"),
                      ("stores.activation_store", "activation_store_url")):  # fmt: skip
        try:
            getattr(s, seam)  # parsing is the check
        except ConfigurationError as exc:
            yield _problem(s, key, str(exc))


_SASL = ("SASL_PLAINTEXT", "SASL_SSL")
_TLS = ("SSL", "SASL_SSL")
_SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"


def _check_kafka(s: Settings) -> Iterator[Problem]:
    k = s.kafka
    if s.bus == "kafka" and not k.bootstrap:
        yield _problem(
            s,
            "bus",
            "the Kafka bus needs brokers, and none are set",
            "set SQUALL_KAFKA_BOOTSTRAP=host:9092[,host2:9092] (or KAFKA_HOSTS)",
        )
    for key, value in (("kafka.partitions", k.partitions),
                       ("kafka.replication_factor", k.replication_factor),
                       ("kafka.fetch_wait_ms", k.fetch_wait_ms)):  # fmt: skip
        if value < 1:
            yield _problem(s, key, f"{key}={value} must be at least 1", "set it to 1 or more")
    yield from _check_kafka_sasl(s)
    yield from _check_kafka_tls(s)


def _check_kafka_sasl(s: Settings) -> Iterator[Problem]:
    k = s.kafka
    sasl = k.security_protocol in _SASL
    if k.sasl_mechanism and not sasl:
        yield _problem(
            s,
            "kafka.sasl_mechanism",
            f"a SASL mechanism is set but the security protocol is {k.security_protocol}",
            "set SQUALL_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)",
        )
    if sasl and not k.sasl_mechanism:
        yield _problem(
            s,
            "kafka.security_protocol",
            f"{k.security_protocol} needs a SASL mechanism",
            "set SQUALL_KAFKA_SASL_MECHANISM to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        )
    if (sasl or k.sasl_mechanism) and not (k.sasl_username and k.sasl_password):
        missing = " and ".join(
            name for name, value in (("SQUALL_KAFKA_SASL_USERNAME", k.sasl_username),
                                     ("SQUALL_KAFKA_SASL_PASSWORD", k.sasl_password))
            if not value
        )  # fmt: skip
        key = "kafka.sasl_mechanism" if k.sasl_mechanism else "kafka.security_protocol"
        verb = "are" if " and " in missing else "is"
        what = k.sasl_mechanism or k.security_protocol
        yield _problem(
            s,
            key,
            f"{what} needs SASL credentials, and {missing} {verb} not set",
            f"set {missing} (or the _FILE variants pointing at a mounted Secret), or "
            "SQUALL_KAFKA_SASL_JAAS_CONFIG to a JAAS line with username and password",
        )
    if (k.sasl_username or k.sasl_password) and not sasl:
        key = "kafka.sasl_username" if k.sasl_username else "kafka.sasl_password"
        yield _problem(
            s,
            key,
            f"SASL credentials are set but the security protocol is "
            f"{k.security_protocol}, which sends none",
            "set SQUALL_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)",
        )


def _check_kafka_tls(s: Settings) -> Iterator[Problem]:
    k = s.kafka
    tls = k.security_protocol in _TLS
    if tls and k.ssl_verify and k.ssl_ca_file is None:
        yield _problem(s, "kafka.ssl_ca_file",
                       f"{k.security_protocol} verifies the broker's certificate but no CA is set",
                       "set SQUALL_KAFKA_SSL_CA_FILE to the broker's CA (PEM); for a certificate "
                       f"from a public CA use {_SYSTEM_CA}")  # fmt: skip
    files = {"kafka.ssl_ca_file": k.ssl_ca_file, "kafka.ssl_cert_file": k.ssl_cert_file,
             "kafka.ssl_key_file": k.ssl_key_file}  # fmt: skip
    for key, path in files.items():
        if path is not None and not tls:
            yield _problem(
                s,
                key,
                f"a TLS file is set but the security protocol is "
                f"{k.security_protocol}, which does not use TLS",
                "set SQUALL_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, or unset it",
            )
        elif path is not None and not _readable(path):
            yield _problem(
                s,
                key,
                f"{path} is not a readable file",
                "mount the certificate there (a Kubernetes Secret volume) or fix the path",
            )
    if (k.ssl_cert_file is None) != (k.ssl_key_file is None):
        yield _problem(
            s,
            "kafka.ssl_cert_file" if k.ssl_cert_file else "kafka.ssl_key_file",
            "a client certificate needs its key and the other way round",
            "set both SQUALL_KAFKA_SSL_CERT_FILE and SQUALL_KAFKA_SSL_KEY_FILE",
        )


def _check_etcd(s: Settings) -> Iterator[Problem]:
    e = s.etcd
    if s.coordination == "etcd" and not e.endpoints:
        yield _problem(s, "coordination", "etcd coordination needs endpoints, and none are set",
                       "set SQUALL_ETCD_ENDPOINTS=host:2379[,host2:2379]")  # fmt: skip
    for endpoint in e.endpoints:
        if not re.match(r"^(https?://)?[^/\s:]+(:\d+)?/?$", endpoint):
            yield _problem(s, "etcd.endpoints", f"{redact(endpoint)!r} is not host:port",
                           "write host:2379 or http(s)://host:2379")  # fmt: skip
    if bool(e.username) != bool(e.password):
        yield _problem(s, "etcd.username" if e.username else "etcd.password",
                       "etcd authentication needs both a user and a password",
                       "set both SQUALL_ETCD_USERNAME and SQUALL_ETCD_PASSWORD")  # fmt: skip
    for key, path in (("etcd.ca_file", e.ca_file), ("etcd.cert_file", e.cert_file),
                      ("etcd.key_file", e.key_file)):  # fmt: skip
        if path is not None and not _readable(path):
            yield _problem(s, key, f"{path} is not a readable file",
                           "mount the certificate there or fix the path")  # fmt: skip
    if e.lease_ttl_s < 1:
        yield _problem(s, "etcd.lease_ttl_s", f"{e.lease_ttl_s:g} s is below etcd's minimum",
                       "use 1 s or more (default 3 s)")  # fmt: skip


def _readable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.R_OK)


def _valid_auth(auth: str) -> bool:
    uuid, sep, key = auth.partition(":")
    return (
        bool(sep)
        and len(uuid) >= 1
        and key.isalnum()
        and all(c.isalnum() or c == "-" for c in uuid)
    )


# -- showing -----------------------------------------------------------------------------------


def effective(settings: Settings) -> list[dict[str, Any]]:
    """Every setting's value (secrets and URL passwords masked), source and variable."""
    rows = []
    for spec in specs().values():
        value = _value_at(settings, spec.path)
        rows.append({
            "key": spec.key,
            "value": _shown(spec, value),
            "source": str(settings.source(spec.key)),
            "env": spec.env,
        })  # fmt: skip
    return rows


def _shown(spec: Spec, value: Any) -> Any:
    if value is None:
        return None
    if spec.secret:
        return "***"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [redact(str(v)) for v in value]
    if isinstance(value, str) and "://" in value:
        return redact(value)
    return value
