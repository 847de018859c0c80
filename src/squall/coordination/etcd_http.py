"""etcd's JSON gateway (`/v3/...` over HTTP), for checks: status, login, a lease round trip and
the server's clock.

`squall doctor` and readiness use this rather than a gRPC client: httpx is already a base
dependency, the gateway is part of every etcd 3.4+ server, and its replies carry an HTTP `Date`
header, which is how the clock-skew check reads etcd's time (to the second, which is what
matters for lease TTLs of seconds). Cluster mode's coordinator keeps its own client.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx

from squall.config import EtcdSettings
from squall.stores.urls import redact


class EtcdRefused(Exception):
    """etcd answered, but said no (wrong credentials, no permission, auth not enabled)."""


@dataclass(frozen=True, slots=True)
class Status:
    endpoint: str
    version: str
    leader: str
    skew_s: float  # etcd's clock minus ours, to about a second; positive when etcd is ahead


@functools.lru_cache(maxsize=8)
def tls_context(etcd: EtcdSettings) -> ssl.SSLContext:
    """One TLS context per etcd settings, built once: building one reads the CA bundle (tens of
    milliseconds), and a readiness probe makes a new gateway every time it runs."""
    context = ssl.create_default_context(cafile=str(etcd.ca_file) if etcd.ca_file else None)
    if etcd.cert_file and etcd.key_file:
        context.load_cert_chain(str(etcd.cert_file), str(etcd.key_file))
    return context


def base_url(endpoint: str, etcd: EtcdSettings) -> str:
    if "://" in endpoint:
        return endpoint.rstrip("/")
    scheme = "https" if etcd.ca_file or etcd.cert_file else "http"
    return f"{scheme}://{endpoint}"


def shown(endpoint: str) -> str:
    return redact(endpoint)


class EtcdGateway:
    """One endpoint's gateway; `login` once, then call."""

    def __init__(self, endpoint: str, etcd: EtcdSettings, timeout_s: float = 3.0) -> None:
        self.endpoint = endpoint
        self._etcd = etcd
        self._client = httpx.AsyncClient(
            base_url=base_url(endpoint, etcd), timeout=timeout_s, verify=tls_context(etcd)
        )
        self._token: str | None = None

    async def __aenter__(self) -> EtcdGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def call(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], httpx.Response]:
        headers = {"authorization": self._token} if self._token else {}
        response = await self._client.post(f"/v3/{path}", json=body, headers=headers)
        data = response.json() if response.content else {}
        if response.status_code != 200 or "error" in data:
            raise EtcdRefused(str(data.get("message") or data.get("error") or response.text))
        return data, response

    async def status(self) -> Status:
        sent = time.time()
        data, response = await self.call("maintenance/status", {})
        received = time.time()
        return Status(self.endpoint, data.get("version", "?"), data.get("leader", "?"),
                      _skew(response, (sent + received) / 2))  # fmt: skip

    async def login(self) -> None:
        """Trade the user and password for a token (no-op without credentials)."""
        if not self._etcd.username:
            return
        body = {"name": self._etcd.username, "password": self._etcd.password or ""}
        data, _ = await self.call("auth/authenticate", body)
        self._token = str(data["token"])

    async def lease_round_trip(self, key: str) -> float:
        """Grant a lease, put a key under it, read it back, revoke: seconds taken."""
        started = time.monotonic()
        ttl = max(2, int(self._etcd.lease_ttl_s))
        granted, _ = await self.call("lease/grant", {"TTL": ttl})
        lease = granted["ID"]
        try:
            value = f"doctor {time.time()}"
            await self.call("kv/put", {"key": _b64(key), "value": _b64(value), "lease": lease})
            found, _ = await self.call("kv/range", {"key": _b64(key)})
            values = [base64.b64decode(kv["value"]).decode() for kv in found.get("kvs", [])]
            if values != [value]:
                raise EtcdRefused(f"the key written under the lease read back as {values!r}")
        finally:
            await self.call("lease/revoke", {"ID": lease})
        return time.monotonic() - started


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _skew(response: httpx.Response, local: float) -> float:
    header = response.headers.get("date")
    if not header:
        return 0.0
    remote = email.utils.parsedate_to_datetime(header).timestamp()
    # The header has whole seconds: etcd's clock is somewhere in [remote, remote + 1).
    return remote + 0.5 - local
