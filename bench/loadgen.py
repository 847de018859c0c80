"""The load generator, run in its own process so it never shares a core's time slice with the
harness's bookkeeping.

    python -m bench.loadgen latency --port P [--method POST --path /x --body '{}'] --count N
    python -m bench.loadgen throughput --port P --connections C --duration S

The Authorization header comes from the environment (BENCH_AUTH=user:password), not argv.
Protocol with the parent: after its warm-up the generator prints `{"ready": true}` and waits for
one line on stdin; then it measures and prints one JSON line with the result. EOF on stdin (the
parent is gone) makes it exit without measuring.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import json
import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.shield import signals_deferred
from bench.stats import cdf_points, summarize_ms

REPO_ROOT = Path(__file__).resolve().parent.parent
AUTH_ENV = "BENCH_AUTH"


@dataclass(frozen=True)
class Target:
    """One HTTP request, repeated."""

    host: str
    port: int
    method: str = "GET"
    path: str = "/"
    body: bytes = b""
    auth: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {"Host": f"{self.host}:{self.port}", "Accept": "application/json"}
        if self.auth:
            token = base64.b64encode(self.auth.encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        if self.body or self.method in ("POST", "PUT"):
            headers["Content-Type"] = "application/json"
            headers["Content-Length"] = str(len(self.body))
        return headers

    def raw_request(self) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in self.headers().items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


# -- latency: one keep-alive connection, one request at a time -------------------------------


class Tally:
    """Samples and errors of one measurement."""

    def __init__(self) -> None:
        self.samples_ms: list[float] = []
        self.errors = 0
        self.first_error: str | None = None

    def error(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what[:300]

    def result(self, elapsed_s: float) -> dict[str, Any]:
        done = len(self.samples_ms)
        return {
            "requests": done,
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed_s": round(elapsed_s, 4),
            "requests_per_s": round(done / elapsed_s, 2) if elapsed_s > 0 else None,
            "latency": summarize_ms(self.samples_ms),
            "cdf": cdf_points(self.samples_ms),
        }


class SyncClient:
    """http.client with keep-alive, reconnecting after a failure."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._headers = target.headers()
        self._conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.target.host, self.target.port, timeout=30)

    def once(self) -> tuple[int, bytes]:
        """One request; (status, body), or (0, error text) when the connection failed."""
        try:
            body = self.target.body if self.target.method in ("POST", "PUT") else None
            self._conn.request(self.target.method, self.target.path, body, self._headers)
            response = self._conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            self._conn = self._connect()
            return 0, repr(exc).encode()

    def close(self) -> None:
        self._conn.close()


def measure_latency(client: SyncClient, count: int, max_seconds: float) -> dict[str, Any]:
    tally = Tally()
    started = time.perf_counter()
    deadline = started + max_seconds
    for _ in range(count):
        t0 = time.perf_counter_ns()
        status, body = client.once()
        t1 = time.perf_counter_ns()
        if status == 200:
            tally.samples_ms.append((t1 - t0) / 1e6)
        else:
            tally.error(f"HTTP {status}: {body[:200]!r}")
        if time.perf_counter() > deadline:
            break
    return tally.result(time.perf_counter() - started)


def run_latency(target: Target, warmup: int, count: int, max_seconds: float) -> int:
    client = SyncClient(target)
    try:
        measure_latency(client, warmup, max_seconds)
        if not await_go():
            return 1
        emit(measure_latency(client, count, max_seconds))
    finally:
        client.close()
    return 0


# -- throughput: many connections on one asyncio loop ----------------------------------------


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def connection_loop(target: Target, raw: bytes, stop_at: float, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection(target.host, target.port)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter_ns()
            writer.write(raw)
            status, body = await asyncio.wait_for(read_response(reader), 60)
            if status == 200:
                tally.samples_ms.append((time.perf_counter_ns() - t0) / 1e6)
            else:
                tally.error(f"HTTP {status}: {body[:200]!r}")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def measure_throughput(target: Target, connections: int, seconds: float) -> dict[str, Any]:
    tally = Tally()
    raw = target.raw_request()
    started = time.perf_counter()
    stop_at = started + seconds
    loops = [connection_loop(target, raw, stop_at, tally) for _ in range(connections)]
    outcomes = await asyncio.gather(*loops, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            tally.error(f"connection failed: {outcome!r}")
    return tally.result(time.perf_counter() - started)


def run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_throughput(target: Target, connections: int, seconds: float, warmup_s: float) -> int:
    if warmup_s > 0:
        run_async(measure_throughput(target, connections, warmup_s))
    if not await_go():
        return 1
    emit(run_async(measure_throughput(target, connections, seconds)))
    return 0


# -- the child side of the ready/go protocol --------------------------------------------------


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def await_go() -> bool:
    emit({"ready": True})
    return bool(sys.stdin.readline())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("mode", choices=("latency", "throughput"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--path", default="/")
    parser.add_argument("--body", default="")
    parser.add_argument("--warmup", type=int, default=200, help="latency: warm-up requests")
    parser.add_argument("--count", type=int, default=2000, help="latency: measured requests")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup-seconds", type=float, default=1.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    target = Target(
        args.host, args.port, args.method, args.path, args.body.encode(), os.environ.get(AUTH_ENV)
    )
    if args.mode == "latency":
        return run_latency(target, args.warmup, args.count, args.max_seconds)
    duration = min(args.duration, args.max_seconds)
    return run_throughput(target, args.connections, duration, args.warmup_seconds)


# -- the parent side ---------------------------------------------------------------------------


class LoadgenProcess:
    """A running `python -m bench.loadgen` (or another `module` speaking the same protocol,
    such as bench.rpc_client), driven through the ready/go protocol."""

    def __init__(
        self, argv: list[str], auth: str | None = None, module: str = "bench.loadgen"
    ) -> None:
        env = dict(os.environ)
        env.pop(AUTH_ENV, None)
        if auth:
            env[AUTH_ENV] = auth
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *argv],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C goes to the harness, which stops us in order
        )

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"load generator said nothing for {timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited (code {self.proc.wait(5)})")
        value: dict[str, Any] = json.loads(line)
        return value

    def wait_ready(self, timeout: float) -> None:
        if not self._line(timeout).get("ready"):
            raise RuntimeError("load generator did not report ready")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        value = self._line(timeout)
        self.proc.wait(10)
        return value

    def close(self) -> None:
        with signals_deferred():
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> LoadgenProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())
