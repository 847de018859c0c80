"""The options in store URLs, parsed without importing any driver.

`parse_store_url` (stores.select) runs these while the configuration is validated, so a bad
option stops the start with a ConfigurationError naming the variable, before anything connects.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from squall.errors import ConfigurationError
from squall.stores.urls import redact

DEFAULT_INDEX_PATTERN = "openwhisk-%s"
POSTGRES_OPTIONS = ("schema", "pool_min", "pool_max", "pool_timeout")  # Squall's, not libpq's


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    conninfo: str
    schema: str
    pool_min: int
    pool_max: int
    pool_timeout: float


def parse_postgres_url(url: str, variable: str) -> PostgresOptions:
    """Split Squall's options off a postgresql:// URL; the rest is libpq's."""
    parts = urlsplit(url)
    ours = dict.fromkeys(POSTGRES_OPTIONS, "")
    theirs = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ours:
            ours[key] = value
        else:
            theirs.append((key, value))
    conninfo = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(theirs)))
    try:
        return PostgresOptions(
            conninfo=conninfo,
            schema=ours["schema"] or "public",
            pool_min=int(ours["pool_min"] or 1),
            pool_max=int(ours["pool_max"] or 10),
            pool_timeout=float(ours["pool_timeout"] or 5.0),
        )
    except ValueError as exc:
        raise ConfigurationError(
            f"{variable}={redact(url)!r}: pool_min, pool_max and pool_timeout must be numbers"
        ) from exc


@dataclass(frozen=True, slots=True)
class ElasticsearchOptions:
    hosts: tuple[str, ...]  # base URLs, e.g. http://127.0.0.1:9200
    auth: tuple[str, str] | None
    index_pattern: str
    verify: ssl.SSLContext | bool
    refresh: str
    timeout_s: float


def parse_elasticsearch_url(url: str, variable: str) -> ElasticsearchOptions:
    parts = urlsplit(url)
    scheme = "https" if parts.scheme.endswith("https") else "http"
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    options = dict(parse_qsl(parts.query))
    unknown = set(options) - {"index_pattern", "ca_file", "verify", "refresh", "timeout"}
    if unknown:
        raise ConfigurationError(
            f"{variable}={redact(url)!r}: unknown option(s) {', '.join(sorted(unknown))}; "
            "known: index_pattern, ca_file, verify, refresh, timeout"
        )
    pattern = options.get("index_pattern", DEFAULT_INDEX_PATTERN)
    if pattern.count("%s") != 1:
        raise ConfigurationError(
            f"{variable}: index_pattern {pattern!r} must contain %s once (the namespace)"
        )
    return ElasticsearchOptions(
        hosts=tuple(f"{scheme}://{h}" for h in hostlist.split(",") if h),
        auth=_auth(userinfo),
        index_pattern=pattern,
        verify=_verify(options),
        refresh=options.get("refresh", "true"),
        timeout_s=float(options.get("timeout", "10")),
    )


def _auth(userinfo: str) -> tuple[str, str] | None:
    if not userinfo:
        return None
    user, _, password = userinfo.partition(":")
    return unquote(user), unquote(password)


def _verify(options: dict[str, str]) -> ssl.SSLContext | bool:
    if options.get("verify", "true").lower() in ("false", "0", "no"):
        return False
    ca_file = options.get("ca_file")
    return ssl.create_default_context(cafile=ca_file) if ca_file else True
