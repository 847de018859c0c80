"""APScheduler 3.x under the alarm benchmark's schedule load, in its own process.

    python -m bench.apscheduler_peer --firing 60000 --idle 40000 --ready R.json --out O.json

Run by bench/alarms.py. AsyncIOScheduler with the default memory job store, UTC, on uvloop (as
Squall): `--firing` cron jobs at second i mod 60 of every minute, `--idle` yearly cron jobs. All
jobs are added before `start()`, the usual bulk set-up. Each job is a coroutine (run on the event
loop by APScheduler's AsyncIOExecutor, no thread pool) that only records (i, time.time()) into
preallocated lists: no I/O. Job defaults: misfire_grace_time=None and coalesce=False, so a late
run is still run (its lateness shows as lag) rather than dropped.

Writes R (start-up timings) atomically once the scheduler runs; on SIGTERM (or after
--max-seconds) shuts the scheduler down and writes every recorded fire to O.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import time
from datetime import UTC
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.apscheduler_peer", description=__doc__)
    parser.add_argument("--firing", type=int, required=True)
    parser.add_argument("--idle", type=int, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-fires", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    return parser.parse_args(argv)


def write_json(path: Path, data: Any) -> None:
    """Atomically: the harness polls for the file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    args = parse_args(argv)
    schedulers = importlib.import_module("apscheduler.schedulers.asyncio")
    events = importlib.import_module("apscheduler.events")
    imported = time.time()
    cap = max(args.max_fires, 1)
    index = [0] * cap
    times = [0.0] * cap
    state = {"count": 0, "overflow": 0, "missed": 0, "errors": 0}

    async def record(i: int) -> None:
        now = time.time()
        n = state["count"]
        if n < cap:
            index[n] = i
            times[n] = now
            state["count"] = n + 1
        else:
            state["overflow"] += 1

    def on_event(event: Any) -> None:
        state["missed" if event.code == events.EVENT_JOB_MISSED else "errors"] += 1

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        scheduler = schedulers.AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
        )
        scheduler.add_listener(on_event, events.EVENT_JOB_MISSED | events.EVENT_JOB_ERROR)
        adding = time.time()
        for i in range(args.firing):
            scheduler.add_job(
                record, "cron", second=i % 60, timezone=UTC, args=(i,), id=f"alarm-{i:06d}"
            )
        for i in range(args.firing, args.firing + args.idle):
            scheduler.add_job(
                record, "cron", month=1, day=1, hour=0, minute=0, second=0, timezone=UTC,
                args=(i,), id=f"alarm-{i:06d}",
            )  # fmt: skip
        added = time.time()
        scheduler.start()
        ready = time.time()
        write_json(
            args.ready,
            {
                "import_s": round(imported - started, 3),
                "add_jobs_s": round(added - adding, 3),
                "scheduler_start_s": round(ready - added, 3),
                "in_process_s": round(ready - started, 3),
                "loop": type(loop).__module__ + "." + type(loop).__name__,
                "jobs": len(scheduler.get_jobs()),
            },
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.max_seconds):
                await stop.wait()
        scheduler.shutdown(wait=False)

    if args.loop == "uvloop":
        importlib.import_module("uvloop").run(run())
    else:
        asyncio.run(run())
    n = state["count"]
    write_json(
        args.out,
        {
            "index": index[:n],
            "time": times[:n],
            "overflow": state["overflow"],
            "missed": state["missed"],
            "errors": state["errors"],
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
