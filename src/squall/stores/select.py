"""Choosing a store backend by URL, and printing URLs without their passwords.

| URL | backend | seams |
|---|---|---|
| `sqlite:///abs/path.db`, `sqlite://` (the data dir's file) | `stores.sqlite` | both |
| `postgresql://user:pass@host:5432/db?schema=s` (`postgres://` too) | `stores.postgres` | both |
| `elasticsearch+http://user:pass@host:9200?...` | `stores.elasticsearch` | activations |

`+https` and `opensearch+http(s)` are accepted too (one adapter serves both servers).

Drivers are imported only when their backend is chosen, so the embedded default needs nothing
beyond the base install, and a missing extra is an install hint rather than a traceback.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from squall.abc import ActivationStore, EntityStore
from squall.errors import ConfigurationError
from squall.stores.options import parse_elasticsearch_url, parse_postgres_url
from squall.stores.urls import redact as redact  # re-exported: select.redact

Role = Literal["entity", "activation"]
Kind = Literal["sqlite", "postgresql", "elasticsearch"]

_SCHEMES: dict[str, Kind] = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "elasticsearch+http": "elasticsearch",
    "elasticsearch+https": "elasticsearch",
    "opensearch+http": "elasticsearch",
    "opensearch+https": "elasticsearch",
}
_EXTRAS: dict[Kind, tuple[str, str]] = {  # backend -> (module it needs, extra that installs it)
    "postgresql": ("psycopg_pool", "postgres"),
    "elasticsearch": ("httpx", "elasticsearch"),
}
EXAMPLES = (
    "sqlite:///var/lib/squall/squall.db, postgresql://user:password@127.0.0.1:5432/squall or "
    "elasticsearch+http://127.0.0.1:9200 (activations only)"
)


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A validated store URL and the setting it came from (named in every message)."""

    kind: Kind
    url: str
    variable: str

    @property
    def redacted(self) -> str:
        return redact(self.url)


def parse_store_url(url: str, variable: str, role: Role) -> StoreURL:
    """Validate a store URL for a seam; ConfigurationError naming `variable` and the fix."""
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise ConfigurationError(
            f"{variable}={redact(url)!r} is not a URL ({exc}); use e.g. {EXAMPLES}"
        ) from exc
    kind = _SCHEMES.get(parts.scheme.lower())
    if kind is None:
        scheme = parts.scheme or "(none)"
        hint = _couchdb_hint(variable) if scheme.startswith("couchdb") else f"use e.g. {EXAMPLES}"
        raise ConfigurationError(
            f"{variable}={redact(url)!r}: unknown store scheme {scheme!r}; {hint}"
        )
    if kind == "elasticsearch" and role == "entity":
        raise ConfigurationError(
            f"{variable}={redact(url)!r}: Elasticsearch/OpenSearch holds activation records "
            "only; set the entity store to sqlite:///... or postgresql://..."
        )
    _check_shape(kind, parts, variable, url)
    if kind == "postgresql":
        parse_postgres_url(url.strip(), variable)
    elif kind == "elasticsearch":
        parse_elasticsearch_url(url.strip(), variable)
    return StoreURL(kind, url.strip(), variable)


def _couchdb_hint(variable: str) -> str:
    return (
        "CouchDB is not supported; use postgresql://... for entities and activations, or "
        f"elasticsearch+http://... for activations (in {variable})"
    )


def _check_shape(kind: Kind, parts: SplitResult, variable: str, url: str) -> None:
    if kind == "sqlite" and parts.netloc not in ("", "localhost"):
        raise ConfigurationError(
            f"{variable}={redact(url)!r}: a SQLite URL names a file, not a host; write "
            "sqlite:///absolute/path/squall.db (three slashes)"
        )
    if kind != "sqlite" and not parts.hostname:
        raise ConfigurationError(
            f"{variable}={redact(url)!r} names no host; e.g. {EXAMPLES}"
        )


def sqlite_path(store: StoreURL, data_dir: Path) -> Path:
    """The SQLite file a `sqlite:` URL names; `sqlite://` alone is the data dir's file."""
    path = urlsplit(store.url).path
    return Path(path) if path not in ("", "/") else data_dir / "squall.db"


def require_driver(store: StoreURL) -> None:
    """ConfigurationError with the install command when the backend's extra is missing."""
    needed = _EXTRAS.get(store.kind)
    if needed is None or importlib.util.find_spec(needed[0]) is not None:
        return
    module, extra = needed
    raise ConfigurationError(
        f"{store.variable}={store.redacted!r} needs the {extra!r} extra ({module} is not "
        f"installed); run: pip install 'squall[{extra}]'"
    )


def entity_store(store: StoreURL, data_dir: Path) -> EntityStore:
    """An entity store for the URL, not yet started."""
    require_driver(store)
    if store.kind == "postgresql":
        from squall.stores.postgres import PostgresEntityStore

        return PostgresEntityStore(store.url, variable=store.variable)
    from squall.stores.sqlite import SqliteEntityStore

    return SqliteEntityStore(sqlite_path(store, data_dir))


def activation_store(store: StoreURL, data_dir: Path, **options: Any) -> ActivationStore:
    """An activation store for the URL, not yet started; `options` are the batching knobs."""
    require_driver(store)
    if store.kind == "postgresql":
        from squall.stores.postgres import PostgresActivationStore

        return PostgresActivationStore(store.url, variable=store.variable, **options)
    if store.kind == "elasticsearch":
        from squall.stores.elasticsearch import ElasticsearchActivationStore

        return ElasticsearchActivationStore(store.url, variable=store.variable, **options)
    from squall.stores.sqlite import SqliteActivationStore

    return SqliteActivationStore(sqlite_path(store, data_dir), **options)
