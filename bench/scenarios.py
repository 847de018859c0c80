"""The measurements: warm latency and throughput beside the baseline, cold starts, memory, and
alarms beside APScheduler (bench/alarms.py)."""

from __future__ import annotations

import http.client
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench import alarms, celery_bench, cluster, composition, stores, throughput
from bench.api import ACTIONS, Invocation, SquallClient
from bench.loadgen import LoadgenProcess, Target
from bench.procinfo import cpu_per_op, cpu_snapshot, tree_memory
from bench.servers import HOST, Server, baseline_server, squall_server
from bench.stats import summarize_ms

WARM_ACTION = "bench-hello"
SETTLE_S = 1.0  # lets stem cells fill before cold starts and sandboxes go idle before memory

# The tenant's quotas (OpenWhisk's defaults: 60 invocations a minute, 30 in flight) are policy,
# not cost: lifted everywhere so the figures show what the platform can do (with 30 in flight
# allowed, a third of 32 clients' requests were 429s, fast answers that are no invokes).
UNTHROTTLED = {
    "SQUALL_LIMITS_INVOCATIONS_PER_MINUTE": "100000000",
    "SQUALL_LIMITS_CONCURRENT_INVOCATIONS": "1000",
}
# Cold starts and memory leave one parked container per action: room for all of them, so no
# measurement includes evicting an idle container.
ROOMY = {**UNTHROTTLED, "SQUALL_USER_MEMORY_MB": "20000"}
SETTINGS = {
    "warm": dict(UNTHROTTLED),
    "cold_steady": dict(ROOMY),
    "cold_burst": dict(ROOMY),
    "cold_no_prewarm": {**ROOMY, "SQUALL_PREWARM_COUNT": "0"},
    "memory": {**ROOMY, "SQUALL_PREWARM_COUNT": "0"},
    "nodejs": dict(ROOMY),
}


@dataclass(frozen=True)
class Plan:
    """How much of everything one run does; every loop is bounded by these."""

    smoke: bool
    latency_warmup: int
    latency_count: int
    latency_max_s: float
    connections: int
    throughput_s: float
    throughput_warmup_s: float
    cold_actions: int
    cold_pause_s: float
    memory_actions: int
    phase_max_s: float
    use_wrk: bool = True
    # alarms (bench/alarms.py): triggers firing once a minute at second i mod 60, idle yearly
    # ones, and the timing of one run: first boot, warm-up, the measured window, stop margin
    alarm_firing: int = 60_000
    alarm_idle: int = 40_000
    alarm_first_boot_s: float = 30.0
    # The seeded alarms' first ticks come this long after seeding starts: seeding and the
    # first boot take ~15 s, so the first boot starts on time, not behind a seed backlog.
    alarm_seed_lead_s: float = 20.0
    # After the restart, how long the harness waits at most for the restart's backlog (the
    # ticks due while the platform was down) to be fired, before the window starts anyway.
    alarm_catchup_max_s: float = 150.0
    alarm_spread_jitter_s: float = 1.0
    alarm_warmup_s: float = 15.0
    alarm_window_s: float = 50.0
    alarm_stop_margin_s: float = 2.0
    alarm_boot_timeout_s: float = 180.0
    store_write_records: int = 20_000
    store_seed_records: int = 1_000_000
    store_query_calls: int = 300
    # concurrency sweeps (phases `concurrency` and `celery`): closed-loop clients per level
    sweep_levels: tuple[int, ...] = (1, 4, 16, 32, 64)
    sweep_s: float = 5.0
    sweep_warmup_s: float = 1.0
    # cluster mode (bench/cluster.py): alarms firing every second across two schedulers
    cluster_alarms: int = 1_000
    cluster_alarm_warmup_s: float = 20.0
    cluster_alarm_window_s: float = 10.0  # CPU and fires counted over it, burst and spread
    # cluster warm invokes at concurrency 1 (each a fresh broker's worth: see bench/cluster.py)
    cluster_latency_warmup: int = 100
    cluster_latency_count: int = 1_000

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


