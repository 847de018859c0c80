"""Invokers pulling from a scheduler in another process: a real scheduler served by uvicorn on
loopback, invokers with real process sandboxes fetching over HTTP (RemoteQueueEndpoint), and
the scheduler's handling of an invoker that died."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from squall.abc import ActivationStore
from squall.bus.codec import queue_key_json
from squall.bus.memory import MemoryBus
from squall.cluster.internal import INTERNAL_PREFIX, InternalClient
from squall.config import InvokerSettings, SchedulerSettings, SystemLimits
from squall.coordination.local import LocalCoordinator
from squall.entities.action import Action, build_action
from squall.entities.activation import WHISK_ERROR
from squall.invoker.remote import RemoteEndpoints, RemoteQueueEndpoint
from squall.invoker.service import InvokerService
from squall.messages import (
    ActivationMessage,
    Completion,
    ContainerCreation,
    QueueKey,
    completed_topic,
)
from squall.platform import sandbox_root
from squall.runtimes import load_manifest
from squall.sandbox.process import ProcessSandboxFactory
from squall.scheduler.endpoint import queue_routes
from squall.scheduler.service import INVOKER_GONE, SchedulerService
from squall.stores import select
from squall.testing import free_port
from tests.conftest import make_settings

TOKEN = "cluster-token-for-tests"
CONTROLLER = "controller0"
CODE = (
    "import os, time\n"
    "def main(args):\n"
    "    time.sleep(args.get('s', 0))\n"
    "    return {'n': args.get('n'), 'pid': os.getpid(), 'v': VERSION}\n"
)
KEY = QueueKey("guest", "guest/echo", 1)
WAIT_S = 15.0  # bound on every wait below; each normally takes well under a second


def action(version: int = 1, instances: int | None = None) -> Action:
    limits: dict[str, Any] = {} if instances is None else {"instances": instances}
    body = {"exec": {"kind": "python:3", "code": f"VERSION = {version}\n{CODE}"}, "limits": limits}
    return build_action("guest", "echo", body, kinds=frozenset({"python:3"}),
                        system=SystemLimits(), existing=None)  # fmt: skip


def message(of: Action, revision: int, **content: Any) -> ActivationMessage:
    return ActivationMessage(uuid.uuid4().hex, uuid.uuid4().hex, "guest", "guest", of, revision,
                             content, True, CONTROLLER, int(time.time() * 1000))  # fmt: skip


class _Server(uvicorn.Server):
    """The test process owns its signals (as standalone does)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Cluster:
    """One scheduler behind its internal endpoint and invokers that reach it over HTTP."""

    bus: MemoryBus
    scheduler: SchedulerService
    activations: ActivationStore
    factory: ProcessSandboxFactory
    url: str
    server: _Server
    serving: asyncio.Task[None]
    client: InternalClient
    completions: dict[str, Completion] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    invokers: dict[str, InvokerService] = field(default_factory=dict)
    choice: list[str] = field(default_factory=lambda: ["invoker0"])
    reachable: dict[str, bool] = field(default_factory=dict)  # invoker id -> can reach it
    endpoints: list[RemoteEndpoints] = field(default_factory=list)

    async def add_invoker(
        self, invoker_id: str, url_for: Callable[[str], str | None] | None = None, **knobs: Any
    ) -> InvokerService:
        """An invoker whose endpoints find the scheduler while `reachable[invoker_id]`."""
        self.reachable[invoker_id] = True
        endpoints = RemoteEndpoints(url_for or self._url_for(invoker_id), self.client)
        self.endpoints.append(endpoints)
        invoker = InvokerService(
            bus=self.bus,
            factory=self.factory,
            endpoint_for=endpoints,
            activations=self.activations,
            settings=replace(InvokerSettings(), prewarm_count=0, **knobs),
            limits=SystemLimits(),
            api_host="http://127.0.0.1:1",
            invoker_id=invoker_id,
            runtimes=self.factory.runtimes,
        )
        await invoker.start()
        self.invokers[invoker_id] = invoker
        return invoker

    def _url_for(self, invoker_id: str) -> Callable[[str], str | None]:
        def url_for(scheduler_id: str) -> str | None:
            known = scheduler_id == self.scheduler.scheduler_id and self.reachable[invoker_id]
            return self.url if known else None

        return url_for

    async def completion(self, activation_id: str) -> Completion:
        deadline = time.monotonic() + WAIT_S
        while activation_id not in self.completions:
            self.arrived.clear()
            left = deadline - time.monotonic()
            assert left > 0, f"no completion for {activation_id} within {WAIT_S} s"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)
        return self.completions[activation_id]

    def crash_server(self) -> None:
        """Like a SIGKILLed scheduler: every connection reset, nothing answered any more."""
        self.server.force_exit = self.server.should_exit = True
        for connection in list(self.server.server_state.connections):
            connection.transport.abort()  # type: ignore[attr-defined]


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {WAIT_S} s"
        await asyncio.sleep(0.02)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    bus, activations = MemoryBus(), select.activation_store(settings.activation_store_url,
                                                             settings.data_dir)  # fmt: skip
    factory = ProcessSandboxFactory(sandbox_root(), runtimes=load_manifest())
    choice = ["invoker0"]
    scheduler = SchedulerService(
        bus=bus,
        coordinator=LocalCoordinator(),
        activations=activations,
        settings=SchedulerSettings(),
        namespace_limit=lambda _ns: 100,
        choose_invoker=lambda _action: choice[0],
    )
    port = free_port()
    app = Starlette(routes=queue_routes(scheduler, TOKEN))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="none", lifespan="off",
                            log_config=None, log_level="warning")  # fmt: skip
    server = _Server(config)
    for component in (bus, activations, factory, scheduler):
        await component.start()
    serving = asyncio.create_task(server.serve())
    client = InternalClient(TOKEN, max_connections=None)
    url = f"http://127.0.0.1:{port}"
    it = Cluster(bus, scheduler, activations, factory, url, server, serving, client, choice=choice)

    def completed(item: object) -> None:
        if isinstance(item, Completion):
            it.completions[item.activation_id] = item
            it.arrived.set()

    subscription = bus.subscribe(completed_topic(CONTROLLER), "test", completed)
    await until(lambda: server.started, "the scheduler's server start")
    try:
        yield it
    finally:
        for invoker in it.invokers.values():
            await invoker.close()
        for endpoints in it.endpoints:
            await endpoints.close()  # their last notifications
        it.crash_server()  # a long poll left over would hold a graceful shutdown for its timeout
        await serving
        await subscription.close()
        for component in (scheduler, client, factory, activations, bus):
            await component.close()


