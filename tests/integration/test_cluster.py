"""Cluster mode end to end: controllers, schedulers and invokers as separate processes over real
Kafka (Tansu), real etcd and a real PostgreSQL, on loopback; and what happens when one of them,
the broker or etcd dies.

Every wait is bounded; every failure message carries the processes' logs.
"""

from __future__ import annotations

import collections
import concurrent.futures
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from squall.testing import (
    LocalCluster,
    LocalEtcd,
    LocalEtcdCluster,
    LocalPostgres,
    LocalTansu,
    RoleProcess,
)
from tests.conftest import GUEST_AUTH

pytestmark = pytest.mark.slow

LEASE_TTL_S = 2.0
SLEEPY = "import time\ndef main(args):\n    time.sleep(args.get('s', 0))\n    return {'ok': True}\n"
ECHO = "def main(args):\n    return {'got': args}\n"


def auth() -> tuple[str, str]:
    user, _, key = GUEST_AUTH.partition(":")
    return user, key


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, logs: Callable[[], str]
               ) -> Any:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout_s} s\n{logs()}")


def cluster_env(tansu: LocalTansu, etcd_endpoints: str, postgres: LocalPostgres, db: str
                ) -> dict[str, str]:  # fmt: skip
    return {
        "SQUALL_BUS": "kafka",
        "SQUALL_KAFKA_BOOTSTRAP": tansu.bootstrap,
        "SQUALL_COORDINATION": "etcd",
        "SQUALL_ETCD_ENDPOINTS": etcd_endpoints,
        "SQUALL_ETCD_LEASE_TTL_S": str(LEASE_TTL_S),
        "SQUALL_ETCD_PREFIX": db,  # one key space per cluster
        "SQUALL_KAFKA_TOPIC_PREFIX": f"{db}-",
        "SQUALL_ENTITY_STORE": postgres.url(db),
        "SQUALL_ACTIVATION_STORE": postgres.url(db),
        "SQUALL_GUEST_AUTH": GUEST_AUTH,
        "SQUALL_CLUSTER_TOKEN": "cluster-test-token",
        "SQUALL_PREWARM_COUNT": "1",
        "SQUALL_LIMITS_INVOCATIONS_PER_MINUTE": "100000",
        "SQUALL_LIMITS_FIRES_PER_MINUTE": "100000",
        "SQUALL_LIMITS_CONCURRENT_INVOCATIONS": "1000",
    }


class Cluster:
    """Two of each role (or fewer), and an API client per controller."""

    def __init__(self, local: LocalCluster) -> None:
        self.local = local
        self.members: dict[str, RoleProcess] = {}

    def start(self, role: str, member_id: str, **kwargs: Any) -> RoleProcess:
        member = self.local.start(role, member_id, **kwargs)
        self.members[member_id] = member
        return member

    def api(self, controller: str = "controller0") -> httpx.Client:
        base = self.members[controller].url
        return httpx.Client(base_url=base, auth=auth(), timeout=30)

    def logs(self) -> str:
        return "\n".join(f"--- {m.member_id} ---\n{m.output()[-3000:]}"
                         for m in self.members.values())  # fmt: skip

    def ready(self, member_id: str) -> bool:
        return LocalCluster.ready(self.members[member_id])

    def readyz(self, member_id: str) -> dict[str, Any]:
        try:
            reply = httpx.get(self.members[member_id].url + "/readyz", timeout=2)
            return dict(reply.json())
        except (httpx.HTTPError, ValueError):
            return {}


@pytest.fixture
def make_cluster(
    tansu: LocalTansu, etcd_server: LocalEtcd, postgres_server: LocalPostgres
) -> Iterator[Callable[..., Cluster]]:
    made: list[LocalCluster] = []

    def make(etcd_endpoints: str | None = None, broker: LocalTansu | None = None) -> Cluster:
        db = f"c{uuid.uuid4().hex[:10]}"
        postgres_server.create_database(db)
        env = cluster_env(broker or tansu, etcd_endpoints or etcd_server.endpoint,
                          postgres_server, db)  # fmt: skip
        local = LocalCluster(env)
        made.append(local)
        return Cluster(local)

    yield make
    for local in made:
        local.close()


def put_action(api: httpx.Client, name: str, code: str, **limits: int) -> None:
    body: dict[str, Any] = {"exec": {"kind": "python:3", "code": code}}
    if limits:
        body["limits"] = limits
    reply = api.put(f"/api/v1/namespaces/_/actions/{name}", json=body)
    assert reply.status_code == 200, reply.text


