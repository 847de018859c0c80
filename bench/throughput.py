"""Throughput with many concurrent keep-alive clients: wrk when installed, else several
`bench.loadgen throughput` processes."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.loadgen import LoadgenProcess, Target
from bench.procinfo import CpuSnapshot, cpu_per_op, cpu_snapshot
from bench.servers import Server
from bench.stats import summarize_ms

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_post.lua"
WRK_THREADS = 2  # one per core of the reference machine
PY_PROCESSES = 2


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _wrk_env(target: Target) -> dict[str, str]:
    env = dict(os.environ)
    env["BENCH_METHOD"] = target.method
    env["BENCH_BODY"] = target.body.decode()
    env["BENCH_AUTH_HEADER"] = (
        "Basic " + base64.b64encode(target.auth.encode()).decode() if target.auth else ""
    )
    return env


def _run_wrk(target: Target, connections: int, seconds: float) -> dict[str, Any]:
    wrk = wrk_path()
    assert wrk is not None
    url = f"http://{target.host}:{target.port}{target.path}"
    argv = [
        wrk, f"-t{min(WRK_THREADS, connections)}", f"-c{connections}",
        f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(WRK_SCRIPT), url,
    ]  # fmt: skip
    done = subprocess.run(
        argv, env=_wrk_env(target), capture_output=True, text=True, timeout=seconds + 60
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            parsed: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            return parsed
    raise RuntimeError(f"wrk printed no summary (code {done.returncode}): {done.stderr[-500:]}")


def _from_wrk(raw: dict[str, Any]) -> dict[str, Any]:
    elapsed = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["errors"]["status"]  # wrk counts non-2xx/3xx answers as errors
    lat = raw["latency_us"]
    return {
        "requests": ok,
        "errors": sum(raw["errors"].values()),
        "error_detail": raw["errors"],
        "elapsed_s": round(elapsed, 4),
        "requests_per_s": round(ok / elapsed, 2) if elapsed else None,
        "latency": {f"{k}_ms": round(v / 1000, 4) for k, v in lat.items()},
    }


def measure_wrk(
    server: Server, target: Target, connections: int, seconds: float, warmup_s: float
) -> dict[str, Any]:
    if warmup_s > 0:
        _run_wrk(target, connections, warmup_s)
    main = server.process()
    before = cpu_snapshot(main)
    result = _from_wrk(_run_wrk(target, connections, seconds))
    after = cpu_snapshot(main)
    result["cpu"] = cpu_per_op(before, after, result["requests"] + result["errors"])
    result["tool"] = "wrk"
    return result


def _loadgen_argv(target: Target, connections: int, seconds: float, warmup_s: float) -> list[str]:
    return [
        "throughput", "--host", target.host, "--port", str(target.port),
        "--method", target.method, "--path", target.path, "--body", target.body.decode(),
        "--connections", str(connections), "--duration", str(seconds),
        "--warmup-seconds", str(warmup_s), "--max-seconds", str(seconds + 5),
    ]  # fmt: skip


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    requests = sum(p["requests"] for p in parts)
    errors = sum(p["errors"] for p in parts)
    elapsed = max(p["elapsed_s"] for p in parts)
    rate = sum(p["requests_per_s"] or 0 for p in parts)
    # Per-process percentiles cannot be merged exactly: report the worst process's.
    worst = max(parts, key=lambda p: p["latency"].get("p50_ms", 0))
    return {
        "requests": requests,
        "errors": errors,
        "first_error": next((p["first_error"] for p in parts if p["first_error"]), None),
        "elapsed_s": elapsed,
        "requests_per_s": round(rate, 2),
        "latency": worst["latency"] or summarize_ms([]),
    }


def measure_python(
    server: Server, target: Target, connections: int, seconds: float, warmup_s: float
) -> dict[str, Any]:
    processes = min(PY_PROCESSES, connections)
    share = [connections // processes + (i < connections % processes) for i in range(processes)]
    with contextlib.ExitStack() as stack:
        gens = [
            stack.enter_context(
                LoadgenProcess(_loadgen_argv(target, n, seconds, warmup_s), target.auth)
            )
            for n in share
        ]
        for gen in gens:
            gen.wait_ready(warmup_s + 60)
        main = server.process()
        before: CpuSnapshot = cpu_snapshot(main)
        for gen in gens:
            gen.go()
        parts = [gen.result(seconds + 60) for gen in gens]
        after = cpu_snapshot(main)
    result = _merge(parts)
    result["cpu"] = cpu_per_op(before, after, result["requests"] + result["errors"])
    result["tool"] = f"python loadgen ({processes} processes)"
    return result


def measure(
    server: Server,
    target: Target,
    connections: int,
    seconds: float,
    warmup_s: float,
    use_wrk: bool = True,
) -> dict[str, Any]:
    if use_wrk and wrk_path() is not None:
        result = measure_wrk(server, target, connections, seconds, warmup_s)
    else:
        result = measure_python(server, target, connections, seconds, warmup_s)
    result["connections"] = connections
    return result