# -- the fetch path ------------------------------------------------------------------------------


async def test_warm_activations_flow_over_http_and_complete(cluster: Cluster) -> None:
    invoker = await cluster.add_invoker("invoker0")
    echo = action()
    results = []
    for n in range(4):
        sent = message(echo, 1, n=n)
        cluster.scheduler.accept(sent)
        done = await cluster.completion(sent.activation_id)
        response = done.record["response"]
        assert response["statusCode"] == 0, response
        results.append(response["result"])
        stored = await cluster.activations.get("guest", sent.activation_id)
        assert stored is not None and stored["response"]["result"] == response["result"]
    assert [r["n"] for r in results] == [0, 1, 2, 3]
    # The activations crossed HTTP without their code: the container ran its creation's action.
    assert {r["v"] for r in results} == {1}
    assert len({r["pid"] for r in results}) == 1  # one warm container served them all
    assert invoker.container_count() == 1
    # Its `started` went over HTTP too: the scheduler counts it.
    (queue,) = cluster.scheduler._queues.values()
    await until(lambda: queue.containers == set(invoker._containers), "the started notification")


async def test_the_endpoint_wants_the_token_and_a_well_formed_body(cluster: Cluster) -> None:
    fetch = f"{cluster.url}{INTERNAL_PREFIX}/queues/fetch"
    good = {"queue": queue_key_json(KEY),
            "container_id": "invoker0/c1", "last_duration_ms": None, "timeout_s": 0}  # fmt: skip
    async with httpx.AsyncClient(timeout=5) as http:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            refused = await http.post(fetch, json=good, headers=headers)
            assert refused.status_code == 401
            assert refused.json()["code"] == "internal" and TOKEN not in refused.text
        auth = {"authorization": f"Bearer {TOKEN}"}
        bad_bodies: list[Any] = [
            "not json",
            [],
            {**good, "queue": "guest/echo"},
            {**good, "queue": {"ns": "guest", "action": "guest/echo", "rev": "1"}},
            {**good, "container_id": 7},
            {**good, "timeout_s": -1},
            {**good, "timeout_s": "soon"},
            {**good, "last_duration_ms": "fast"},
            {k: v for k, v in good.items() if k != "container_id"},
        ]
        for body in bad_bodies:
            content = body if isinstance(body, str) else None
            answer = await http.post(fetch, headers=auth, content=content,
                                     json=None if content is not None else body)  # fmt: skip
            assert answer.status_code == 400, (body, answer.text)
            assert set(answer.json()) == {"error", "code"}
        failed = {"queue": good["queue"], "creation_id": "x", "error": "e", "developer": "yes"}
        answer = await http.post(f"{cluster.url}{INTERNAL_PREFIX}/queues/creation-failed",
                                 headers=auth, json=failed)  # fmt: skip
        assert answer.status_code == 400
        # Well formed, but no such queue: 410 tells the container to stop.
        gone = await http.post(fetch, headers=auth, json=good)
        assert gone.status_code == 410 and "gone" in gone.json()["error"]