FULL = Plan(False, 500, 5000, 60.0, 32, 8.0, 2.0, 30, 0.05, 100, 300.0)
SMOKE = replace(
    Plan(True, 20, 200, 10.0, 8, 1.0, 0.5, 3, 0.05, 5, 30.0),
    alarm_firing=360,
    alarm_idle=240,
    alarm_first_boot_s=1.0,
    alarm_seed_lead_s=2.0,
    alarm_catchup_max_s=20.0,
    alarm_warmup_s=1.0,
    alarm_window_s=5.0,
    alarm_stop_margin_s=1.0,
    alarm_boot_timeout_s=60.0,
    store_write_records=500,
    store_seed_records=5_000,
    store_query_calls=20,
    sweep_levels=(1, 4),
    sweep_s=1.0,
    sweep_warmup_s=0.3,
    cluster_alarms=20,
    cluster_alarm_warmup_s=3.0,
    cluster_alarm_window_s=2.0,
)


# -- warm: latency and throughput, Squall beside the baseline ---------------------------------


def latency(server: Server, target: Target, plan: Plan) -> dict[str, Any]:
    """Concurrency 1 from a separate loadgen process; CPU measured around the run only."""
    argv = [
        "latency", "--host", target.host, "--port", str(target.port),
        "--method", target.method, "--path", target.path, "--body", target.body.decode(),
        "--warmup", str(plan.latency_warmup), "--count", str(plan.latency_count),
        "--max-seconds", str(plan.latency_max_s),
    ]  # fmt: skip
    with LoadgenProcess(argv, target.auth) as gen:
        gen.wait_ready(plan.latency_max_s + 30)
        main = server.process()
        before = cpu_snapshot(main)
        gen.go()
        result = gen.result(plan.latency_max_s + 30)
        after = cpu_snapshot(main)
    result["cpu"] = cpu_per_op(before, after, result["requests"] + result["errors"])
    return result


def prepare_warm_action(server: Server) -> Invocation:
    client = SquallClient(server)
    try:
        client.put_action(WARM_ACTION, memory_mb=128)
        first = client.invoke(WARM_ACTION)
    finally:
        client.close()
    if not first.succeeded:
        raise RuntimeError(f"the trivial action failed: {first.record.get('response')}")
    return first


