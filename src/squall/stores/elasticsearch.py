"""Activation records in Elasticsearch or OpenSearch, over the REST API both servers share.

Plain `application/json` over httpx rather than a vendor client: elasticsearch-py sends a
compatibility media type OpenSearch answers with 406, and opensearch-py would tie us to the other
vendor. The calls used (index templates, `_bulk`, `_doc`, `_search`, `_count`,
`_delete_by_query`, `stats`/`histogram` aggregations) behave the same on Elasticsearch 7/8 and
OpenSearch 1-3.

Layout, as OpenWhisk's ElasticSearchActivationStore: one index per namespace named by the index
pattern (`openwhisk-%s`, the namespace lowercased), documents keyed by activation id holding the
record's own fields, plus `@timestamp` (the start), `path` (the action's path annotation, what
OpenWhisk's duration checker queries as `path.keyword`, mapped as text with that sub-field as
Elasticsearch's dynamic mapping would) and `entityPath` (what the listing's `name` filter
compares with). Other strings are keywords; `response.result`,
`annotations` and `logs` are kept but not indexed, so one action's result cannot clash with
another's mapping.

URL: `elasticsearch+http[s]://[user:password@]host:port[,host:port...]` with options
`index_pattern` (default `openwhisk-%s`), `ca_file` (PEM bundle for https), `verify=false`
(skip certificate checks: tests only), `refresh` (`true` default: each batch is searchable at
once; `false` for the highest write rates, searches then lag by the server's refresh interval)
and `timeout` (seconds per request, default 10).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from squall.abc import ActivationQuery, DurationStats, JSONDict, RecordPage
from squall.errors import DependencyUnavailable, StoreError
from squall.stores.base import BatchedActivationStore
from squall.stores.options import parse_elasticsearch_url
from squall.stores.rows import (
    annotation,
    dumps,
    entity_path,
    record_path,
    status_code,
    timings,
)
from squall.stores.urls import redact

__all__ = ["ElasticsearchActivationStore"]

log = logging.getLogger(__name__)

HELPER_FIELDS = ("@timestamp", "path", "entityPath")  # added to documents, removed on read
_KEYWORD_FIELDS = ("activationId", "namespace", "name", "subject", "version", "cause",
                   "entityPath")
_TEXT_KEYWORD = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
_MAPPINGS: JSONDict = {
    # Only the fields below are indexed; the rest of a record is kept in _source untouched.
    "dynamic": False,
    "properties": {
        **{f: {"type": "keyword"} for f in _KEYWORD_FIELDS},
        "path": _TEXT_KEYWORD,  # OpenWhisk's duration checker queries `path.keyword`
        "@timestamp": {"type": "date", "format": "epoch_millis"},
        "start": {"type": "long"},
        "end": {"type": "long"},
        "duration": {"type": "long"},
        "statusCode": {"type": "integer"},
        "publish": {"type": "boolean"},
        "response": {
            "properties": {
                "statusCode": {"type": "integer"},
                "result": {"type": "object", "enabled": False},
            }
        },
        "annotations": {"type": "object", "enabled": False},
        "logs": {"type": "object", "enabled": False},
    },
}
_INDEX_NAME_UNSAFE = re.compile(r"[^a-z0-9._@-]")


class ElasticsearchActivationStore(BatchedActivationStore):
    """Activation records in per-namespace indices, written with `_bulk`."""

    # Bulk requests in flight at once: the servers index them in parallel.
    write_concurrency = 4

    def __init__(
        self, url: str, *, variable: str = "SQUALL_ACTIVATION_STORE", **options: Any
    ) -> None:
        # Bulk requests of ~1,000 documents are what both servers' guides recommend.
        options.setdefault("batch_size", 1000)
        super().__init__(**options)
        self._options = parse_elasticsearch_url(url, variable)
        self._where = f"Elasticsearch {redact(url)} ({variable})"
        self._host = 0
        self._client: httpx.AsyncClient | None = None

    @property
    def description(self) -> str:
        return f"activation store {self._where}"

    @property
    def index_pattern(self) -> str:
        return self._options.index_pattern

    def index_for(self, namespace: str) -> str:
        """OpenWhisk's `indexPattern % namespace.toLowerCase`, made a legal index name."""
        return self._options.index_pattern % _INDEX_NAME_UNSAFE.sub("_", namespace.lower())

    @property
    def _all_indices(self) -> str:
        return self._options.index_pattern.replace("%s", "*")

    # -- connection ----------------------------------------------------------------------------

    async def _connect(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                auth=self._options.auth,
                verify=self._options.verify,
                timeout=self._options.timeout_s,
                headers={"content-type": "application/json", "accept": "application/json"},
            )
        template = {
            "index_patterns": [self._all_indices],
            # Above the default 0, so another template matching the same names at equal
            # priority cannot make index creation fail.
            "priority": 200,
            "template": {"mappings": _MAPPINGS},
        }
        await self._call("PUT", f"/_index_template/{self._template_name()}", "installing the "
                         "index template", json=template)  # fmt: skip

    def _template_name(self) -> str:
        prefix = self._options.index_pattern.split("%s")[0].rstrip("-_.") or "activations"
        return f"squall-{_INDEX_NAME_UNSAFE.sub('_', prefix.lower())}"

    async def _disconnect(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _call(
        self, method: str, path: str, what: str, *, json: Any = None, content: bytes | None = None,
        params: dict[str, str] | None = None, allow: tuple[int, ...] = (),
    ) -> JSONDict:
        """One request, failing over across hosts; errors translated, `allow`ed statuses kept."""
        if self._client is None:
            raise StoreError(f"{self._where} is not open ({what})")
        body = content if content is not None else (None if json is None else orjson.dumps(json))
        last: Exception | None = None
        for _ in self._options.hosts:
            base = self._options.hosts[self._host]
            try:
                response = await self._client.request(
                    method, base + path, content=body, params=params
                )
            except httpx.TransportError as exc:
                last = exc
                self._host = (self._host + 1) % len(self._options.hosts)
                continue
            return self._answer(response, what, allow)
        raise DependencyUnavailable(f"{self._where} is unreachable ({what}): {last!r}")

    def _answer(self, response: httpx.Response, what: str, allow: tuple[int, ...]) -> JSONDict:
        status = response.status_code
        if status < 300 or status in allow:
            data = orjson.loads(response.content) if response.content else {}
            return data if isinstance(data, dict) else {"value": data}
        detail = response.text[:300]
        if status in (401, 403):
            raise DependencyUnavailable(
                f"{self._where} refused the credentials ({what}): HTTP {status}; check the user "
                "and password in the URL"
            )
        if status in (429, 502, 503, 504):
            raise DependencyUnavailable(f"{self._where} is overloaded ({what}): HTTP {status}")
        raise StoreError(f"{self._where}: {what} failed: HTTP {status}: {detail}")

    # -- writes --------------------------------------------------------------------------------

    async def _write(self, batch: Sequence[JSONDict]) -> None:
        lines = bytearray()
        for record in batch:
            try:
                doc = self._document(record)
            except (TypeError, ValueError) as exc:
                log.error("dropping activation %s, which cannot be serialised: %s",
                          record.get("activationId"), exc)  # fmt: skip
                continue
            action = {"index": {"_index": self.index_for(str(record.get("namespace", ""))),
                                "_id": record["activationId"]}}  # fmt: skip
            lines += orjson.dumps(action) + b"\n" + doc + b"\n"
        if not lines:
            return
        answer = await self._call(
            "POST", "/_bulk", "writing activation records",
            content=bytes(lines), params={"refresh": self._options.refresh},
        )
        if answer.get("errors"):
            self._bulk_failures(answer)

    def _document(self, record: JSONDict) -> bytes:
        path = record_path(record)
        start, end, duration = timings(record)
        doc = {
            **record,
            "@timestamp": start,
            "path": path,
            "entityPath": entity_path(
                str(record.get("name", "")), path, annotation(record, "binding")
            ),
        }
        # The mapped fields must have the mapped types, or the server refuses the document.
        doc.update(start=start, end=end)
        if duration is None:
            doc.pop("duration", None)
        else:
            doc["duration"] = duration
        if status_code(record) is None:
            doc.pop("statusCode", None)
        return dumps(doc).encode()

    def _bulk_failures(self, answer: JSONDict) -> None:
        """Documents the server refused for what they hold are dropped, loudly (they would fail
        every retry); a server too busy for some makes the whole batch retry (idempotent)."""
        failed = _failed_items(answer)
        if any(item.get("status", 0) in (429, 502, 503, 504) for item in failed):
            raise DependencyUnavailable(f"{self._where} is overloaded: {len(failed)} documents "
                                        "of a bulk write were rejected for now")  # fmt: skip
        for item in failed:
            log.error("dropping activation %s, which %s refuses: %s", item.get("_id"),
                      self._where, str(item.get("error"))[:300])  # fmt: skip

    # -- reads ---------------------------------------------------------------------------------

    async def _get(self, namespace: str, activation_id: str) -> JSONDict | None:
        doc = quote(activation_id, safe="")
        answer = await self._call("GET", f"/{self.index_for(namespace)}/_doc/{doc}",
                                  "reading an activation", allow=(404,))  # fmt: skip
        source = answer.get("_source") if answer.get("found") else None
        if not isinstance(source, dict) or source.get("namespace") != namespace:
            return None
        return _record(source)

    async def _list(self, query: ActivationQuery) -> list[JSONDict]:
        body = {
            "query": _filter(query),
            "sort": [{"start": "desc"}, {"activationId": "desc"}],
            "from": max(query.skip, 0),
            "size": max(query.limit, 0),
        }
        answer = await self._search(query.namespace, "listing activations", body)
        return [_record(hit["_source"]) for hit in answer["hits"]["hits"]]

    async def _count(self, query: ActivationQuery) -> int:
        answer = await self._call(
            "POST", f"/{self.index_for(query.namespace)}/_count", "counting activations",
            json={"query": _filter(query)}, params={"ignore_unavailable": "true"},
        )  # fmt: skip
        return int(answer.get("count", 0))

    async def _search(self, namespace: str, what: str, body: JSONDict) -> JSONDict:
        return await self._call("POST", f"/{self.index_for(namespace)}/_search", what, json=body,
                                params={"ignore_unavailable": "true"})  # fmt: skip

    async def _duration_stats(
        self, namespace: str, path: str, since_ms: int
    ) -> DurationStats | None:
        """Count and average from a `stats` aggregation; nearest-rank percentiles from a
        1 ms `histogram` (exact, unlike the servers' approximate `percentiles`).

        Unlike SQL stores, this covers the whole window, not only the newest 10,000 records.
        """
        body = {
            "size": 0,
            "query": {"bool": {"filter": [
                {"term": {"path.keyword": path}},
                {"term": {"namespace": namespace}},
                {"range": {"start": {"gte": since_ms}}},
                {"exists": {"field": "duration"}},
            ]}},
            "aggs": {
                "stats": {"stats": {"field": "duration"}},
                "histogram": {"histogram": {"field": "duration", "interval": 1,
                                            "min_doc_count": 1}},
            },
        }  # fmt: skip
        answer = await self._search(namespace, "reading durations", body)
        aggs = answer.get("aggregations") or {}
        count = int((aggs.get("stats") or {}).get("count") or 0)
        if count == 0:
            return None
        buckets = [(b["key"], b["doc_count"]) for b in aggs["histogram"]["buckets"]]
        return DurationStats(
            count=count,
            average_ms=float(aggs["stats"]["avg"]),
            p50_ms=_bucket_percentile(buckets, count, 50),
            p99_ms=_bucket_percentile(buckets, count, 99),
        )

    async def _purge_before(self, before_ms: int) -> int:
        answer = await self._call(
            "POST", f"/{self._all_indices}/_delete_by_query", "purging activations",
            json={"query": {"range": {"start": {"lt": before_ms}}}},
            params={"refresh": "true", "conflicts": "proceed", "ignore_unavailable": "true",
                    "allow_no_indices": "true"},
        )  # fmt: skip
        return int(answer.get("deleted", 0))

    async def iter_records(self, page: int = 1000) -> AsyncIterator[RecordPage]:
        """Every record in pages, oldest first (`search_after`, no deep paging)."""
        await self._prepare_read()
        after: list[Any] | None = None
        while True:
            body: JSONDict = {
                "size": page,
                "query": {"match_all": {}},
                "sort": [{"start": "asc"}, {"activationId": "asc"}],
            }
            if after is not None:
                body["search_after"] = after
            answer = await self._guard(self._call(
                "POST", f"/{self._all_indices}/_search", "exporting activations", json=body,
                params={"ignore_unavailable": "true", "allow_no_indices": "true"},
            ))  # fmt: skip
            hits = answer["hits"]["hits"]
            if not hits:
                return
            after = hits[-1]["sort"]
            yield [_record(hit["_source"]) for hit in hits]


def _filter(query: ActivationQuery) -> JSONDict:
    clauses: list[JSONDict] = [{"term": {"namespace": query.namespace}}]
    if query.name is not None:
        clauses.append({"term": {"entityPath": query.name}})
    bounds = {}
    if query.since is not None:
        bounds["gte"] = query.since
    if query.upto is not None:
        bounds["lte"] = query.upto
    if bounds:
        clauses.append({"range": {"start": bounds}})
    return {"bool": {"filter": clauses}}


def _record(source: JSONDict) -> JSONDict:
    for key in HELPER_FIELDS:
        source.pop(key, None)
    return source


def _bucket_percentile(buckets: Sequence[tuple[float, int]], count: int, pct: float) -> float:
    """Nearest-rank percentile over (value, count) buckets in ascending value order."""
    rank = max(1, -(-pct * count // 100))  # ceil without floats drifting
    seen = 0
    for value, n in buckets:
        seen += n
        if seen >= rank:
            return float(value)
    return float(buckets[-1][0]) if buckets else 0.0


def _failed_items(answer: JSONDict) -> list[JSONDict]:
    return [outcome for item in answer.get("items", []) for outcome in item.values()
            if isinstance(outcome, dict) and outcome.get("error")]  # fmt: skip

