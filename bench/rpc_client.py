"""A closed-loop client of N threads, the same for Squall and Celery, in its own process, so
the two are compared at the same concurrency with the same client design.

    python -m bench.rpc_client http --port P --path /api/... --threads 8 --duration 5
    python -m bench.rpc_client celery --broker redis://... --backend redis://... --threads 8

Each thread owns one client: a keep-alive http.client connection (Squall's blocking invoke),
or its own Celery app (its own broker and result-backend connections: a Celery app's result
consumer is not meant to be shared between threads) calling `send_task(...).get()`. Every
thread issues its next call as soon as the previous one returned. Same ready/go protocol as
bench.loadgen: warm-up, `{"ready": true}`, one line on stdin, then one JSON line with every
sample (ms), so the parent merges several processes' samples exactly.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.celery_peer import TASK_NAME, make_app
from bench.loadgen import AUTH_ENV, Target, await_go, emit

CALL_TIMEOUT_S = 30.0


class Caller:
    """One call at a time: returns None on success, or what went wrong."""

    def call(self) -> str | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


class HttpCaller(Caller):
    def __init__(self, target: Target) -> None:
        self.target = target
        self.headers = target.headers()
        self.conn = http.client.HTTPConnection(target.host, target.port, timeout=CALL_TIMEOUT_S)

    def call(self) -> str | None:
        try:
            self.conn.request(self.target.method, self.target.path, self.target.body, self.headers)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.conn = http.client.HTTPConnection(
                self.target.host, self.target.port, timeout=CALL_TIMEOUT_S
            )
            return repr(exc)
        return None if response.status == 200 else f"HTTP {response.status}: {body[:200]!r}"

    def close(self) -> None:
        self.conn.close()


class CeleryCaller(Caller):
    def __init__(self, broker: str, backend: str) -> None:
        self.app = make_app(broker, backend)

    def call(self) -> str | None:
        try:
            result = self.app.send_task(TASK_NAME).get(timeout=CALL_TIMEOUT_S)
        except Exception as exc:  # whatever Celery or Redis raised: an error of this call
            return repr(exc)[:300]
        return None if result == {"ok": True} else f"unexpected result {result!r}"[:300]

    def close(self) -> None:
        self.app.close()


class Tally:
    """Samples and errors of all threads (list.append is atomic under the GIL)."""

    def __init__(self) -> None:
        self.samples_ms: list[float] = []
        self.errors: list[str] = []


def loop(caller: Caller, stop_at: float, tally: Tally) -> None:
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter_ns()
        problem = caller.call()
        elapsed_ms = (time.perf_counter_ns() - t0) / 1e6
        if problem is None:
            tally.samples_ms.append(elapsed_ms)
        else:
            tally.errors.append(problem)


def run_for(callers: list[Caller], seconds: float) -> tuple[Tally, float]:
    tally = Tally()
    started = time.perf_counter()
    threads = [
        threading.Thread(target=loop, args=(c, started + seconds, tally), daemon=True)
        for c in callers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + CALL_TIMEOUT_S + 10)
    return tally, time.perf_counter() - started


def result_of(tally: Tally, elapsed_s: float, cpu_s: float) -> dict[str, Any]:
    return {
        "cpu_s": round(cpu_s, 4),
        "requests": len(tally.samples_ms),
        "errors": len(tally.errors),
        "first_error": tally.errors[0] if tally.errors else None,
        "elapsed_s": round(elapsed_s, 4),
        "samples_ms": [round(s, 4) for s in tally.samples_ms],
    }


def make_callers(args: argparse.Namespace) -> list[Caller]:
    factory: Callable[[], Caller]
    if args.kind == "http":
        target = Target(
            args.host,
            args.port,
            args.method,
            args.path,
            args.body.encode(),
            os.environ.get(AUTH_ENV),
        )
        factory = lambda: HttpCaller(target)  # noqa: E731
    else:
        factory = lambda: CeleryCaller(args.broker, args.backend)  # noqa: E731
    return [factory() for _ in range(args.threads)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.rpc_client", description=__doc__)
    parser.add_argument("kind", choices=("http", "celery"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup-seconds", type=float, default=1.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--method", default="POST")
    parser.add_argument("--path", default="/")
    parser.add_argument("--body", default="{}")
    parser.add_argument("--broker", default="")
    parser.add_argument("--backend", default="")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    callers = make_callers(args)
    try:
        run_for(callers, args.warmup_seconds)
        if not await_go():
            return 1
        cpu_before = time.process_time()  # this process's CPU: the client's own cost
        tally, elapsed = run_for(callers, args.duration)
        emit(result_of(tally, elapsed, time.process_time() - cpu_before))
    finally:
        for caller in callers:
            caller.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