async def test_a_removed_queue_stops_its_containers(cluster: Cluster) -> None:
    invoker = await cluster.add_invoker("invoker0")
    first = message(action(1), 1, n=1)
    cluster.scheduler.accept(first)
    assert (await cluster.completion(first.activation_id)).record["response"]["result"]["v"] == 1
    (old,) = list(invoker._containers)
    # A new revision retires the old queue: its parked container is told 410 and stops.
    second = message(action(2), 2, n=2)
    cluster.scheduler.accept(second)
    assert (await cluster.completion(second.activation_id)).record["response"]["result"]["v"] == 2
    await until(lambda: old not in invoker._containers, "the old revision's container stop")
    assert invoker.container_count() == 1


async def test_containers_end_when_the_scheduler_dies(cluster: Cluster) -> None:
    invoker = await cluster.add_invoker("invoker0")
    warm = message(action(), 1, n=1)
    cluster.scheduler.accept(warm)
    await cluster.completion(warm.activation_id)
    assert invoker.container_states()["warm"] == 1  # parked in a long poll (600 s)
    started = time.monotonic()
    cluster.crash_server()
    await until(lambda: invoker.container_count() == 0, "the parked container's end")
    assert time.monotonic() - started < 5
    await cluster.serving
    # Nothing answers at that address any more: a container it asked for before it died ends
    # at its first fetch.
    invoker.create_container(ContainerCreation("late", KEY, action(), "scheduler0"))
    assert invoker.container_count() == 1
    await until(lambda: invoker.container_count() == 0, "the unreachable container's end")


# -- a dead invoker ------------------------------------------------------------------------------


async def test_a_dead_invokers_activations_fail_and_the_rest_run_elsewhere(
    cluster: Cluster,
) -> None:
    doomed = await cluster.add_invoker("invoker0")
    survivor = await cluster.add_invoker("invoker1")
    one = action(instances=1)  # one container: the second activation waits in the queue
    running, waiting = message(one, 1, n=1, s=30), message(one, 1, n=2)
    cluster.scheduler.accept(running)
    await until(lambda: doomed.container_states()["busy"] == 1, "the first activation's start")
    cluster.scheduler.accept(waiting)
    # The invoker dies: it reaches nobody any more and its containers are gone.
    cluster.reachable["invoker0"] = False
    await doomed.close()
    cluster.choice[0] = "invoker1"
    cluster.scheduler.invoker_gone("invoker0")

    failed = await cluster.completion(running.activation_id)
    assert failed.record["response"]["statusCode"] == WHISK_ERROR
    assert failed.record["response"]["result"] == {"error": INVOKER_GONE}
    stored = await cluster.activations.get("guest", running.activation_id)
    assert stored is not None and stored["response"]["result"] == {"error": INVOKER_GONE}
    # The waiting one got a new container on the surviving invoker.
    done = await cluster.completion(waiting.activation_id)
    assert done.record["response"]["statusCode"] == 0
    assert done.record["response"]["result"]["n"] == 2
    assert survivor.container_count() == 1


async def test_creations_pending_on_a_dead_invoker_are_made_again(cluster: Cluster) -> None:
    survivor = await cluster.add_invoker("invoker1")
    cluster.choice[0] = "invoker9"  # never answers: its creation stays pending
    sent = message(action(), 1, n=1)
    cluster.scheduler.accept(sent)
    assert cluster.scheduler.queue_stats() == (1, 1, 1)
    cluster.choice[0] = "invoker1"
    cluster.scheduler.invoker_gone("invoker9")
    done = await cluster.completion(sent.activation_id)
    assert done.record["response"]["result"]["n"] == 1
    assert survivor.container_count() == 1
    assert cluster.scheduler.queue_stats()[2] == 0


# -- long polls whose caller is gone ---------------------------------------------------------------


async def fetch_over_http(
    http: httpx.AsyncClient, cluster: Cluster, container_id: str, timeout_s: float
) -> httpx.Response:
    body = {"queue": queue_key_json(KEY), "container_id": container_id,
            "last_duration_ms": None, "timeout_s": timeout_s}  # fmt: skip
    return await http.post(f"{cluster.url}{INTERNAL_PREFIX}/queues/fetch", json=body,
                           headers={"authorization": f"Bearer {TOKEN}"})  # fmt: skip


