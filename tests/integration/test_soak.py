"""Soak: a real server under steady mixed load (invokes, trigger fires, alarm ticks) for a
bounded time. Memory and descriptors stay flat, sandboxes stay within their limits, every
accepted activation has exactly one record, and p99 latency does not drift.

`TEST_SOAK_S` sets the duration: 60 s by default, 300 s in CI's slow tier (.ci/run), which
keeps the whole run near 20 minutes.
`TEST_SOAK_REPORT` names a JSON file for the figures (recorded in BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import (
    GUEST_AUTH,
    GUEST_KEY,
    GUEST_UUID,
    ServerProcess,
    start_server,
    stop_server,
)

DURATION_S = float(os.environ.get("TEST_SOAK_S", "60"))
RATE_PER_S = 60.0  # paced, well under capacity: a soak looks for drift, not for the ceiling
CLIENTS = 3
ALARMS = 5  # each fires every second through a rule
CODE = "def main(a):\n    return {'n': a.get('n')}\n"
SAMPLE_EVERY_S = 1.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(DURATION_S * 3 + 120))]


@dataclass
class Outcome:
    lock: threading.Lock = field(default_factory=threading.Lock)
    direct: list[str] = field(default_factory=list)  # invoke activation ids
    fires: list[str] = field(default_factory=list)  # trigger activation ids
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (at, ms) blocking
    failures: list[str] = field(default_factory=list)


@dataclass
class Sample:
    at: float
    rss_mib: float
    fds: int
    sandboxes: int


def client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=(GUEST_UUID, GUEST_KEY), timeout=30)


def setup(api: httpx.Client) -> None:
    for name in ("soak-direct", "soak-rule", "soak-alarm"):
        body = {"exec": {"kind": "python:3", "code": CODE}}
        assert api.put(f"/api/v1/namespaces/_/actions/{name}", json=body).status_code == 200
    wire(api, "soak-trigger", "soak-rule")
    for i in range(ALARMS):
        wire(api, f"soak-tick-{i}", "soak-alarm")
        created = api.post(
            "/api/v1/namespaces/whisk.system/actions/alarms/alarm?blocking=true",
            json={
                "lifecycleEvent": "CREATE",
                "triggerName": f"/_/soak-tick-{i}",
                "authKey": GUEST_AUTH,
                "cron": "* * * * * *",
            },
        )
        assert created.status_code == 200, created.text


def wire(api: httpx.Client, trigger: str, action: str) -> None:
    assert api.put(f"/api/v1/namespaces/_/triggers/{trigger}", json={}).status_code == 200
    rule = {"trigger": f"/_/{trigger}", "action": f"/_/{action}"}
    assert api.put(f"/api/v1/namespaces/_/rules/on-{trigger}", json=rule).status_code == 200


def drive(server: ServerProcess, outcome: Outcome, until: float, worker: int) -> None:
    """Paced requests: 70% blocking invokes, 20% non-blocking, 10% trigger fires."""
    interval = CLIENTS / RATE_PER_S
    with client(server) as api:
        i = 0
        next_at = time.monotonic()
        while (now := time.monotonic()) < until:
            if now < next_at:
                time.sleep(next_at - now)
            next_at += interval
            i += 1
            one_request(api, outcome, (i * 7 + worker) % 10)


def one_request(api: httpx.Client, outcome: Outcome, slot: int) -> None:
    began = time.monotonic()
    if slot < 7:
        answer = api.post("/api/v1/namespaces/_/actions/soak-direct?blocking=true", json={})
        kept = outcome.direct
    elif slot < 9:
        answer = api.post("/api/v1/namespaces/_/actions/soak-direct", json={})
        kept = outcome.direct
    else:
        answer = api.post("/api/v1/namespaces/_/triggers/soak-trigger", json={})
        kept = outcome.fires
    elapsed_ms = (time.monotonic() - began) * 1000
    with outcome.lock:
        if answer.status_code not in (200, 202):
            outcome.failures.append(f"{answer.status_code} {answer.text[:200]}")
            return
        kept.append(answer.json()["activationId"])
        if slot < 7:
            outcome.latencies.append((began, elapsed_ms))


def sample(process: psutil.Process) -> Sample:
    children = process.children(recursive=True)
    return Sample(
        at=time.monotonic(),
        rss_mib=process.memory_info().rss / 2**20,
        fds=process.num_fds(),
        # The zygote is one child; every other descendant is a sandbox (or its own child).
        sandboxes=max(0, len(children) - 1),
    )


def slope_per_min(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 3:
        return 0.0
    return float(statistics.linear_regression(xs, ys).slope) * 60


def records(api: httpx.Client, name: str, since_ms: int, docs: bool) -> list[dict[str, Any]]:
    """Every record of `name` since `since_ms`, a page (OpenWhisk's maximum, 200) at a time."""
    found: list[dict[str, Any]] = []
    while True:
        answer = api.get(
            "/api/v1/namespaces/_/activations",
            params={"name": name, "since": str(since_ms), "limit": "200",
                    "skip": str(len(found)), "docs": str(docs).lower()},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        page = answer.json()
        found.extend(page)
        if len(page) < 200:
            return found


def record_ids(api: httpx.Client, name: str, since_ms: int, expected: int) -> list[str]:
    """Ids of `name`'s records, polled (bounded) until `expected` arrive: runs finish after load."""
    ids: list[str] = []
    for _ in range(100):
        ids = [r["activationId"] for r in records(api, name, since_ms, docs=False)]
        if len(ids) >= expected:
            break
        time.sleep(0.1)
    return ids


def rule_runs(api: httpx.Client, trigger: str, since_ms: int) -> tuple[int, list[str]]:
    """(fires, action activation ids) from `trigger`'s records, whose logs name each rule's run."""
    fired = records(api, trigger, since_ms, docs=True)
    runs = [json.loads(line) for record in fired for line in record["logs"]]
    return len(fired), [run["activationId"] for run in runs if "activationId" in run]


def exactly_once(api: httpx.Client, name: str, since_ms: int, accepted: list[str]) -> None:
    ids = record_ids(api, name, since_ms, len(accepted))
    assert len(ids) == len(set(ids)), f"{name}: an activation has more than one record"
    missing, extra = set(accepted) - set(ids), set(ids) - set(accepted)
    assert not missing, f"{name}: {len(missing)} accepted activations have no record"
    assert not extra, f"{name}: {len(extra)} records nobody accepted"


def test_soak(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", tmp_path / "soak.log")
    try:
        run_soak(server, tmp_path)
    finally:
        stop_server(server)


def run_soak(server: ServerProcess, tmp_path: Path) -> None:
    process = psutil.Process(server.process.pid)
    with client(server) as api:
        setup(api)
        since_ms = int(time.time() * 1000)
        outcome = Outcome()
        started = time.monotonic()
        until = started + DURATION_S
        workers = [
            threading.Thread(target=drive, args=(server, outcome, until, n), daemon=True)
            for n in range(CLIENTS)
        ]
        for worker in workers:
            worker.start()
        samples = []
        while time.monotonic() < until:
            samples.append(sample(process))
            time.sleep(SAMPLE_EVERY_S)
        for worker in workers:
            worker.join(timeout=60)
            assert not worker.is_alive(), "a load thread did not stop"
        disable_alarms(api)
        figures = check(api, outcome, samples, started, since_ms)
    report = os.environ.get("TEST_SOAK_REPORT")
    if report:
        Path(report).write_text(json.dumps(figures, indent=2))
    print("soak:", json.dumps(figures))


def disable_alarms(api: httpx.Client) -> None:
    """Stop the ticks, so the records stop growing while they are compared."""
    for i in range(ALARMS):
        answer = api.post(
            f"/api/v1/namespaces/_/rules/on-soak-tick-{i}", json={"status": "inactive"}
        )
        assert answer.status_code == 200, answer.text


def check(
    api: httpx.Client,
    outcome: Outcome,
    samples: list[Sample],
    started: float,
    since_ms: int,
) -> dict[str, Any]:
    assert not outcome.failures, outcome.failures[:5]
    accepted = len(outcome.direct)
    assert len(set(outcome.direct)) == accepted, "an activation id was handed out twice"
    # Exactly one record per accepted activation; for fires, per rule run each fire made.
    exactly_once(api, "soak-direct", since_ms, outcome.direct)
    exactly_once(api, "soak-trigger", since_ms, outcome.fires)
    fires, runs = rule_runs(api, "soak-trigger", since_ms)
    assert fires == len(outcome.fires) == len(runs)
    exactly_once(api, "soak-rule", since_ms, runs)
    ticks, tick_runs = 0, []
    for i in range(ALARMS):
        fired, made = rule_runs(api, f"soak-tick-{i}", since_ms)
        ticks, tick_runs = ticks + fired, tick_runs + made
    assert ticks >= ALARMS * (DURATION_S - 5), f"alarms fired {ticks} times"
    exactly_once(api, "soak-alarm", since_ms, tick_runs)

    # Flat memory and descriptors after warm-up (the first quarter fills caches and pools).
    steady = [s for s in samples if s.at - started >= DURATION_S / 4]
    xs = [s.at - started for s in steady]
    rss_slope = slope_per_min(xs, [s.rss_mib for s in steady])
    fd_slope = slope_per_min(xs, [float(s.fds) for s in steady])
    rss_growth = steady[-1].rss_mib - steady[0].rss_mib
    fd_growth = steady[-1].fds - steady[0].fds
    assert rss_growth < 20 + DURATION_S / 60, f"RSS grew {rss_growth:.1f} MiB in steady state"
    assert fd_growth < 16, f"descriptors grew by {fd_growth}"
    # Sandboxes bounded: prewarm plus a few warm containers, not one per activation.
    most_sandboxes = max(s.sandboxes for s in samples)
    assert most_sandboxes <= 16, f"{most_sandboxes} sandbox processes at once"

    # p99 of blocking invokes does not drift: the last third against the first.
    third = DURATION_S / 3
    first = [ms for at, ms in outcome.latencies if at - started < third]
    last = [ms for at, ms in outcome.latencies if at - started >= 2 * third]
    p99_first, p99_last = percentile(first, 99), percentile(last, 99)
    assert p99_last <= max(3 * p99_first, p99_first + 25), (p99_first, p99_last)
    return {
        "duration_s": DURATION_S,
        "requests_per_s": RATE_PER_S,
        "accepted_invokes": accepted,
        "trigger_fires": fires,
        "alarm_ticks": ticks,
        "rss_mib_start_end": [round(steady[0].rss_mib, 1), round(steady[-1].rss_mib, 1)],
        "rss_slope_mib_per_min": round(rss_slope, 2),
        "fds_start_end": [steady[0].fds, steady[-1].fds],
        "fd_slope_per_min": round(fd_slope, 2),
        "max_sandbox_processes": most_sandboxes,
        "blocking_p50_ms": round(percentile([ms for _, ms in outcome.latencies], 50), 2),
        "blocking_p99_ms_first_third": round(p99_first, 2),
        "blocking_p99_ms_last_third": round(p99_last, 2),
    }


def percentile(values: list[float], q: float) -> float:
    assert values, "no latencies measured"
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]
