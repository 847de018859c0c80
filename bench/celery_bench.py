"""Squall's blocking invoke beside Celery (phase `celery`): the same trivial work, the same
closed-loop client (bench/rpc_client.py), the same concurrency levels, in one run.

Celery 5 with a real Redis as broker and result backend: `redis-server` started here on
127.0.0.1 (bench/redis_server.py), a worker with Celery's defaults for this machine (prefork
pool, one process per core, prefetch multiplier 4; gossip, mingle and heartbeat off: they
serve clusters of workers and only slow the start), the task `bench.hello` returning
`{"ok": true}`, called with `send_task(...).get()`. Squall: `squall standalone`, the trivial
action invoked with `POST ...?blocking=true` (its activation record stored as usual).

At concurrency 1 the calls give the round-trip latency; at each level the calls per second,
the latency spread, the CPU per call of the servers (Squall's whole process tree; Celery's
worker tree plus redis-server) and of the client, and the servers' memory at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from bench.api import ACTIONS
from bench.celery_peer import BACKEND_ENV, BROKER_ENV, TASK_NAME, make_app
from bench.loadgen import LoadgenProcess
from bench.procinfo import CpuSnapshot, cpu_snapshot, memory_of, tree_memory
from bench.redis_server import RedisServer, redis_binary, redis_server, redis_version
from bench.servers import HOST, Server, clean_env, free_port, launch, squall_server
from bench.stats import cdf_points, summarize_ms

if TYPE_CHECKING:
    from bench.scenarios import Plan

CLIENT_PROCESSES = 2  # one per core of the reference machine, as wrk's threads
WORKER_READY_S = 60.0


def missing_parts() -> list[str]:
    missing = []
    if importlib.util.find_spec("celery") is None or importlib.util.find_spec("redis") is None:
        missing.append("celery and redis (pip install 'celery[redis]>=5.3')")
    if redis_binary() is None:
        missing.append("redis-server (apt-get install -y redis-server)")
    return missing


def worker_argv() -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.celery_peer",
        "worker",
        "--loglevel",
        "WARNING",
        "--pool",
        "prefork",
        "--concurrency",
        str(os.cpu_count() or 1),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def wait_worker(broker: str, backend: str, worker: Server, timeout: float) -> float:
    """Seconds until the worker answered its first task (bounded; each try waits 2 s)."""
    app = make_app(broker, backend)
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            if worker.proc.poll() is not None:
                raise RuntimeError(
                    f"celery worker exited ({worker.proc.returncode}):\n{worker.log_tail()}"
                )
            with contextlib.suppress(Exception):  # not consuming yet: the get times out
                if app.send_task(TASK_NAME).get(timeout=2.0) == {"ok": True}:
                    return round(time.monotonic() - started, 2)
        raise RuntimeError(
            f"celery worker answered no task in {timeout:.0f} s:\n{worker.log_tail()}"
        )
    finally:
        app.close()


@contextlib.contextmanager
def celery_worker(redis: RedisServer) -> Iterator[tuple[Server, float]]:
    broker, backend = f"{redis.url}/0", f"{redis.url}/1"
    workdir = Path(tempfile.mkdtemp(prefix="squall-bench-celery-"))
    env = clean_env({BROKER_ENV: broker, BACKEND_ENV: backend})
    server = launch("celery worker", worker_argv(), env, workdir, free_port())
    try:
        ready_s = wait_worker(broker, backend, server, WORKER_READY_S)
        yield server, ready_s
    finally:
        server.stop()


def shares(threads: int) -> list[int]:
    processes = min(CLIENT_PROCESSES, threads)
    return [threads // processes + (i < threads % processes) for i in range(processes)]


def client_argv(kind: list[str], threads: int, plan: Plan) -> list[str]:
    return [
        *kind,
        "--threads",
        str(threads),
        "--duration",
        str(plan.sweep_s),
        "--warmup-seconds",
        str(plan.sweep_warmup_s),
    ]


def servers_cpu(procs: list[psutil.Process]) -> CpuSnapshot:
    parts = [cpu_snapshot(p) for p in procs]
    return CpuSnapshot(sum(p.main_s for p in parts), sum(p.tree_s for p in parts))


def measure(
    kind: list[str], auth: str | None, threads: int, servers: list[psutil.Process], plan: Plan
) -> dict[str, Any]:
    """`threads` closed-loop callers over CLIENT_PROCESSES processes; CPU and samples of the
    measured part only (after each process's warm-up)."""
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(
                LoadgenProcess(client_argv(kind, n, plan), auth, module="bench.rpc_client")
            )
            for n in shares(threads)
        ]
        for client in clients:
            client.wait_ready(plan.sweep_warmup_s + 90)
        before = servers_cpu(servers)
        for client in clients:
            client.go()
        parts = [client.result(plan.sweep_s + 90) for client in clients]
        after = servers_cpu(servers)
    client_cpu_s = sum(p["cpu_s"] for p in parts)
    return summarize_run(parts, threads, after.tree_s - before.tree_s, client_cpu_s)