def parked(cluster: Cluster) -> int:
    return sum(q.idle_waiters() for q in cluster.scheduler._queues.values())


async def test_an_abandoned_long_poll_gets_no_activation(cluster: Cluster) -> None:
    cluster.choice[0] = "invoker9"  # nobody: the test's HTTP calls are the only container
    first = message(action(), 1, n=1)
    cluster.scheduler.accept(first)
    async with httpx.AsyncClient(timeout=30) as http:
        taken = await fetch_over_http(http, cluster, "invoker9/c1", 0)
        assert taken.status_code == 200
        assert taken.json()["message"]["activation_id"] == first.activation_id
        assert "code" not in taken.json()["message"]["action"]["exec"]
        polling = asyncio.create_task(fetch_over_http(http, cluster, "invoker9/c1", 30))
        await until(lambda: parked(cluster) == 1, "the long poll parking")
        polling.cancel()  # the caller goes away: its connection closes
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await until(lambda: parked(cluster) == 0, "the scheduler noticing the closed connection")
        second = message(action(), 1, n=2)
        cluster.scheduler.accept(second)
        assert cluster.scheduler.queue_stats()[1] == 1  # queued, not handed to a closed socket
        again = await fetch_over_http(http, cluster, "invoker9/c1", 0)
        assert again.json()["message"]["activation_id"] == second.activation_id


async def test_a_long_poll_of_a_gone_invoker_is_told_to_stop(cluster: Cluster) -> None:
    cluster.choice[0] = "invoker7"
    cluster.scheduler.accept(message(action(), 1, n=1))
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await fetch_over_http(http, cluster, "invoker7/c1", 0)).status_code == 200
        polling = asyncio.create_task(fetch_over_http(http, cluster, "invoker7/c1", 30))
        await until(lambda: parked(cluster) == 1, "the long poll parking")
        cluster.scheduler.invoker_gone("invoker7")
        assert (await polling).status_code == 410


async def test_an_activation_a_stopped_container_never_received_waits_again(
    cluster: Cluster,
) -> None:
    cluster.choice[0] = "invoker9"
    stopped = f"{cluster.url}{INTERNAL_PREFIX}/queues/stopped"
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(timeout=30) as http:
        for received in (True, False):
            sent = message(action(), 1, n=1)
            cluster.scheduler.accept(sent)
            taken = await fetch_over_http(http, cluster, "invoker9/c1", 0)
            assert taken.json()["message"]["activation_id"] == sent.activation_id
            # The container reports what it was last handed: the one it ran, or an earlier one
            # (the answer carrying this one was lost with its connection).
            last = sent.activation_id if received else None
            body = {"queue": queue_key_json(KEY), "container_id": "invoker9/c1",
                    "last_received": last}  # fmt: skip
            assert (await http.post(stopped, json=body, headers=auth)).status_code == 204
            assert cluster.scheduler.queue_stats()[1] == (0 if received else 1)
        again = await fetch_over_http(http, cluster, "invoker9/c2", 0)
        assert again.json()["message"]["activation_id"] == sent.activation_id


# -- a scheduler that hangs; notifications that cannot go ------------------------------------------


async def test_a_hung_scheduler_ends_its_containers_after_the_fetch_timeout(
    cluster: Cluster,
) -> None:
    # Accepts connections and reads requests, never answers: a SIGSTOPped scheduler.
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    hung = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    try:
        invoker = await cluster.add_invoker(
            "invoker0", lambda _id: f"http://127.0.0.1:{port}", idle_container_s=0.5
        )
        started = time.monotonic()
        invoker.create_container(ContainerCreation("c", KEY, action(), "scheduler0"))
        await until(lambda: invoker.container_count() == 0, "the hung fetch's end")
        # 0.5 s asked of the scheduler, plus the grace the HTTP call gives it.
        assert 2.0 < time.monotonic() - started < 2.5 + 3
    finally:
        hung.close()


async def test_notifications_are_bounded_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: every call is refused
    client = InternalClient(TOKEN)
    endpoint = RemoteQueueEndpoint("scheduler0", lambda _id: nowhere, client, max_pending=2)
    try:
        with caplog.at_level(logging.INFO, logger="squall.invoker"):
            for n in range(6):
                endpoint.container_stopped(KEY, f"invoker0/c{n}", None)
            started = time.monotonic()
            await endpoint.close()
        assert time.monotonic() - started < 3
    finally:
        await client.close()
    full = [r for r in caplog.records if "not taking notifications" in r.getMessage()]
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(full) == 1  # once for the episode, not once per notification
    assert len(dropped) == 2  # the two the backlog held were tried, in order, and failed