def record_persisted(server: Server, activation_id: str) -> bool:
    """The activation record is readable back through the API."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
    headers = SquallClient.auth_headers(server)
    try:
        for _ in range(50):  # the store may write behind: up to ~1 s
            conn.request("GET", f"/api/v1/namespaces/_/activations/{activation_id}", None, headers)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return True
            time.sleep(0.02)
        return False
    finally:
        conn.close()


def phase_warm(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": SETTINGS["warm"]}
    with baseline_server() as base, squall_server(SETTINGS["warm"]) as squall:
        out["stem_cells_memory"] = tree_memory(squall.process())
        first = prepare_warm_action(squall)
        out["record_persisted"] = record_persisted(squall, first.record["activationId"])
        base_target = Target(HOST, base.port, "GET", "/")
        path = f"{ACTIONS}/{WARM_ACTION}?blocking=true"
        squall_target = Target(HOST, squall.port, "POST", path, b"{}", squall.auth)
        out["latency"] = {
            "baseline": latency(base, base_target, plan),
            "squall": latency(squall, squall_target, plan),
        }
        out["memory_after_latency"] = tree_memory(squall.process())
        out["throughput"] = {
            name: measure_throughput(server, target, plan)
            for name, server, target in (
                ("baseline", base, base_target),
                ("squall", squall, squall_target),
            )
        }
        out["memory_after_throughput"] = tree_memory(squall.process())
    return out


def measure_throughput(server: Server, target: Target, plan: Plan) -> dict[str, Any]:
    return throughput.measure(
        server,
        target,
        plan.connections,
        plan.throughput_s,
        plan.throughput_warmup_s,
        plan.use_wrk,
    )


def phase_concurrency(plan: Plan) -> dict[str, Any]:
    """Throughput and latency against the number of concurrent clients, Squall's blocking
    invoke beside the bare baseline, with wrk (or the Python load generator)."""
    out: dict[str, Any] = {"settings": SETTINGS["warm"], "levels": list(plan.sweep_levels)}
    with baseline_server() as base, squall_server(SETTINGS["warm"]) as squall:
        prepare_warm_action(squall)
        path = f"{ACTIONS}/{WARM_ACTION}?blocking=true"
        targets = {
            "baseline": (base, Target(HOST, base.port, "GET", "/")),
            "squall": (squall, Target(HOST, squall.port, "POST", path, b"{}", squall.auth)),
        }
        for name, (server, target) in targets.items():
            out[name] = {
                str(level): throughput.measure(
                    server, target, level, plan.sweep_s, plan.sweep_warmup_s, plan.use_wrk
                )
                for level in plan.sweep_levels
            }
        out["memory_after"] = tree_memory(squall.process())
    return out


# -- cold starts -------------------------------------------------------------------------------


def invoke_each(
    client: SquallClient, names: list[str], pause_s: float, max_s: float
) -> list[Invocation]:
    calls: list[Invocation] = []
    deadline = time.monotonic() + max_s
    for name in names:
        calls.append(client.invoke(name))
        if time.monotonic() > deadline:
            break
        if pause_s:
            time.sleep(pause_s)
    return calls


def summarize_cold(calls: list[Invocation]) -> dict[str, Any]:
    inits = [c.annotation("initTime") for c in calls]
    waits = [c.annotation("waitTime") for c in calls]
    return {
        "invocations": len(calls),
        "cold": sum(1 for i in inits if i is not None),
        "failed": sum(1 for c in calls if not c.succeeded),
        "client": summarize_ms([c.client_ms for c in calls]),
        "init_time": summarize_ms([float(i) for i in inits if i is not None]),
        "wait_time": summarize_ms([float(w) for w in waits if w is not None]),
        "duration": summarize_ms([float(c.record.get("duration", 0)) for c in calls]),
    }


def phase_cold(plan: Plan, label: str, pause_s: float) -> dict[str, Any]:
    """Invoke `plan.cold_actions` fresh actions once each (default memory: stem cells fit)."""
    settings = SETTINGS[label]
    with squall_server(settings) as squall:
        client = SquallClient(squall)
        try:
            client.put_action(f"{label}-first")
            client.invoke(f"{label}-first")  # one-time costs of a fresh server, not counted
            names = [f"{label}-{i}" for i in range(plan.cold_actions)]
            for name in names:
                client.put_action(name)
            time.sleep(SETTLE_S)
            main = squall.process()
            before = cpu_snapshot(main)
            calls = invoke_each(client, names, pause_s, plan.phase_max_s)
            after = cpu_snapshot(main)
        finally:
            client.close()
    result = summarize_cold(calls)
    result.update(settings=settings, pause_s=pause_s, cpu=cpu_per_op(before, after, len(calls)))
    return result


# -- memory: an idle platform, then N warm sandboxes -----------------------------------------


def phase_memory(plan: Plan) -> dict[str, Any]:
    settings = SETTINGS["memory"]
    with squall_server(settings) as squall:
        main = squall.process()
        empty = tree_memory(main)
        client = SquallClient(squall)
        try:
            names = [f"mem-{i}" for i in range(plan.memory_actions)]
            for name in names:
                client.put_action(name, memory_mb=128)
            started = time.monotonic()
            calls = invoke_each(client, names, 0.0, plan.phase_max_s)
            elapsed = time.monotonic() - started
        finally:
            client.close()
        time.sleep(SETTLE_S)
        loaded = tree_memory(main)
    return {
        "settings": settings,
        "actions": len(names),
        "invoked": len(calls),
        "failed": sum(1 for c in calls if not c.succeeded),
        "invoke_elapsed_s": round(elapsed, 2),
        "empty": empty,
        "loaded": loaded,
    }


# -- Node.js: cold starts and warm invokes, beside Python on the same server ------------------

NODE_MEMORY_MB = 256  # the shipped manifest's Node.js stem cells: a cold start can take one


def phase_nodejs(plan: Plan) -> dict[str, Any]:
    """Cold starts of fresh Node.js actions (stem cells refilled between, as cold_steady), then
    warm blocking invokes of one Node.js and one Python action, one at a time."""
    if shutil.which("node") is None:
        return {"skipped": "Node.js is not installed"}
    settings = SETTINGS["nodejs"]
    warm_count = min(plan.latency_count, 1000)
    with squall_server(settings) as squall:
        client = SquallClient(squall)
        try:
            client.put_action("node-first", NODE_MEMORY_MB, kind="nodejs:20")
            client.invoke("node-first")  # one-time costs of a fresh server, not counted
            names = [f"node-{i}" for i in range(plan.cold_actions)]
            for name in names:
                client.put_action(name, NODE_MEMORY_MB, kind="nodejs:20")
            time.sleep(SETTLE_S)
            cold = invoke_each(client, names, max(plan.cold_pause_s, 0.3), plan.phase_max_s)
            warm = {
                kind: warm_invokes(client, kind, warm_count, plan.phase_max_s)
                for kind in ("nodejs:20", "python:3")
            }
        finally:
            client.close()
    return {"settings": settings, "cold": summarize_cold(cold), "warm": warm}


def warm_invokes(client: SquallClient, kind: str, count: int, max_s: float) -> dict[str, Any]:
    name = "warm-" + kind.replace(":", "-")
    client.put_action(name, NODE_MEMORY_MB, kind=kind)
    client.invoke(name)  # the cold start
    calls = invoke_each(client, [name] * count, 0.0, max_s)
    return {
        "invocations": len(calls),
        "failed": sum(1 for c in calls if not c.succeeded),
        "client": summarize_ms([c.client_ms for c in calls]),
        "duration": summarize_ms([float(c.record.get("duration", 0)) for c in calls]),
    }


PHASES: dict[str, Callable[[Plan], dict[str, Any]]] = {
    "warm": phase_warm,
    "concurrency": phase_concurrency,
    "celery": celery_bench.phase_celery,
    "cold_steady": lambda plan: phase_cold(plan, "cold_steady", plan.cold_pause_s),
    "cold_burst": lambda plan: phase_cold(plan, "cold_burst", 0.0),
    "cold_no_prewarm": lambda plan: phase_cold(plan, "cold_no_prewarm", plan.cold_pause_s),
    "memory": phase_memory,
    "nodejs": phase_nodejs,
    "alarms": alarms.phase_alarms,
    "alarms_inactive_rules": alarms.phase_alarms_inactive,
    "alarms_spread": alarms.phase_alarms_spread,
    "alarms_spread_active": alarms.phase_alarms_spread_active,
    "alarms_apscheduler": alarms.phase_apscheduler,
    "stores": stores.phase_stores,
    "composition": composition.phase_composition,
    "cluster": cluster.phase_cluster,
    "cluster_alarms": cluster.phase_cluster_alarms,
}

# Names that select several phases on the command line (`python -m bench cold`).
GROUPS: dict[str, tuple[str, ...]] = {
    "invoke": ("warm", "concurrency", "celery", "nodejs", "composition"),
    "cold": ("cold_steady", "cold_burst", "cold_no_prewarm"),
    "timers": (
        "alarms",
        "alarms_inactive_rules",
        "alarms_spread",
        "alarms_spread_active",
        "alarms_apscheduler",
    ),
}
