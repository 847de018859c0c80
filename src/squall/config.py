"""Squall's settings: one typed tree with OpenWhisk's defaults.

Values come from defaults, then `SQUALL_*` environment variables, then command-line flags.
Everything is validated before any component starts; a bad value is a ConfigurationError that
names the variable and says how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from squall.errors import ConfigurationError
from squall.stores.select import StoreURL, parse_store_url


@dataclass(slots=True, frozen=True)
class ActionLimitRange:
    """System range and default of one per-action limit (OpenWhisk's min/std/max)."""

    minimum: int
    default: int
    maximum: int


@dataclass(slots=True, frozen=True)
class SystemLimits:
    """OpenWhisk's system limits, as the helm chart and standalone set them."""

    invocations_per_minute: int = 60
    concurrent_invocations: int = 30
    fires_per_minute: int = 60
    sequence_max_length: int = 50
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


@dataclass(slots=True, frozen=True)
class SchedulerSettings:
    """The scheduling decision maker's knobs (OpenWhisk's `whisk.scheduler.*`)."""

    check_interval_s: float = 0.1
    stale_threshold_ms: int = 100
    max_retention_size: int = 10_000
    max_retention_ms: int = 60_000
    throttling_fraction: float = 0.9
    duration_buffer_size: int = 10
    idle_grace_s: float = 20.0
    # How far back the activation store's duration statistics look when a queue is created
    # (OpenWhisk's `whisk.duration-checker.time-window`, 1 day in its charts).
    duration_window_s: float = 86_400.0


@dataclass(slots=True, frozen=True)
class InvokerSettings:
    """Container pool knobs (OpenWhisk's `whisk.container-pool.*`, `container-proxy.*`)."""

    user_memory_mb: int = 4096
    # None: each runtime's stem-cell count from the runtimes manifest; a number overrides them all.
    prewarm_count: int | None = None
    idle_container_s: float = 600.0


@dataclass(slots=True, frozen=True)
class StoreSettings:
    """Where entities and activations live, and how long activations are kept."""

    entity_store: str | None = None  # a URL; None is SQLite in the data dir
    activation_store: str | None = None
    # The settings the URLs came from, named in every error about them.
    entity_variable: str = "SQUALL_ENTITY_STORE"
    activation_variable: str = "SQUALL_ACTIVATION_STORE"
    retention_s: float | None = None  # None keeps activations forever, as OpenWhisk does
    buffer_max: int = 100_000  # activation records held while a store is unreachable


@dataclass(slots=True, frozen=True)
class Settings:
    """The whole configuration of one Squall process."""

    host: str = "127.0.0.1"
    port: int = 3233
    data_dir: Path = field(default_factory=lambda: Path.home() / ".squall")
    guest_auth: str | None = None
    api_host: str | None = None  # what actions see as __OW_API_HOST; default http://host:port
    limits: SystemLimits = field(default_factory=SystemLimits)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    invoker: InvokerSettings = field(default_factory=InvokerSettings)
    stores: StoreSettings = field(default_factory=lambda: StoreSettings())
    runtimes: RuntimeSettings = field(default_factory=lambda: RuntimeSettings())
    access: AccessSettings = field(default_factory=lambda: AccessSettings())

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


# ---------------------------------------------------------------------------------------------
# Runtimes and namespaces (issue 4): the runtimes manifest, and how fresh the controller's view
# of a namespace's key and limits is (`squall admin` writes them to the entity store).
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class RuntimeSettings:
    """Which action kinds exist: OpenWhisk's RUNTIMES_MANIFEST."""

    # JSON text or a path to a JSON file; None is the manifest shipped in squall/runtimes.json.
    manifest: str | None = None
    manifest_variable: str = "SQUALL_RUNTIMES_MANIFEST"


@dataclass(slots=True, frozen=True)
class AccessSettings:
    """How long a verified key, and the namespace limits read with it, are trusted before the
    entity store is read again: `squall admin` changes reach a running server within this."""

    identity_ttl_s: float = 2.0


def runtime_settings(env: Mapping[str, str]) -> RuntimeSettings:
    """SQUALL_RUNTIMES_MANIFEST, else OpenWhisk's RUNTIMES_MANIFEST."""
    found = _first(env, ("SQUALL_RUNTIMES_MANIFEST", "RUNTIMES_MANIFEST"))
    return RuntimeSettings(
        manifest=found[1] if found else None,
        manifest_variable=found[0] if found else "SQUALL_RUNTIMES_MANIFEST",
    )


def access_settings(env: Mapping[str, str]) -> AccessSettings:
    ttl = env.get("SQUALL_IDENTITY_TTL")
    return AccessSettings(parse_duration("SQUALL_IDENTITY_TTL", ttl) if ttl else 2.0)


_ENV_TOP_LEVEL = {
    "SQUALL_HOST": ("host", str),
    "SQUALL_PORT": ("port", int),
    "SQUALL_DATA_DIR": ("data_dir", Path),
    "SQUALL_GUEST_AUTH": ("guest_auth", str),
    "SQUALL_API_HOST": ("api_host", str),
}
_ENV_LIMITS = {
    "SQUALL_LIMITS_INVOCATIONS_PER_MINUTE": "invocations_per_minute",
    "LIMITS_ACTIONS_INVOKES_PERMINUTE": "invocations_per_minute",
    "SQUALL_LIMITS_CONCURRENT_INVOCATIONS": "concurrent_invocations",
    "LIMITS_ACTIONS_INVOKES_CONCURRENT": "concurrent_invocations",
    "SQUALL_LIMITS_FIRES_PER_MINUTE": "fires_per_minute",
    "LIMITS_TRIGGERS_FIRES_PERMINUTE": "fires_per_minute",
    "SQUALL_LIMITS_SEQUENCE_MAX_LENGTH": "sequence_max_length",
    "LIMITS_ACTIONS_SEQUENCE_MAXLENGTH": "sequence_max_length",
}
_ENV_INVOKER = {
    "SQUALL_PREWARM_COUNT": "prewarm_count",
    "SQUALL_USER_MEMORY_MB": "user_memory_mb",
}


def _convert(name: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw)
    except ValueError as exc:
        raise ConfigurationError(
            f"{name}={raw!r} is not a valid {kind.__name__}; set it to a {kind.__name__} value"
        ) from exc


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from defaults and the environment, validated."""
    env = os.environ if environ is None else environ
    top: dict[str, Any] = {}
    for var, (attr, kind) in _ENV_TOP_LEVEL.items():
        if env.get(var):
            top[attr] = _convert(var, env[var], kind)
    limits = {a: _convert(v, env[v], int) for v, a in _ENV_LIMITS.items() if env.get(v)}
    invoker = {a: _convert(v, env[v], int) for v, a in _ENV_INVOKER.items() if env.get(v)}
    settings = Settings(**top, limits=SystemLimits(**limits), invoker=InvokerSettings(**invoker),
                        stores=store_settings(env), runtimes=runtime_settings(env),
                        access=access_settings(env))  # fmt: skip
    validate(settings)
    return settings


# OpenWhisk's names for the Elasticsearch activation store: the helm chart's environment form
# and the dotted keys of its application.conf.
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
_COUCHDB_FIX = (
    "CouchDB is not supported as Squall's activation store; set SQUALL_ACTIVATION_STORE="
    "postgresql://user:password@host:5432/squall, or elasticsearch+http://host:9200 "
    "(activationStoreBackend=ElasticSearch with CONFIG_whisk_activationStore_elasticsearch_hosts)"
)


def store_settings(env: Mapping[str, str]) -> StoreSettings:
    """SQUALL_*_STORE URLs, else OpenWhisk's activation-store keys, plus retention."""
    activation, variable = env.get("SQUALL_ACTIVATION_STORE"), "SQUALL_ACTIVATION_STORE"
    if not activation:
        activation, variable = _openwhisk_activation_store(env) or (None, variable)
    retention = env.get("SQUALL_ACTIVATION_RETENTION")
    buffer_max = env.get("SQUALL_ACTIVATION_BUFFER_MAX")
    return StoreSettings(
        entity_store=env.get("SQUALL_ENTITY_STORE") or None,
        activation_store=activation,
        activation_variable=variable,
        retention_s=parse_duration("SQUALL_ACTIVATION_RETENTION", retention) if retention else None,
        buffer_max=(
            _convert("SQUALL_ACTIVATION_BUFFER_MAX", buffer_max, int) if buffer_max else 100_000
        ),
    )


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        if env.get(name):
            return name, env[name]
    return None


def _openwhisk_activation_store(env: Mapping[str, str]) -> tuple[str, str] | None:
    """A store URL from OpenWhisk's keys, and the key to name in messages; None if unset."""
    backend = _first(env, _OW_BACKEND)
    provider = _first(env, _OW_PROVIDER)
    es = {key: found for key, names in _OW_ES_KEYS.items() if (found := _first(env, names))}
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
        raise ConfigurationError(
            f"{(backend or provider or ('', ''))[0] or 'the Elasticsearch keys'} select "
            "Elasticsearch but no hosts are set; set "
            "CONFIG_whisk_activationStore_elasticsearch_hosts=host:9200 (or "
            "SQUALL_ACTIVATION_STORE=elasticsearch+http://host:9200)"
        )
    return _elasticsearch_url({k: v for k, (_, v) in es.items()}), es["hosts"][0]


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


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(name: str, raw: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `12h` or `30d`."""
    text = raw.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:])
    number = text[:-1] if unit is not None else text
    try:
        seconds = float(number) * (unit or 1)
    except ValueError as exc:
        raise ConfigurationError(
            f"{name}={raw!r} is not a duration; write e.g. 30d, 12h, 15m or 3600 (seconds)"
        ) from exc
    if seconds <= 0:
        raise ConfigurationError(f"{name}={raw!r} must be positive (e.g. 30d)")
    return seconds


def validate(settings: Settings) -> None:
    """Raise one ConfigurationError listing every problem found."""
    problems: list[str] = []
    if not settings.host.strip():
        problems.append("the listen address is empty; set SQUALL_HOST or --host (e.g. 127.0.0.1)")
    if not 0 < settings.port < 65536:
        problems.append(
            f"port {settings.port} is out of range; use 1-65535 (SQUALL_PORT or --port)"
        )
    if settings.guest_auth is not None and not _valid_auth(settings.guest_auth):
        problems.append(
            "SQUALL_GUEST_AUTH must be 'uuid:key' (a uuid, a colon, then letters and digits)"
        )
    for f in fields(settings.limits):
        value = getattr(settings.limits, f.name)
        if isinstance(value, int) and value < 0:
            problems.append(f"limit {f.name}={value} must not be negative")
    if settings.invoker.prewarm_count is not None and settings.invoker.prewarm_count < 0:
        problems.append("SQUALL_PREWARM_COUNT must be 0 or more")
    if settings.stores.buffer_max < 1_000:
        problems.append("SQUALL_ACTIVATION_BUFFER_MAX must be at least 1000")
    for seam in ("entity_store_url", "activation_store_url"):
        try:
            getattr(settings, seam)  # parsing is the check
        except ConfigurationError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigurationError("invalid configuration:\n  - " + "\n  - ".join(problems))


def _valid_auth(auth: str) -> bool:
    uuid, sep, key = auth.partition(":")
    return (
        bool(sep)
        and len(uuid) >= 1
        and key.isalnum()
        and all(c.isalnum() or c == "-" for c in uuid)
    )
