"""Elasticsearch/OpenSearch specifics beyond the contract suite, against osmem."""

from __future__ import annotations

import uuid

import httpx

from squall.abc import ActivationQuery
from squall.stores.elasticsearch import ElasticsearchActivationStore
from squall.testing import LocalOsmem, free_port
from tests.contract.test_activation_store import record


def url(server: LocalOsmem, hosts: str | None = None) -> tuple[str, str]:
    prefix = f"e{uuid.uuid4().hex[:10]}"
    host = hosts or server.url.removeprefix("http://")
    return f"elasticsearch+http://{host}?index_pattern={prefix}-%25s", prefix


async def test_openwhisk_index_layout(osmem_server_process: LocalOsmem) -> None:
    where, prefix = url(osmem_server_process)
    store = ElasticsearchActivationStore(where)
    await store.start()
    rec = record(namespace="Guest_Ns", name="act", path="Guest_Ns/pkg/act")
    store.store(rec)
    await store.close()

    index = f"{prefix}-guest_ns"  # the pattern with the namespace lowercased
    async with httpx.AsyncClient(base_url=osmem_server_process.url) as client:
        doc = (await client.get(f"/{index}/_doc/{rec['activationId']}")).json()
        mapping = (await client.get(f"/{index}/_mapping")).json()
    source = doc["_source"]
    assert source["path"] == "Guest_Ns/pkg/act" and source["entityPath"] == "pkg/act"
    assert source["@timestamp"] == rec["start"] and source["response"] == rec["response"]
    properties = mapping[index]["mappings"]["properties"]
    assert properties["path"]["fields"]["keyword"]["type"] == "keyword"  # `path.keyword`
    assert properties["response"]["properties"]["result"]["enabled"] is False


async def test_fails_over_to_the_next_host(osmem_server_process: LocalOsmem) -> None:
    live = osmem_server_process.url.removeprefix("http://")
    where, _ = url(osmem_server_process, hosts=f"127.0.0.1:{free_port()},{live}")
    store = ElasticsearchActivationStore(where)
    await store.start()
    try:
        rec = record()
        store.store(rec)
        await store.flush()
        assert await store.count(ActivationQuery("guest")) == 1
        assert store.unavailable_reason is None
    finally:
        await store.close()


async def test_one_actions_result_shape_cannot_break_anothers(
    osmem_server_process: LocalOsmem,
) -> None:
    where, _ = url(osmem_server_process)
    store = ElasticsearchActivationStore(where)
    await store.start()
    try:
        first = record(name="a")
        first["response"]["result"] = {"x": 1}
        second = record(name="b")
        second["response"]["result"] = {"x": "text", "nested": [1, {"y": None}]}
        store.store(first)
        await store.flush()
        store.store(second)
        await store.flush()
        assert await store.get("guest", second["activationId"]) == second
        assert await store.count(ActivationQuery("guest")) == 2
    finally:
        await store.close()