def summarize_run(
    parts: list[dict[str, Any]], threads: int, server_cpu_s: float, client_cpu_s: float
) -> dict[str, Any]:
    samples = [s for p in parts for s in p["samples_ms"]]
    elapsed = max(p["elapsed_s"] for p in parts)
    ops = len(samples) + sum(p["errors"] for p in parts)
    return {
        "concurrency": threads,
        "client_processes": len(parts),
        "requests": len(samples),
        "errors": sum(p["errors"] for p in parts),
        "first_error": next((p["first_error"] for p in parts if p["first_error"]), None),
        "elapsed_s": elapsed,
        "requests_per_s": round(len(samples) / elapsed, 2) if elapsed else None,
        "latency": summarize_ms(samples),
        "cdf": cdf_points(samples),
        "cpu": {
            "ops": ops,
            "server_cpu_s": round(server_cpu_s, 4),
            "server_cpu_us_per_op": round(server_cpu_s / ops * 1e6, 2) if ops else None,
            "client_cpu_s": round(client_cpu_s, 4),
            "client_cpu_us_per_op": round(client_cpu_s / ops * 1e6, 2) if ops else None,
        },
    }


def celery_memory(worker: Server, redis: RedisServer) -> dict[str, Any]:
    tree = tree_memory(worker.process())  # worker main process and its pool processes
    pool = [memory_of(p) for p in worker.process().children(recursive=True)]
    pool_mem = [m for m in pool if m]
    redis_mem = memory_of(redis.process()) or {}
    return {
        "worker_main": tree["main"],
        "pool_processes": len(pool_mem),
        "pool_rss_mib": round(sum(m["rss_mib"] for m in pool_mem), 2),
        "redis": redis_mem,
        "total_rss_mib": round(
            sum(m["rss_mib"] for m in pool_mem)
            + tree["main"].get("rss_mib", 0)
            + redis_mem.get("rss_mib", 0),
            2,
        ),
        "total_pss_mib": round(
            sum(m["pss_mib"] for m in pool_mem)
            + tree["main"].get("pss_mib", 0)
            + redis_mem.get("pss_mib", 0),
            2,
        ),
    }


def squall_memory(squall: Server) -> dict[str, Any]:
    tree = tree_memory(squall.process())
    return {key: tree[key] for key in ("main", "sandbox_count", "total_rss_mib", "total_pss_mib")}


def phase_celery(plan: Plan) -> dict[str, Any]:
    from bench.scenarios import SETTINGS, WARM_ACTION, prepare_warm_action

    missing = missing_parts()
    if missing:
        message = "not installed: " + "; ".join(missing)
        if plan.smoke and os.environ.get("CI") != "true":
            return {"skipped": message}
        raise RuntimeError(message)
    out: dict[str, Any] = {
        "settings": SETTINGS["warm"],
        "levels": list(plan.sweep_levels),
        "seconds_per_level": plan.sweep_s,
        "warmup_s_per_level": plan.sweep_warmup_s,
        "worker_argv": worker_argv()[2:],
        "redis_server": redis_version(),
        "squall": {},
        "celery": {},
    }
    with (
        redis_server() as redis,
        celery_worker(redis) as (worker, ready_s),
        squall_server(SETTINGS["warm"]) as squall,
    ):
        out["celery_worker_ready_s"] = ready_s
        prepare_warm_action(squall)
        path = f"{ACTIONS}/{WARM_ACTION}?blocking=true"
        squall_kind = ["http", "--host", HOST, "--port", str(squall.port), "--path", path]
        celery_kind = ["celery", "--broker", f"{redis.url}/0", "--backend", f"{redis.url}/1"]
        celery_procs = [worker.process(), redis.process()]
        for level in plan.sweep_levels:
            out["squall"][str(level)] = measure(
                squall_kind, squall.auth, level, [squall.process()], plan
            )
            out["celery"][str(level)] = measure(celery_kind, None, level, celery_procs, plan)
        out["memory"] = {"squall": squall_memory(squall), "celery": celery_memory(worker, redis)}
    return out
