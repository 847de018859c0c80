"""Controllers managing alarms they do not hold: `RemoteAlarms` against the schedulers'
`alarm_routes`, each served by a real uvicorn on 127.0.0.1, over real HTTP.

Two schedulers (a, b) each run an AlarmService on one shared SQLite database file and own half
of the shards; `owner_url` is the placement's answer, which a test can make stale or empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from squall.alarms import Alarm, AlarmService, AlarmValidationError, FireResult
from squall.alarms.admin import LocalAlarms
from squall.alarms.remote import AlarmsUnavailable, RemoteAlarms
from squall.alarms.routes import alarm_routes
from squall.alarms.shards import alarm_shard
from squall.cluster.internal import INTERNAL_PREFIX, InternalClient
from squall.controller.app import build_app
from squall.controller.feeds import AlarmFeeds
from squall.errors import ConflictError, NotFoundError
from squall.platform import Platform
from squall.stores.sqlite import SqliteEntityStore
from squall.testing import free_port
from tests.conftest import GUEST_AUTH, GUEST_KEY, GUEST_UUID

TOKEN = "cluster-s3cret"
NS = "guest"
SHARDS = 4
EVERY_HOUR = {"cron": "0 * * * *"}


async def never_fired(
    alarm: Alarm, tick: datetime, activation_id: str, *, maybe_fired: bool
) -> FireResult:
    return FireResult.fired()


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """`app` on a real uvicorn at 127.0.0.1; its base URL. The socket listens before the server
    loop runs, so no wait for `started` is needed: early connections queue in the backlog."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(app, log_config=None, lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@dataclass
class Cluster:
    """Two schedulers, a mutable shard map and the placement's `owner_url` view of it."""

    services: dict[str, AlarmService]
    urls: dict[str, str]
    owner: dict[int, str] = field(default_factory=dict)
    lookups: int = 0

    def owner_of(self, namespace: str, trigger: str) -> str | None:
        return self.owner.get(alarm_shard(namespace, trigger, SHARDS))

    def owner_url(self, namespace: str, trigger: str) -> str | None:
        self.lookups += 1
        member = self.owner_of(namespace, trigger)
        return None if member is None else self.urls[member]

    def names(self) -> tuple[str, str]:
        """A trigger name a owns and one b owns."""
        names = [f"trg{i}" for i in range(40)]
        return (
            next(n for n in names if self.owner_of(NS, n) == "a"),
            next(n for n in names if self.owner_of(NS, n) == "b"),
        )


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    owner = {0: "a", 1: "a", 2: "b", 3: "b"}
    stores: list[SqliteEntityStore] = []
    services: dict[str, AlarmService] = {}
    urls: dict[str, str] = {}
    async with contextlib.AsyncExitStack() as stack:
        for member in ("a", "b"):
            store = SqliteEntityStore(tmp_path / "shared.db")
            await store.start()
            stores.append(store)
            service = AlarmService(
                store,
                never_fired,
                owns=lambda ns, t, m=member: owner.get(alarm_shard(ns, t, SHARDS)) == m,
            )
            await service.start()
            services[member] = service
            stack.push_async_callback(service.close)
            app = Starlette(routes=alarm_routes(service, TOKEN))
            urls[member] = await stack.enter_async_context(serving(app))
        yield Cluster(services, urls, owner)
    for store in stores:
        await store.close()


@pytest.fixture
async def client() -> AsyncIterator[InternalClient]:
    instance = InternalClient(TOKEN)
    yield instance
    await instance.close()


