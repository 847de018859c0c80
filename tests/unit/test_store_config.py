"""Choosing stores by URL: validation, OpenWhisk's aliases, redaction, retention settings."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from squall.config import load_settings, parse_duration
from squall.errors import ConfigurationError
from squall.stores import select
from squall.stores.elasticsearch import ElasticsearchActivationStore
from squall.stores.options import parse_elasticsearch_url as parse_url
from squall.stores.options import parse_postgres_url
from squall.stores.postgres import PostgresActivationStore, PostgresEntityStore
from squall.stores.sqlite import SqliteActivationStore, SqliteEntityStore


def test_default_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings({"SQUALL_DATA_DIR": str(tmp_path)})
    entity = select.entity_store(settings.entity_store_url, settings.data_dir)
    activation = select.activation_store(settings.activation_store_url, settings.data_dir)
    assert isinstance(entity, SqliteEntityStore) and entity.path == tmp_path / "squall.db"
    assert isinstance(activation, SqliteActivationStore) and activation.path == entity.path


@pytest.mark.parametrize(
    ("url", "entity_type", "activation_type"),
    [
        ("sqlite:///srv/squall/data.db", SqliteEntityStore, SqliteActivationStore),
        ("postgresql://u:p@db:5432/squall", PostgresEntityStore, PostgresActivationStore),
        ("postgres://u@db/squall?sslmode=require", PostgresEntityStore, PostgresActivationStore),
    ],
)
def test_urls_choose_backends(url: str, entity_type: type, activation_type: type) -> None:
    settings = load_settings({"SQUALL_ENTITY_STORE": url, "SQUALL_ACTIVATION_STORE": url})
    assert isinstance(select.entity_store(settings.entity_store_url, Path("/x")), entity_type)
    activation = select.activation_store(settings.activation_store_url, Path("/x"))
    assert isinstance(activation, activation_type)


@pytest.mark.parametrize(
    "url",
    ["elasticsearch+http://es:9200", "elasticsearch+https://u:p@es:9200",
     "opensearch+https://os:9200?index_pattern=whisk-%25s"],
)  # fmt: skip
def test_elasticsearch_urls_choose_the_activation_adapter(url: str) -> None:
    settings = load_settings({"SQUALL_ACTIVATION_STORE": url})
    store = select.activation_store(settings.activation_store_url, Path("/x"))
    assert isinstance(store, ElasticsearchActivationStore)


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"SQUALL_ENTITY_STORE": "mysql://u:pw@h/db"},
         ["SQUALL_ENTITY_STORE", "unknown store scheme 'mysql'", "postgresql://"]),
        ({"SQUALL_ACTIVATION_STORE": "couchdb://u:pw@h:5984"},
         ["SQUALL_ACTIVATION_STORE", "CouchDB is not supported", "elasticsearch+http://"]),
        ({"SQUALL_ENTITY_STORE": "elasticsearch+http://es:9200"},
         ["SQUALL_ENTITY_STORE", "activation records only"]),
        ({"SQUALL_ENTITY_STORE": "sqlite://relative/path.db"},
         ["three slashes"]),
        ({"SQUALL_ENTITY_STORE": "postgresql:///squall"}, ["names no host"]),
        ({"activationStoreBackend": "CouchDB"},
         ["activationStoreBackend=CouchDB", "CouchDB is not supported", "SQUALL_ACTIVATION_STORE"]),
        ({"CONFIG_whisk_spi_ActivationStoreProvider":
          "org.apache.openwhisk.core.database.ArtifactActivationStoreProvider"},
         ["CouchDB is not supported"]),
        ({"activationStoreBackend": "ElasticSearch"},
         ["CONFIG_whisk_activationStore_elasticsearch_hosts"]),
        ({"activationStoreBackend": "Redis"}, ["not a known activation store backend"]),
        ({"SQUALL_ACTIVATION_RETENTION": "soon"}, ["SQUALL_ACTIVATION_RETENTION", "30d"]),
        ({"SQUALL_ENTITY_STORE": "postgresql://u:pw@db/squall?pool_max=many"},
         ["SQUALL_ENTITY_STORE", "pool_max", "must be numbers"]),
        ({"SQUALL_ACTIVATION_STORE": "elasticsearch+http://es:9200?index=x"},
         ["SQUALL_ACTIVATION_STORE", "unknown option(s) index", "index_pattern"]),
    ],
)  # fmt: skip
def test_bad_store_settings_name_the_variable_and_the_fix(
    env: dict[str, str], fragments: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(env)
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message
    assert "pw@" not in message  # passwords are masked


def test_openwhisk_elasticsearch_keys_become_a_url() -> None:
    settings = load_settings({
        "activationStoreBackend": "ElasticSearch",
        "CONFIG_whisk_activationStore_elasticsearch_protocol": "https",
        "CONFIG_whisk_activationStore_elasticsearch_hosts": "es1:9200, es2:9200",
        "CONFIG_whisk_activationStore_elasticsearch_indexPattern": "whisk-%s",
        "CONFIG_whisk_activationStore_elasticsearch_username": "admin",
        "CONFIG_whisk_activationStore_elasticsearch_password": "p@ss:word",
    })  # fmt: skip
    store = settings.activation_store_url
    assert store.kind == "elasticsearch"
    assert store.variable == "CONFIG_whisk_activationStore_elasticsearch_hosts"
    options = parse_url(store.url, store.variable)
    assert options.hosts == ("https://es1:9200", "https://es2:9200")
    assert options.auth == ("admin", "p@ss:word")
    assert options.index_pattern == "whisk-%s"
    assert "p%40ss" not in store.redacted and "***" in store.redacted


def test_dotted_openwhisk_keys_are_accepted_too() -> None:
    settings = load_settings({"whisk.activation-store.elasticsearch.hosts": "es:9200"})
    assert settings.activation_store_url.url == "elasticsearch+http://es:9200"


def test_squall_url_wins_over_openwhisk_keys() -> None:
    env = {"SQUALL_ACTIVATION_STORE": "postgresql://db/squall", "activationStoreBackend": "CouchDB"}
    assert load_settings(env).activation_store_url.kind == "postgresql"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://squall:hunter2@db:5432/squall", "postgresql://squall:***@db:5432/squall"),
        ("elasticsearch+https://u:p%40x@es:9200?a=b", "elasticsearch+https://u:***@es:9200?a=b"),
        ("postgresql://squall@db/squall", "postgresql://squall@db/squall"),
        ("sqlite:///a/b.db", "sqlite:///a/b.db"),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert select.redact(url) == shown


def test_postgres_url_options_are_split_from_libpq_ones() -> None:
    options = parse_postgres_url(
        "postgresql://u:p@db:5433/squall?schema=tenant1&pool_max=4&sslmode=require", "X"
    )
    assert (options.schema, options.pool_min, options.pool_max) == ("tenant1", 1, 4)
    parts = urlsplit(options.conninfo)
    assert parse_qs(parts.query) == {"sslmode": ["require"]}
    assert parts.netloc == "u:p@db:5433"


def test_elasticsearch_unknown_option_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option.*indexpattern"):
        parse_url("elasticsearch+http://es:9200?indexpattern=x-%s", "SQUALL_ACTIVATION_STORE")
    with pytest.raises(ConfigurationError, match="must contain %s"):
        parse_url("elasticsearch+http://es:9200?index_pattern=static", "SQUALL_ACTIVATION_STORE")


@pytest.mark.parametrize(
    ("raw", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43_200), ("30d", 2_592_000)]
)
def test_retention_durations(raw: str, seconds: float) -> None:
    assert parse_duration("X", raw) == seconds
    assert load_settings({"SQUALL_ACTIVATION_RETENTION": raw}).stores.retention_s == seconds


def test_retention_is_off_by_default() -> None:
    assert load_settings({}).stores.retention_s is None


def test_missing_driver_is_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real = select.importlib.util.find_spec

    def find_spec(name: str) -> object:
        return None if name == "psycopg_pool" else real(name)

    monkeypatch.setattr(select.importlib.util, "find_spec", find_spec)
    store = select.parse_store_url("postgresql://db/squall", "SQUALL_ENTITY_STORE", "entity")
    with pytest.raises(ConfigurationError, match=r"pip install 'squall\[postgres\]'"):
        select.entity_store(store, Path("/x"))
