"""Coordination on etcd: one lease per process with keepalive, leased keys re-registered after an
outage or a lost lease, compare-and-put elections, and prefix watches delivered as snapshots.

The client is etcd's JSON gateway (`/v3/...`, part of every etcd 3.4+ server) over httpx: it
honours every etcd setting Squall has (several endpoints, TLS with a CA and client certificate,
users), is fully typed, and adds no dependency (docs/dependencies.md says why not aetcd).

How failures look to callers: `start()` never waits long and never raises for an unreachable
etcd; a background task keeps the lease alive or gets it back, and `problem()` says what is
wrong. Every call is bounded by `request_timeout_s` across all endpoints and raises
`DependencyUnavailable` when no endpoint answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import orjson

from squall.abc import Coordinator, PrefixWatcher, Subscription
from squall.config import EtcdSettings
from squall.coordination.etcd_http import base_url, shown, tls_context
from squall.errors import ConfigurationError, DependencyUnavailable

log = logging.getLogger("squall.coordination.etcd")

JSON = dict[str, Any]
TXN_MAX_OPS = 128  # etcd's default --max-txn-ops: re-registration writes in chunks of this
UNAVAILABLE_CODES = {4, 14}  # gRPC DEADLINE_EXCEEDED, UNAVAILABLE: try another endpoint
AUTH_RETRY_MESSAGES = ("invalid auth token", "user name is empty", "auth revision")
LEASE_GONE = "requested lease not found"
UNREACHABLE_FIX = "start etcd or correct SQUALL_ETCD_ENDPOINTS"
AUTH_FIX = "check SQUALL_ETCD_USERNAME and SQUALL_ETCD_PASSWORD"


class EtcdRefused(DependencyUnavailable):
    """etcd answered with an error (gRPC `code` as the gateway reports it)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _range_end(key: str) -> str:
    """The first key after every key starting with `key` (etcd's prefix convention)."""
    raw = bytearray(key.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return base64.b64encode(b"\0").decode()  # every key
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Backoff:
    """Doubling delays between `first` and `cap` seconds."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap, self.delay = first, cap, first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.cap, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = self.first


class _Gateway:
    """The gateway of every endpoint: one in use, the next one tried when it fails."""

    def __init__(self, etcd: EtcdSettings, timeout_s: float) -> None:
        self._etcd = etcd
        self._urls = [base_url(endpoint, etcd) for endpoint in etcd.endpoints]
        self._shown = [shown(endpoint) for endpoint in etcd.endpoints]
        self._current = 0
        self._timeout_s = timeout_s
        self._token: str | None = None
        self._client = httpx.AsyncClient(timeout=timeout_s, verify=tls_context(etcd))
        self.on_switch: Callable[[], None] = lambda: None

    @property
    def endpoint(self) -> str:
        return self._shown[self._current]

    async def aclose(self) -> None:
        await self._client.aclose()

    def _switch(self) -> None:
        if len(self._urls) > 1:
            self._current = (self._current + 1) % len(self._urls)
            log.info("etcd: switching to endpoint %s", self.endpoint)
            self.on_switch()

    async def call(self, path: str, body: JSON, timeout_s: float | None = None) -> JSON:
        """One request, moved to the next endpoint when one is unreachable or has no leader;
        at most `timeout_s` (the request timeout) in all."""
        deadline = time.monotonic() + (timeout_s or self._timeout_s)
        per_attempt = (timeout_s or self._timeout_s) / min(2, len(self._urls))
        failures: list[str] = []
        for _ in range(len(self._urls) + 1):  # +1: a pooled connection to a restarted etcd
            left = deadline - time.monotonic()
            if left <= 0:
                break
            endpoint = self.endpoint
            try:
                return await self._authorised(path, body, min(left, per_attempt))
            except (httpx.TransportError, OSError) as exc:
                failures.append(f"{endpoint}: {_reason(exc)}")
            except EtcdRefused as exc:
                if exc.code not in UNAVAILABLE_CODES:
                    raise
                failures.append(f"{endpoint}: {exc}")
            self._switch()
        raise DependencyUnavailable(_without_password(self.unreachable(failures), self._etcd))

    def unreachable(self, failures: list[str]) -> str:
        detail = "; ".join(dict.fromkeys(failures)) or "no answer in time"
        return f"etcd at {', '.join(self._shown)} unreachable: {detail}; fix: {UNREACHABLE_FIX}"

    async def _authorised(self, path: str, body: JSON, timeout_s: float) -> JSON:
        if self._etcd.username and self._token is None:
            await self._login(timeout_s)
        try:
            return await self._post(path, body, timeout_s)
        except EtcdRefused as exc:
            if not (self._etcd.username and any(m in str(exc) for m in AUTH_RETRY_MESSAGES)):
                raise
        # Tokens die with a restart of etcd (and expire): log in again once.
        await self._login(timeout_s)
        return await self._post(path, body, timeout_s)

    async def _login(self, timeout_s: float) -> None:
        self._token = None
        body = {"name": self._etcd.username, "password": self._etcd.password or ""}
        try:
            reply = await self._post("auth/authenticate", body, timeout_s)
        except EtcdRefused as exc:
            if exc.code in UNAVAILABLE_CODES:
                raise
            raise EtcdRefused(f"etcd at {self.endpoint} refused user {self._etcd.username!r}: "
                              f"{exc}; fix: {AUTH_FIX}", exc.code) from None  # fmt: skip
        self._token = str(reply["token"])

    def _headers(self) -> dict[str, str]:
        return {"authorization": self._token} if self._token else {}

    async def _post(self, path: str, body: JSON, timeout_s: float) -> JSON:
        url = f"{self._urls[self._current]}/v3/{path}"
        reply = await self._client.post(url, content=orjson.dumps(body), headers=self._headers(),
                                        timeout=timeout_s)  # fmt: skip
        data = _json(reply.content)
        if reply.status_code != 200 or "error" in data:
            raise _refusal(data, reply.status_code)
        return data

    @contextlib.asynccontextmanager
    async def stream(self, path: str, body: JSON) -> AsyncIterator[AsyncIterator[JSON]]:
        """A streaming call (watch) on the endpoint in use: its JSON messages."""
        if self._etcd.username and self._token is None:
            await self._login(self._timeout_s)
        url = f"{self._urls[self._current]}/v3/{path}"
        timeout = httpx.Timeout(self._timeout_s, read=None)  # events may be minutes apart
        request = self._client.build_request("POST", url, content=orjson.dumps(body),
                                             headers=self._headers(), timeout=timeout)  # fmt: skip
        reply = await self._client.send(request, stream=True)
        try:
            if reply.status_code != 200:
                data = _json(await reply.aread())
                if any(m in str(data) for m in AUTH_RETRY_MESSAGES):
                    self._token = None
                raise _refusal(data, reply.status_code)
            yield _messages(reply)
        finally:
            await reply.aclose()


async def _messages(reply: httpx.Response) -> AsyncIterator[JSON]:
    async for line in reply.aiter_lines():
        if line.strip():
            message: JSON = orjson.loads(line)
            if "error" in message:
                raise _refusal(message["error"], 200)
            yield message.get("result", {})


def _json(content: bytes) -> JSON:
    """A gateway reply; anything else (a proxy's error page) as its first words."""
    try:
        data = orjson.loads(content) if content else {}
    except orjson.JSONDecodeError:
        return {"message": content[:200].decode(errors="replace")}
    return data if isinstance(data, dict) else {"message": str(data)[:200]}


def _without_password(text: str, etcd: EtcdSettings) -> str:
    """`text` without the password, whatever a driver or server quoted."""
    return text.replace(etcd.password, "***") if etcd.password else text


def _refusal(data: JSON, status: int) -> EtcdRefused:
    message = str(data.get("message") or data.get("error") or f"HTTP {status}")
    code = data.get("code", data.get("grpc_code", 14 if status >= 500 else 2))
    return EtcdRefused(message, int(code or 2))


class EtcdCoordinator(Coordinator):
    """Keys under `{etcd.prefix}/` in etcd, leased keys bound to this process's one lease."""

    def __init__(self, etcd: EtcdSettings, *, request_timeout_s: float = 2.0) -> None:
        self._etcd = etcd
        self._root = etcd.prefix.rstrip("/") + "/"
        self._ttl_s = float(etcd.lease_ttl_s)
        self._timeout_s = request_timeout_s
        self._gateway: _Gateway | None = None
        self._lease: int | None = None
        self._acked_at = -math.inf  # when the last acknowledged keepalive (or grant) was sent
        self._synced = False  # every remembered leased key written under the current lease
        # Leased keys this process wrote (prefixed): value, and whether it was won by
        # put_if_absent (re-claimed only if still free, so a lost election stays lost).
        self._leased: dict[str, tuple[str, bool]] = {}
        self._writes = asyncio.Lock()  # re-registration never interleaves with a put or delete
        self._problem: str | None = "etcd not connected yet"
        self._wake = asyncio.Event()
        self._attempted = asyncio.Event()
        self._session: asyncio.Task[None] | None = None
        self._watches: set[_EtcdWatch] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._check_settings()
        self._gateway = _Gateway(self._etcd, self._timeout_s)
        self._gateway.on_switch = self._restart_watches
        self._session = asyncio.create_task(self._keep_lease(), name="etcd-lease")
        # Wait for the first attempt only, so a healthy etcd is ready when start returns.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attempted.wait(), self._timeout_s + 0.5)

    def _check_settings(self) -> None:
        e = self._etcd
        if not e.endpoints:
            raise ConfigurationError("etcd coordination needs endpoints: set SQUALL_ETCD_ENDPOINTS")
        if bool(e.cert_file) != bool(e.key_file):
            raise ConfigurationError("an etcd client certificate needs its key: set both "
                                     "SQUALL_ETCD_CERT_FILE and SQUALL_ETCD_KEY_FILE")  # fmt: skip
        if bool(e.username) != bool(e.password):
            raise ConfigurationError("etcd authentication needs both SQUALL_ETCD_USERNAME and "
                                     "SQUALL_ETCD_PASSWORD")  # fmt: skip
        if e.lease_ttl_s < 1:
            raise ConfigurationError("SQUALL_ETCD_LEASE_TTL_S must be 1 s or more")

    async def close(self) -> None:
        for watch in list(self._watches):
            await watch.close()
        if self._session is not None:
            self._session.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._session
            self._session = None
        if self._gateway is not None:
            if self._lease is not None:  # keys vanish now rather than after the TTL
                with contextlib.suppress(DependencyUnavailable):
                    await self._gateway.call("lease/revoke", {"ID": str(self._lease)}, 1.0)
            await self._gateway.aclose()
        self._lease, self._gateway = None, None

    @property
    def lease_valid(self) -> bool:
        return self._lease is not None and time.monotonic() - self._acked_at < self._ttl_s

    @property
    def lease_id(self) -> int | None:
        """The current lease (hex in `etcdctl lease list`), None while there is none."""
        return self._lease

    def problem(self) -> str | None:
        return self._problem

    # -- the lease -------------------------------------------------------------------------

    async def _keep_lease(self) -> None:
        interval = self._ttl_s / 3
        backoff = _Backoff(0.1, interval)
        while True:
            self._wake.clear()  # before the step: a write that finds the lease gone wakes us
            try:
                await self._lease_step()
                self._set_problem(None)
                backoff.reset()
                delay = interval
            except DependencyUnavailable as exc:
                self._set_problem(str(exc))
                delay = backoff.next()
            except Exception as exc:  # no exception may end the keepalive
                problem = self._safe(f"etcd lease keeper failed: {_reason(exc)}")
                if problem != self._problem:
                    log.exception("etcd lease keeper failed; retrying")
                self._set_problem(problem)
                delay = backoff.next()
            self._attempted.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _lease_step(self) -> None:
        if self._lease is not None:
            await self._keepalive()
        if self._lease is None:
            await self._grant()
        if not self._synced:
            await self._register_all()

    async def _keepalive(self) -> None:
        assert self._lease is not None
        sent = time.monotonic()
        try:
            reply = await self._call("lease/keepalive", {"ID": str(self._lease)})
        except EtcdRefused as exc:
            if LEASE_GONE not in str(exc):
                raise
            reply = {}
        if int(reply.get("result", reply).get("TTL", 0)) > 0:
            self._acked_at = sent
            return
        log.warning("etcd lease %x expired or was revoked; taking a new one and re-registering "
                    "%d keys", self._lease, len(self._leased))  # fmt: skip
        self._lease, self._synced = None, False

    async def _grant(self) -> None:
        sent = time.monotonic()
        reply = await self._call("lease/grant", {"TTL": str(math.ceil(self._ttl_s))})
        if reply.get("error"):
            raise DependencyUnavailable(f"etcd refused a lease: {reply['error']}")
        self._lease, self._acked_at, self._synced = int(reply["ID"]), sent, False
        log.info("etcd lease %x granted (TTL %s s)", self._lease, reply.get("TTL"))

    async def _register_all(self) -> None:
        async with self._writes:
            lease = self._require_lease()
            plain = [(k, v) for k, (v, won) in self._leased.items() if not won]
            for start in range(0, len(plain), TXN_MAX_OPS):
                puts = [{"request_put": {"key": _b64(k), "value": _b64(v), "lease": str(lease)}}
                        for k, v in plain[start : start + TXN_MAX_OPS]]  # fmt: skip
                await self._call("kv/txn", {"success": puts})
            claims = [(k, v) for k, (v, won) in self._leased.items() if won]
            for key, value in claims:
                if not await self._claim(key, value, lease):
                    log.warning("etcd: %s is held by another member now; not taken back",
                                key[len(self._root) :])  # fmt: skip
                    self._leased.pop(key, None)
            self._synced = lease == self._lease
        if plain or claims:
            log.info("etcd: %d leased keys registered under lease %x", len(self._leased), lease)

    def _lease_lost(self) -> None:
        """A write found the lease gone: the keeper takes a new one and re-registers now."""
        self._lease, self._synced = None, False
        self._wake.set()

    def _set_problem(self, problem: str | None) -> None:
        problem = None if problem is None else self._safe(problem)
        if problem == self._problem:
            return
        if problem is None:
            log.info("etcd: usable again at %s", self._gateway.endpoint if self._gateway else "?")
        else:
            log.warning("etcd: %s", problem)
        self._problem = problem

    # -- keys ------------------------------------------------------------------------------

    def _safe(self, text: str) -> str:
        return _without_password(text, self._etcd)

    async def _call(self, path: str, body: JSON) -> JSON:
        if self._gateway is None:
            raise DependencyUnavailable("etcd coordinator not started")
        return await self._gateway.call(path, body)

    def _require_lease(self) -> int:
        if self._lease is None:
            raise DependencyUnavailable(self._problem or "etcd: no lease yet; retrying")
        return self._lease

    async def put(self, key: str, value: str, *, leased: bool = True) -> None:
        full = self._root + key
        body: JSON = {"key": _b64(full), "value": _b64(value)}
        async with self._writes:
            if not leased:
                self._leased.pop(full, None)
                await self._call("kv/put", body)
                return
            # Remembered first: if etcd is away now, the keeper writes it once it is back.
            self._leased[full] = (value, False)
            try:
                body["lease"] = str(self._require_lease())
                await self._leased_write("kv/put", body)
            except DependencyUnavailable:
                self._synced = False
                raise

    async def _leased_write(self, path: str, body: JSON) -> JSON:
        try:
            return await self._call(path, body)
        except EtcdRefused as exc:
            if LEASE_GONE not in str(exc):
                raise
            self._lease_lost()
            raise DependencyUnavailable("etcd lease lost; re-registering") from exc

    async def put_if_absent(self, key: str, value: str, *, leased: bool = True) -> bool:
        full = self._root + key
        async with self._writes:
            won = await self._claim(full, value, self._require_lease() if leased else None)
            if won and leased:
                self._leased[full] = (value, True)
            return won

    async def _claim(self, full: str, value: str, lease: int | None) -> bool:
        """Compare-and-put on a free key (create revision 0). A lost compare on a key holding
        our value under our lease is our own earlier write (a retried request, or a key that
        survived an outage with its lease): won too."""
        put: JSON = {"key": _b64(full), "value": _b64(value)}
        if lease is not None:
            put["lease"] = str(lease)
        txn = {"compare": [{"target": "CREATE", "key": _b64(full), "create_revision": "0"}],
               "success": [{"request_put": put}],
               "failure": [{"request_range": {"key": _b64(full)}}]}  # fmt: skip
        reply = await self._leased_write("kv/txn", txn)
        return bool(reply.get("succeeded")) or _ours(reply, value, put.get("lease"))

    async def get(self, key: str) -> str | None:
        reply = await self._call("kv/range", {"key": _b64(self._root + key)})
        kvs = reply.get("kvs") or []
        return _unb64(kvs[0].get("value", "")) if kvs else None

    async def get_prefix(self, prefix: str) -> Mapping[str, str]:
        found, _ = await self._range_prefix(prefix)
        return found

    async def _range_prefix(self, prefix: str) -> tuple[dict[str, str], int]:
        """Every key under `prefix` (unprefixed) and the revision they were read at."""
        full = self._root + prefix
        reply = await self._call("kv/range", {"key": _b64(full), "range_end": _range_end(full)})
        found = {_unb64(kv["key"])[len(self._root) :]: _unb64(kv.get("value", ""))
                 for kv in reply.get("kvs") or []}  # fmt: skip
        return found, int(reply["header"]["revision"])

    async def delete(self, key: str) -> None:
        full = self._root + key
        async with self._writes:
            self._leased.pop(full, None)
            await self._call("kv/deleterange", {"key": _b64(full)})

    # -- watches ---------------------------------------------------------------------------

    def watch_prefix(self, prefix: str, on_change: PrefixWatcher) -> Subscription:
        watch = _EtcdWatch(self, prefix, on_change)
        self._watches.add(watch)
        return watch

    def _restart_watches(self) -> None:
        for watch in self._watches:
            watch.restart()

    def _watch_body(self, prefix: str, revision: int) -> JSON:
        full = self._root + prefix
        return {"create_request": {"key": _b64(full), "range_end": _range_end(full),
                                   "start_revision": str(revision)}}  # fmt: skip

    def _unprefixed(self, raw_key: str) -> str:
        return _unb64(raw_key)[len(self._root) :]


def _ours(reply: JSON, value: str, lease: str | None) -> bool:
    """A lost compare-and-put whose key holds our value under our lease was our own write,
    retried after a timeout: it counts as won."""
    for response in reply.get("responses") or []:
        for kv in response.get("response_range", {}).get("kvs") or []:
            return bool(_unb64(kv.get("value", "")) == value and lease and kv.get("lease") == lease)
    return False


class _EtcdWatch(Subscription):
    """Range, then watch from the next revision; after any break, range and watch again."""

    def __init__(self, owner: EtcdCoordinator, prefix: str, on_change: PrefixWatcher) -> None:
        self._owner, self._prefix, self._on_change = owner, prefix, on_change
        self._stream: asyncio.Task[None] | None = None
        self._problem: str | None = None
        self._task = asyncio.create_task(self._run(), name=f"etcd-watch {prefix}")

    async def close(self) -> None:
        self._owner._watches.discard(self)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._stream is not None:
            self._stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stream

    def restart(self) -> None:
        """Drop the stream (its endpoint was left): range and watch afresh."""
        if self._stream is not None:
            self._stream.cancel()

    async def _run(self) -> None:
        backoff = _Backoff(0.1, 2.0)
        while True:
            try:
                snapshot, revision = await self._owner._range_prefix(self._prefix)
                backoff.reset()
                self._note(None)
                self._deliver(snapshot)
                self._stream = asyncio.create_task(self._follow(snapshot, revision + 1))
                # wait() rather than await: a restart cancels only the stream, not this loop.
                await asyncio.wait({self._stream})
                error = None if self._stream.cancelled() else self._stream.exception()
                if error is not None:
                    self._note(_reason(error))
            except DependencyUnavailable as exc:
                self._note(str(exc))
            except Exception as exc:  # a watcher must outlive anything etcd or a callback does
                self._note(_reason(exc))
            finally:
                if self._stream is not None and not self._stream.done():
                    self._stream.cancel()
            await asyncio.sleep(backoff.next())

    async def _follow(self, snapshot: dict[str, str], revision: int) -> None:
        gateway = self._owner._gateway
        assert gateway is not None
        body = self._owner._watch_body(self._prefix, revision)
        async with gateway.stream("watch", body) as messages:
            async for result in messages:
                if result.get("canceled"):  # compacted or refused: range again
                    return
                events = result.get("events") or []
                for event in events:
                    kv = event["kv"]
                    key = self._owner._unprefixed(kv["key"])
                    if event.get("type") == "DELETE":
                        snapshot.pop(key, None)
                    else:
                        snapshot[key] = _unb64(kv.get("value", ""))
                if events:
                    self._deliver(snapshot)

    def _deliver(self, snapshot: Mapping[str, str]) -> None:
        try:
            self._on_change(dict(snapshot))
        except Exception:
            log.exception("etcd watch on %r: the change handler failed", self._prefix)

    def _note(self, problem: str | None) -> None:
        if problem != self._problem and problem is not None:
            log.warning("etcd watch on %r broken (%s); watching again", self._prefix,
                        self._owner._safe(problem))  # fmt: skip
        self._problem = problem