async def test_the_feed_lifecycle_at_the_owner_over_http(
    cluster: Cluster, client: InternalClient
) -> None:
    remote = RemoteAlarms(
        client, cluster.owner_url, scheduler_urls=lambda: list(cluster.urls.values())
    )
    of_a, of_b = cluster.names()
    for name in (of_a, of_b):
        view = await remote.create(NS, name, "cron", {**EVERY_HOUR, "trigger_payload": {"n": 1}})
        assert view["config"]["cron"] == "0 * * * *" and view["config"]["payload"] == {"n": 1}
        assert len(view["next"]) == 5 and view["paused"] is False
    held_a = cluster.services["a"].get(NS, of_a)
    assert held_a is not None and cluster.services["b"].get(NS, of_a) is None
    assert cluster.services["b"].get(NS, of_b) is not None

    read = await remote.read(NS, of_b)
    assert read is not None and read["config"]["name"] == of_b
    updated = await remote.update(NS, of_a, {"trigger_payload": {"n": 2}})
    assert updated["config"]["payload"] == {"n": 2}
    paused = await remote.pause(NS, of_a)
    assert paused["paused"] is True and paused["next"] == []
    resumed = await remote.resume(NS, of_a)
    assert resumed["paused"] is False and len(resumed["next"]) == 5
    listed = await remote.list(NS)
    assert [v["config"]["name"] for v in listed] == sorted([of_a, of_b])

    with pytest.raises(ConflictError, match="already has an alarm"):
        await remote.create(NS, of_a, "cron", EVERY_HOUR)
    assert await remote.delete(NS, of_a) is True
    assert await remote.read(NS, of_a) is None
    assert await remote.delete(NS, of_a) is False
    with pytest.raises(NotFoundError, match="has no alarm"):
        await remote.update(NS, of_a, {"trigger_payload": {}})
    with pytest.raises(NotFoundError):
        await remote.pause(NS, of_a)


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("cron", {"cron": "61 * * * *"}),
        ("cron", {"cron": "* * * * *", "timezone": "Mars/Olympus"}),
        ("interval", {"minutes": 0}),
        ("once", {"date": "2001-01-01T00:00:00Z"}),
    ],
)
async def test_invalid_parameters_give_the_standalone_message(
    cluster: Cluster, client: InternalClient, kind: str, params: dict[str, Any]
) -> None:
    remote = RemoteAlarms(client, cluster.owner_url)
    of_a, _ = cluster.names()
    with pytest.raises(AlarmValidationError) as local:
        await LocalAlarms(cluster.services["a"]).create(NS, of_a, kind, params)
    with pytest.raises(AlarmValidationError) as over_http:
        await remote.create(NS, of_a, kind, params)
    assert str(over_http.value) == str(local.value) != ""


async def test_the_internal_endpoint_needs_the_cluster_token(cluster: Cluster) -> None:
    of_a, _ = cluster.names()
    url = f"{cluster.urls['a']}{INTERNAL_PREFIX}/alarms/read"
    async with httpx.AsyncClient() as http:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            reply = await http.post(url, json={"namespace": NS, "trigger": of_a}, headers=headers)
            assert reply.status_code == 401, headers
            assert reply.json()["code"] and "SQUALL_CLUSTER_TOKEN" in reply.json()["error"]
            assert TOKEN not in reply.text
        authorized = {"authorization": f"Bearer {TOKEN}"}
        reply = await http.post(url, json={"namespace": NS, "trigger": of_a}, headers=authorized)
        assert reply.status_code == 404 and "has no alarm" in reply.json()["error"]
        reply = await http.post(url, content=b"{nope", headers=authorized)
        assert reply.status_code == 400 and "error" in reply.json()
        reply = await http.post(url, json={"namespace": NS}, headers=authorized)
        assert reply.status_code == 400 and "trigger" in reply.json()["error"]

    tokenless = InternalClient(None)
    try:
        remote = RemoteAlarms(tokenless, cluster.owner_url)
        started = time.monotonic()
        with pytest.raises(AlarmsUnavailable, match="SQUALL_CLUSTER_TOKEN"):
            await remote.read(NS, of_a)
        assert time.monotonic() - started < 1.0  # a wrong token is not retried
    finally:
        await tokenless.close()


async def test_a_former_owner_answers_409_and_the_call_goes_to_the_new_one(
    cluster: Cluster, client: InternalClient
) -> None:
    of_a, _ = cluster.names()
    stale = {"calls": 0}

    def lagging_view(namespace: str, trigger: str) -> str | None:
        """The placement has not seen the move yet on the first lookup."""
        stale["calls"] += 1
        return cluster.urls["a"] if stale["calls"] == 1 else cluster.owner_url(namespace, trigger)

    shard = alarm_shard(NS, of_a, SHARDS)
    cluster.owner[shard] = "b"  # the shard moved to b
    await cluster.services["b"].rebalance()
    await cluster.services["a"].rebalance()
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            f"{cluster.urls['a']}{INTERNAL_PREFIX}/alarms/read",
            json={"namespace": NS, "trigger": of_a},
            headers={"authorization": f"Bearer {TOKEN}"},
        )
    assert reply.status_code == 409 and "does not own" in reply.json()["error"]

    view = await RemoteAlarms(client, lagging_view).create(NS, of_a, "cron", EVERY_HOUR)
    assert view["config"]["name"] == of_a
    assert stale["calls"] == 2
    assert cluster.services["b"].get(NS, of_a) is not None
    assert cluster.services["a"].get(NS, of_a) is None