def invoke(api: httpx.Client, name: str, **params: Any) -> httpx.Response:
    return api.post(f"/api/v1/namespaces/_/actions/{name}", params={"blocking": "true"},
                    json=params)  # fmt: skip


def records(api: httpx.Client, name: str) -> list[dict[str, Any]]:
    reply = api.get("/api/v1/namespaces/_/activations",
                    params={"name": name, "docs": "true", "limit": "200"})  # fmt: skip
    assert reply.status_code == 200, reply.text
    return list(reply.json())


def one_of_each(cluster: Cluster, count: int = 1) -> None:
    for n in range(count):
        cluster.start("scheduler", f"scheduler{n}")
        cluster.start("invoker", f"invoker{n}")
    for n in range(count):
        cluster.start("controller", f"controller{n}")


# -- the happy path ------------------------------------------------------------------------------


def test_one_of_each_role_runs_actions_and_alarms(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster()
    one_of_each(cluster)
    with cluster.api() as api:
        put_action(api, "echo", ECHO)
        first = invoke(api, "echo", n=1)
        assert first.status_code == 200, first.text + cluster.logs()
        assert first.json()["response"]["result"] == {"got": {"n": 1}}
        warm = [invoke(api, "echo", n=i) for i in range(20)]
        assert all(r.status_code == 200 for r in warm), cluster.logs()
        # The record was written by the invoker process (in batches, within milliseconds), and
        # is read back through the controller.
        activation_id = warm[-1].json()["activationId"]
        path = f"/api/v1/namespaces/_/activations/{activation_id}"
        stored = wait_until(lambda: (r := api.get(path)).status_code == 200 and r, 5,
                            "the record", cluster.logs)  # fmt: skip
        assert stored.json()["response"]["result"]["got"] == {"n": 19}

        # An alarm created through the controller lives on the scheduler and fires the rule.
        trigger, rule = unique("tick"), unique("rule")
        assert api.put(f"/api/v1/namespaces/_/triggers/{trigger}", json={}).status_code == 200
        reply = api.put(f"/api/v1/namespaces/_/rules/{rule}",
                        json={"trigger": f"/_/{trigger}", "action": "/_/echo"})  # fmt: skip
        assert reply.status_code == 200, reply.text
        created = feed(api, trigger, "CREATE", cron="* * * * * *")
        assert created.status_code == 200, created.text + cluster.logs()
        read = feed(api, trigger, "READ").json()["response"]["result"]
        assert read["config"]["cron"] == "* * * * * *" and len(read["next"]) >= 2
        wait_until(lambda: len(records(api, trigger)) >= 2, 10, "two alarm fires", cluster.logs)
        assert feed(api, trigger, "DELETE").status_code == 200


def feed(api: httpx.Client, trigger: str, event: str, **params: Any) -> httpx.Response:
    body = {"lifecycleEvent": event, "triggerName": f"/_/{trigger}", "authKey": GUEST_AUTH,
            **params}  # fmt: skip
    return api.post("/api/v1/namespaces/whisk.system/actions/alarms/alarm",
                    params={"blocking": "true"}, json=body)  # fmt: skip


def test_a_role_process_without_shared_backends_exits_2_with_what_to_set(
    tmp_path: Any,
) -> None:
    local = LocalCluster({"SQUALL_BUS": "memory"}, root=tmp_path)
    member = local.start("scheduler", "scheduler0", wait=False)
    assert member.process.wait(timeout=30) == 2
    output = member.output()
    assert "SQUALL_BUS=kafka" in output and "SQUALL_COORDINATION=etcd" in output
    assert "Traceback" not in output


# -- failover --------------------------------------------------------------------------------------


def test_killed_scheduler_hands_its_alarms_over_without_double_fires(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    one_of_each(cluster, 2)
    with cluster.api() as api:
        put_action(api, "echo", ECHO)
        triggers = [unique("tick") for _ in range(8)]  # spread over both schedulers' shards
        for trigger in triggers:
            assert api.put(f"/api/v1/namespaces/_/triggers/{trigger}", json={}).status_code == 200
            rule = api.put(f"/api/v1/namespaces/_/rules/r-{trigger}",
                           json={"trigger": f"/_/{trigger}", "action": "/_/echo"})  # fmt: skip
            assert rule.status_code == 200, rule.text
            created = feed(api, trigger, "CREATE", cron="* * * * * *")
            assert created.status_code == 200, created.text + cluster.logs()
        wait_until(lambda: all(records(api, t) for t in triggers), 10, "every alarm fires",
                   cluster.logs)  # fmt: skip
        cluster.members["scheduler0"].kill()
        killed_at = time.time()
        time.sleep(LEASE_TTL_S + 4)
        fires = {t: records(api, t) for t in triggers}
        runs = records(api, "echo")
    # Every alarm fired again after the kill, the first time within the lease TTL + 1 s of the
    # first tick it missed (ticks are whole seconds; a fire starts within a second of its tick).
    for trigger, made in fires.items():
        after = sorted(r["start"] / 1000 for r in made if r["start"] / 1000 > killed_at)
        assert after, f"{trigger} did not fire after the kill\n{cluster.logs()}"
        assert after[0] - killed_at <= LEASE_TTL_S + 1 + 1.5, (trigger, after[0] - killed_at)
    # No tick fired twice. A tick's trigger activation id is derived from (trigger, instant),
    # so a second fire of it would run the rule's action again with the same cause.
    causes = collections.Counter(r.get("cause") for r in runs)
    assert runs and max(causes.values()) == 1, causes.most_common(3)


def test_killed_invoker_mid_activation_ends_with_a_record(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    one_of_each(cluster, 2)
    with cluster.api() as api:
        put_action(api, "sleepy", SLEEPY)
        assert invoke(api, "sleepy").status_code == 200  # warm somewhere
        accepted = api.post("/api/v1/namespaces/_/actions/sleepy", json={"s": 30})
        assert accepted.status_code == 202, accepted.text
        activation_id = accepted.json()["activationId"]
        busy = wait_until(lambda: _busy_invoker(cluster), 10, "an invoker running it",
                          cluster.logs)  # fmt: skip
        cluster.members[busy].kill()

        def record() -> dict[str, Any] | None:
            reply = api.get(f"/api/v1/namespaces/_/activations/{activation_id}")
            return dict(reply.json()) if reply.status_code == 200 else None

        done = wait_until(record, LEASE_TTL_S + 10, "a record for the lost activation",
                          cluster.logs)  # fmt: skip
        assert done["response"]["status"] == "whisk internal error", done
        assert "invoker" in str(done["response"]["result"]["error"]).lower(), done
        # The survivor keeps running the action.
        again = invoke(api, "sleepy")
        assert again.status_code == 200, again.text + cluster.logs()


def _busy_invoker(cluster: Cluster) -> str | None:
    for member_id, member in cluster.members.items():
        if member.role != "invoker" or member.process.poll() is not None:
            continue
        metrics = httpx.get(member.url + "/metrics", timeout=2).text
        if 'squall_containers{state="busy"} 1.0' in metrics:
            return member_id
    return None


def test_killed_controller_leaves_the_other_serving_and_records_written(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    one_of_each(cluster, 2)
    with cluster.api("controller0") as first, cluster.api("controller1") as second:
        put_action(first, "sleepy", SLEEPY)
        assert invoke(second, "sleepy").status_code == 200
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            doomed = [pool.submit(_invoke_quietly, cluster, "controller0", 1.5) for _ in range(4)]
            survivors = [pool.submit(_invoke_quietly, cluster, "controller1", 1.5)
                         for _ in range(4)]  # fmt: skip
            time.sleep(0.7)
            cluster.members["controller0"].kill()
            answered = [f.result(timeout=60) for f in survivors]
            lost = [f.result(timeout=60) for f in doomed]
        assert answered == [200] * 4, cluster.logs()
        assert all(status is None for status in lost)  # the connection died with the process
        # Every accepted activation got its record, also those whose controller died.
        wait_until(lambda: len(records(second, "sleepy")) >= 1 + 8, 20,
                   "records of all eight activations", cluster.logs)  # fmt: skip


def _invoke_quietly(cluster: Cluster, controller: str, sleep_s: float) -> int | None:
    try:
        with cluster.api(controller) as api:
            return invoke(api, "sleepy", s=sleep_s).status_code
    except httpx.HTTPError:
        return None


def test_broker_restart_is_survived_without_restarting_anything(
    make_cluster: Callable[..., Cluster], tansu: LocalTansu
) -> None:
    broker = LocalTansu(tansu.binary)
    broker.start()
    try:
        cluster = make_cluster(broker=broker)
        one_of_each(cluster)
        with cluster.api() as api:
            put_action(api, "echo", ECHO)
            assert invoke(api, "echo").status_code == 200
            broker.stop()
            time.sleep(1)
            broker.start()
            wait_until(lambda: invoke(api, "echo").status_code == 200, 30,
                       "an invoke after the broker restart", cluster.logs)  # fmt: skip
        assert all(m.process.poll() is None for m in cluster.members.values())
    finally:
        broker.stop()


def test_etcd_down_turns_members_not_ready_and_they_recover_by_themselves(
    make_cluster: Callable[..., Cluster], etcd_server: LocalEtcd
) -> None:
    etcd = LocalEtcd(etcd_server.binary)
    etcd.start()
    try:
        cluster = make_cluster(etcd_endpoints=etcd.endpoint)
        one_of_each(cluster)
        with cluster.api() as api:
            put_action(api, "echo", ECHO)
            assert invoke(api, "echo").status_code == 200
            etcd.stop()
            wait_until(lambda: not any(cluster.ready(m) for m in cluster.members),
                       LEASE_TTL_S + 10, "every member not ready", cluster.logs)  # fmt: skip
            assert all(m.process.poll() is None for m in cluster.members.values())
            assert "etcd" in str(cluster.readyz("controller0")), cluster.readyz("controller0")
            etcd.start()
            wait_until(lambda: all(cluster.ready(m) for m in cluster.members), 30,
                       "every member ready again", cluster.logs)  # fmt: skip
            wait_until(lambda: invoke(api, "echo").status_code == 200, 15,
                       "an invoke after etcd came back", cluster.logs)  # fmt: skip
    finally:
        etcd.remove()


def test_killing_the_etcd_leader_does_not_interrupt_serving(
    make_cluster: Callable[..., Cluster], etcd_server: LocalEtcd
) -> None:
    etcd = LocalEtcdCluster(etcd_server.binary)  # its own: this test takes a member away
    etcd.start()
    try:
        cluster = make_cluster(etcd_endpoints=",".join(etcd.endpoints))
        one_of_each(cluster, 2)
        with cluster.api("controller1") as api:
            put_action(api, "echo", ECHO)
            assert invoke(api, "echo").status_code == 200
            etcd.leader().kill()
            statuses: collections.Counter[int] = collections.Counter()
            until = time.monotonic() + 3 * LEASE_TTL_S
            while time.monotonic() < until:
                try:
                    statuses[invoke(api, "echo").status_code] += 1
                except httpx.HTTPError as exc:  # a hang or a dropped connection, with the logs
                    raise AssertionError(f"{exc!r} after {statuses}\n{cluster.logs()}") from exc
            assert set(statuses) == {200}, (statuses, cluster.logs())
            # Nobody lost its lease or its place: every member is still ready.
            wait_until(lambda: all(cluster.ready(m) for m in cluster.members), 10,
                       "every member ready", cluster.logs)  # fmt: skip
        assert all(m.process.poll() is None for m in cluster.members.values())
    finally:
        etcd.remove()


def test_a_role_refused_by_the_broker_stays_live_and_says_what_to_set(
    make_cluster: Callable[..., Cluster], tansu_auth: LocalTansu
) -> None:
    """An invoker (any role) against a broker that demands SASL, with no SASL settings: not
    ready within 2 s of answering, naming the broker, the mechanism and the settings; it keeps
    running and logs the reason once, not per retry."""
    cluster = make_cluster(broker=tansu_auth)
    member = cluster.start("invoker", "invoker0", wait=False)

    def answering() -> bool:
        try:
            return httpx.get(member.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return member.process.poll() is not None  # exited: stop waiting, fail below

    wait_until(answering, 30, "the invoker answering /healthz", cluster.logs)
    assert member.process.poll() is None, cluster.logs()
    answered = time.monotonic()

    def kafka_refused() -> dict[str, Any] | None:
        check = cluster.readyz("invoker0").get("checks", {}).get("kafka", {})
        return check if check.get("state") == "unavailable" else None

    kafka = wait_until(kafka_refused, 10, "the kafka check refused", cluster.logs)
    assert time.monotonic() - answered < 2.0
    assert tansu_auth.bootstrap in kafka["reason"] and "SASL" in kafka["reason"], kafka
    assert "SQUALL_KAFKA_SASL_MECHANISM" in kafka["fix"], kafka
    time.sleep(3)
    assert member.process.poll() is None
    assert httpx.get(member.url + "/healthz", timeout=2).status_code == 200
    assert member.output().count("readiness: kafka is not ready") == 1, member.output()
