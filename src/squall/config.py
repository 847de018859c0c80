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

from squall.errors import ConfigurationError


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


@dataclass(slots=True, frozen=True)
class InvokerSettings:
    """Container pool knobs (OpenWhisk's `whisk.container-pool.*`, `container-proxy.*`)."""

    user_memory_mb: int = 4096
    prewarm_count: int = 2
    idle_container_s: float = 600.0


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

    @property
    def database_path(self) -> Path:
        """The embedded SQLite file."""
        return self.data_dir / "squall.db"

    def with_overrides(self, **values: Any) -> Settings:
        """A copy with top-level values replaced (None means keep), e.g. from CLI flags."""
        kept = {k: v for k, v in values.items() if v is not None}
        return replace(self, **kept)


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
    settings = Settings(**top, limits=SystemLimits(**limits), invoker=InvokerSettings(**invoker))
    validate(settings)
    return settings


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
    if settings.invoker.prewarm_count < 0:
        problems.append("SQUALL_PREWARM_COUNT must be 0 or more")
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