async def test_an_unreachable_owner_is_looked_up_again(
    cluster: Cluster, client: InternalClient
) -> None:
    of_a, _ = cluster.names()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the owner just died
    answers = iter([dead, dead])

    def after_failover(namespace: str, trigger: str) -> str | None:
        return next(answers, None) or cluster.owner_url(namespace, trigger)

    view = await RemoteAlarms(client, after_failover).create(NS, of_a, "cron", EVERY_HOUR)
    assert view["config"]["name"] == of_a


async def test_no_owner_for_a_while_gives_up_with_an_actionable_error(
    cluster: Cluster, client: InternalClient
) -> None:
    of_a, _ = cluster.names()
    cluster.owner.clear()  # every scheduler's lease expired: nobody owns any shard
    remote = RemoteAlarms(client, cluster.owner_url, retry_for_s=0.4)
    started = time.monotonic()
    with pytest.raises(AlarmsUnavailable, match=r"no scheduler owns the shard .* retry"):
        await remote.create(NS, of_a, "cron", EVERY_HOUR)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 2.0, elapsed
    assert cluster.lookups >= 3  # looked up again between attempts

    # a placement that points at a scheduler which keeps answering 409: bounded as well
    stuck = RemoteAlarms(client, lambda ns, t: cluster.urls["b"], retry_for_s=0.3)
    with pytest.raises(AlarmsUnavailable, match="does not own it"):
        await stuck.read(NS, of_a)


# ---------------------------------------------------------------------------------------------
# Through the controller's feed actions (the API's /whisk.system/alarms)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def remote_scheduler(platform: Platform) -> AsyncIterator[tuple[AlarmService, str]]:
    """A scheduler owning every shard, on the platform's entity store, served over HTTP."""
    service = AlarmService(platform.entities, never_fired, owns=lambda ns, t: True)
    await service.start()
    try:
        async with serving(Starlette(routes=alarm_routes(service, TOKEN))) as url:
            yield service, url
    finally:
        await service.close()


async def feed_call(
    api: httpx.AsyncClient, trigger: str, event: str, **params: Any
) -> httpx.Response:
    return await api.post(
        "/api/v1/namespaces/whisk.system/actions/alarms/alarm",
        params={"blocking": "true"},
        json={
            "lifecycleEvent": event,
            "triggerName": f"/_/{trigger}",
            "authKey": GUEST_AUTH,
            **params,
        },
    )


async def test_the_feed_actions_reach_the_owner_and_answer_503_without_one(
    platform: Platform, remote_scheduler: tuple[AlarmService, str], client: InternalClient
) -> None:
    service, url = remote_scheduler
    placement: dict[str, str | None] = {"url": url}
    feeds = AlarmFeeds(platform.controller)
    feeds.attach(RemoteAlarms(client, lambda ns, t: placement["url"], retry_for_s=0.4))
    app = build_app(platform.controller, platform.auth, feeds=feeds)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://squall", auth=(GUEST_UUID, GUEST_KEY), timeout=30
    ) as api:
        made = await api.put("/api/v1/namespaces/_/triggers/tick", json={})
        assert made.status_code == 200, made.text
        created = await feed_call(api, "tick", "CREATE", cron="*/5 * * * *")
        assert created.status_code == 200, created.text
        assert created.json()["response"]["result"] == {
            "status": "success",
            "trigger": "/guest/tick",
        }
        assert service.get("guest", "tick") is not None  # held by the remote scheduler
        read = await feed_call(api, "tick", "READ")
        assert read.json()["response"]["result"]["config"]["cron"] == "*/5 * * * *"
        bad = await feed_call(api, "tick", "UPDATE", cron="not a cron")
        assert bad.status_code == 502  # an application error, as standalone
        assert "cron" in bad.json()["response"]["result"]["error"]

        placement["url"] = None  # a failover in progress: no scheduler owns the shard
        unowned = await feed_call(api, "tick", "READ")
        assert unowned.status_code == 503, unowned.text
        assert "no scheduler owns the shard" in unowned.json()["error"]
        assert unowned.headers["retry-after"]
        refused = await api.delete("/api/v1/namespaces/_/triggers/tick")
        assert refused.status_code == 503 and "retry" in refused.json()["error"]

        assert (await api.get("/api/v1/namespaces/_/triggers/tick")).status_code == 200
        assert service.get("guest", "tick") is not None  # both stay, for the retry

        placement["url"] = url
        deleted = await api.delete("/api/v1/namespaces/_/triggers/tick")
        assert deleted.status_code == 200, deleted.text
        assert service.get("guest", "tick") is None
