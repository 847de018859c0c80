"""Alarm benchmarks: 100,000 alarm triggers in Squall at about 1,000 fires/s, beside APScheduler.

The load (the same for Squall and APScheduler): `alarm_firing` triggers (60,000) whose 6-field
cron fires once a minute at second i mod 60, so `alarm_firing / 60` fires every second, plus
`alarm_idle` triggers (40,000) with a yearly cron that stay registered and idle.

Squall (phases `alarms` and `alarms_inactive_rules`)
  1. Seed a fresh data dir offline (`seed`): the no-op action, the triggers, one rule per firing
     trigger to that action (active, or inactive for the second phase), and one alarm per trigger,
     every document built by the platform's own builders.
  2. First boot on that data dir; it runs `alarm_first_boot_s`, then is stopped (SIGTERM) and
     leaves the alarms' state as a running platform does.
  3. Restart (the measured boot): from process start to the first answered /ping (the platform
     answers only once `AlarmService.start` has loaded and armed every alarm). Then
     `alarm_warmup_s` of warm-up, the measured window [W0, W1) of whole seconds, and a stop at
     W1 + `alarm_stop_margin_s` so fires of the window's last ticks can land.
  4. The server stopped, its SQLite file is read directly (read-only): every tick in the window
     has a deterministic activation id (`activation_id_for`), so each expected fire is looked up
     by id: lost = expected ids without a record; lag = record `start` - scheduled second. With
     active rules, doubles are action activations sharing one trigger activation as `cause`.
     The alarms' own documents (`lastFire`) give the scheduler's lag: with inactive rules the
     platform records no trigger activation (OpenWhisk's 204), so that is the only record there.

APScheduler (phase `alarms_apscheduler`): the same schedule on AsyncIOScheduler with the memory
job store in its own process (bench/apscheduler_peer.py), each job recording its fire time.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.util
import json
import math
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psutil

from bench.loadgen import REPO_ROOT
from bench.procinfo import (
    cpu_per_op,
    cpu_snapshot,
    memory_of,
    metric_samples,
    peak_rss_mib,
    tree_memory,
)
from bench.servers import HOST, Server, clean_env, guest_auth, squall_server
from bench.stats import summarize_ms
from squall.alarms import ALARMS_COLLECTION, Alarm, activation_id_for
from squall.alarms.model import due_at
from squall.alarms.service import store_path
from squall.config import SystemLimits
from squall.entities.action import build_action
from squall.entities.names import EntityPath
from squall.entities.rule import build_rule
from squall.entities.trigger import ACTIVE, INACTIVE, RuleLink, build_trigger
from squall.stores.sqlite import SqliteEntityStore

if TYPE_CHECKING:
    from bench.scenarios import Plan

NAMESPACE = "guest"
NOOP_ACTION = "alarm-noop"
NOOP_CODE = "def main(a):\n    return {}\n"
FEED = "/whisk.system/alarms/alarm"
YEARLY_CRON = "0 0 0 1 1 *"  # 00:00:00 UTC on January 1st
TRIGGER_GLOB = "alarm-[0-9]*"
# Policy limits (OpenWhisk's defaults: 60 invokes and 60 fires a minute) are lifted: they are
# not costs. Room for the no-op action's containers, as in the other phases.
SETTINGS = {
    "SQUALL_LIMITS_INVOCATIONS_PER_MINUTE": "100000000",
    "SQUALL_LIMITS_FIRES_PER_MINUTE": "100000000",
    "SQUALL_LIMITS_CONCURRENT_INVOCATIONS": "1000",
}
ENTITY_COLUMNS = ("namespace", "name", "collection", "revision", "updated", "seq", "doc")
SEED_CHUNK = 1000
ALARM_LOG_LINE = "alarm service started with"
LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S,%f"
# How late the oldest due tick may still be when the restarted platform counts as caught up
# (see wait_caught_up): all of a second's ticks due at the same instant take up to about a
# second to start; spread over the second (jitter), each starts within milliseconds, so more
# than a scrape's own pause (it walks every alarm) is backlog. With 1.5 s for both, the spread
# window began while the platform was still ~0.4-0.7 s behind, and its first seconds were the
# restart's backlog, not the sustained lag the window measures.
CAUGHT_UP_BEHIND_S = {"burst": 1.5, "spread": 0.25}


def trigger_name(i: int) -> str:
    return f"alarm-{i:06d}"


def rule_name(i: int) -> str:
    return f"alarm-rule-{i:06d}"


def check_window(plan: Plan) -> None:
    if not 0 < plan.alarm_window_s <= 59 or plan.alarm_window_s != int(plan.alarm_window_s):
        raise ValueError("alarm_window_s must be a whole number of seconds in 1..59")
    if plan.alarm_window_s + plan.alarm_stop_margin_s >= 60:
        raise ValueError("the window plus the stop margin must stay under a minute")


# -- seeding -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    collection: str
    path: str
    name: str
    doc: dict[str, Any]


def build_rows(
    firing: int,
    idle: int,
    rule_status: str,
    now: datetime,
    jitter_s: float = 0.0,
    first_tick_after: datetime | None = None,
) -> Iterator[Row]:
    """Every document of the benchmark's namespace, as the controller and AlarmService build
    and store them (alarms: `Alarm.from_params(...).to_doc()` with `next_tick` set: the first
    tick after `first_tick_after`, default `now`). With `jitter_s`, the firing alarms' ticks
    are spread over that many seconds (jitterSeconds)."""
    limits = SystemLimits()
    action = build_action(
        NAMESPACE,
        NOOP_ACTION,
        {"exec": {"kind": "python:3", "code": NOOP_CODE}},
        kinds=frozenset({"python:3"}),
        system=limits,
        existing=None,
    )
    yield Row("actions", NAMESPACE, NOOP_ACTION, action.to_json())
    action_path = EntityPath(NAMESPACE, None, NOOP_ACTION)
    # One validated alarm per distinct schedule, copied per trigger (from_params costs ~0.1 ms).
    spread = {"jitterSeconds": jitter_s} if jitter_s else {}
    templates = {
        cron: Alarm.from_params(NAMESPACE, "template", "cron", {"cron": cron, **spread}, now=now)
        for cron in [f"{s} * * * * *" for s in range(min(firing, 60))]
    }
    templates[YEARLY_CRON] = Alarm.from_params(
        NAMESPACE, "template", "cron", {"cron": YEARLY_CRON}, now=now
    )
    first = first_tick_after or now
    next_ticks = {cron: alarm.next_tick_after(first) for cron, alarm in templates.items()}
    body = {"annotations": [{"key": "feed", "value": FEED}]}
    for i in range(firing + idle):
        name = trigger_name(i)
        trigger = build_trigger(NAMESPACE, name, body, system=limits, existing=None)
        cron = f"{i % 60} * * * * *" if i < firing else YEARLY_CRON
        if i < firing:
            rule = build_rule(
                NAMESPACE,
                rule_name(i),
                {"trigger": f"/{NAMESPACE}/{name}", "action": f"/{NAMESPACE}/{NOOP_ACTION}"},
                existing=None,
            )
            yield Row("rules", NAMESPACE, rule.name, rule.to_doc())
            link = RuleLink(action_path, rule_status)
            trigger = trigger.with_rules({rule.qualified: link})
        yield Row("triggers", NAMESPACE, name, trigger.to_json())
        alarm = replace(templates[cron], trigger=name, next_tick=next_ticks[cron])
        yield Row(ALARMS_COLLECTION, store_path(NAMESPACE), name, alarm.to_doc())


def entity_columns(db: Path) -> tuple[str, ...]:
    conn = sqlite3.connect(db)
    try:
        return tuple(row[1] for row in conn.execute("PRAGMA table_info(entities)"))
    finally:
        conn.close()


def bulk_insert(db: Path, rows: list[Row]) -> None:
    """One transaction, in the entity store's row format (revision 1, `seq` in write order)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        base = int(conn.execute("SELECT coalesce(max(seq), 0) FROM entities").fetchone()[0])
        now_ms = time.time_ns() // 1_000_000
        conn.executemany(
            "INSERT INTO entities (namespace, name, collection, revision, updated, seq, doc) "
            "VALUES (?, ?, ?, 1, ?, ?, ?)",
            (
                (r.path, r.name, r.collection, now_ms, base + k + 1, orjson.dumps(r.doc).decode())
                for k, r in enumerate(rows)
            ),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


async def _seed(
    db: Path, firing: int, idle: int, rule_status: str, jitter_s: float, lead_s: float
) -> dict[str, Any]:
    started = time.perf_counter()
    now = datetime.now(UTC)
    first_ticks_after = now + timedelta(seconds=lead_s)
    rows = list(
        build_rows(firing, idle, rule_status, now, jitter_s, first_tick_after=first_ticks_after)
    )
    built = time.perf_counter()
    store = SqliteEntityStore(db)
    await store.start()  # creates the schema through the store's own migrations
    try:
        bulk = entity_columns(db) == ENTITY_COLUMNS
        if not bulk:  # the schema moved on: the slow, always-correct way
            for first in range(0, len(rows), SEED_CHUNK):
                await asyncio.gather(
                    *(
                        store.put(r.collection, r.path, r.name, r.doc, None)
                        for r in rows[first : first + SEED_CHUNK]
                    )
                )
    finally:
        await store.close()
    if bulk:
        bulk_insert(db, rows)
    written = time.perf_counter()
    # Read back through the store class: the platform must see exactly what was meant.
    store = SqliteEntityStore(db)
    await store.start()
    try:
        counts = {
            "actions": await store.count("actions", NAMESPACE),
            "triggers": await store.count("triggers", NAMESPACE),
            "rules": await store.count("rules", NAMESPACE),
            "alarms": await store.count(ALARMS_COLLECTION, store_path(NAMESPACE)),
        }
        sample = await store.get(ALARMS_COLLECTION, store_path(NAMESPACE), trigger_name(0))
    finally:
        await store.close()
    expected = {"actions": 1, "triggers": firing + idle, "rules": firing, "alarms": firing + idle}
    if counts != expected or sample is None:
        raise RuntimeError(f"seeding wrote {counts}, expected {expected}")
    Alarm.from_doc(sample.doc)  # readable by the platform
    return {
        "method": "bulk SQL insert in the store's row format" if bulk else "SqliteEntityStore.put",
        "entities": len(rows),
        "counts": counts,
        "build_s": round(built - started, 2),
        "write_s": round(written - built, 2),
        "rule_status": rule_status,
        "first_ticks_after_wall": round(first_ticks_after.timestamp(), 3),
    }


def seed(
    db: Path, firing: int, idle: int, rule_status: str, jitter_s: float = 0.0, lead_s: float = 0.0
) -> dict[str, Any]:
    """Seed a fresh data dir; the alarms' first ticks come after `lead_s` from now."""
    return asyncio.run(_seed(db, firing, idle, rule_status, jitter_s, lead_s))


# -- timing helpers ----------------------------------------------------------------------------


def sleep_until(wall: float) -> None:
    """Sleep until time.time() reaches `wall` (bounded by the distance to it)."""
    while True:
        left = wall - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def choose_window(ready_wall: float, waited_wall: float | None, plan: Plan) -> tuple[int, int]:
    """[W0, W1): whole seconds, W0 at least `alarm_warmup_s` after the service was ready and
    a second after the wait for its catch-up ended (`waited_wall`, when there was one)."""
    w0 = math.ceil(max(ready_wall + plan.alarm_warmup_s, (waited_wall or 0) + 1))
    return w0, w0 + int(plan.alarm_window_s)


def behind_s(server: Server) -> float | None:
    """The platform's `squall_alarm_fires_behind_seconds`: how late its oldest due tick not
    yet fired is (None when the scrape failed)."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return metric_samples(text).get("squall_alarm_fires_behind_seconds")


def wait_caught_up(server: Server, plan: Plan, *, spread: bool) -> dict[str, Any]:
    """Wait (at most `alarm_catchup_max_s`) until the restarted platform has fired the ticks
    missed while it was down: three scrapes in a row, a second apart, that find no due tick
    waiting longer than `CAUGHT_UP_BEHIND_S` for the ticks' shape (`spread`: jittered over
    each second; the restart's backlog is the seconds it was down). The scrape walks every
    alarm, so it is not done inside the window."""
    most_behind_on_time = CAUGHT_UP_BEHIND_S["spread" if spread else "burst"]
    started = time.time()
    deadline = started + plan.alarm_catchup_max_s
    most, on_time = 0.0, 0
    while time.time() < deadline:
        behind = behind_s(server)
        if behind is not None:
            most = max(most, behind)
            on_time = on_time + 1 if behind < most_behind_on_time else 0
            if on_time == 3:
                now = round(time.time(), 3)
                return {"caught_up_wall": now, "waited_wall": now, "most_behind_s": round(most, 3)}
        time.sleep(1.0)
    return {"caught_up_wall": None, "waited_wall": time.time(), "most_behind_s": round(most, 3)}


def ticks_between(firing: int, first: int, end: int) -> Iterator[tuple[int, int]]:
    """(trigger index, tick in epoch seconds) of every fire scheduled in [first, end)."""
    for t in range(first, end):
        for i in range(t % 60, firing, 60):
            yield i, t


def tick_id(i: int, t: int) -> str:
    return activation_id_for(f"{NAMESPACE}/{trigger_name(i)}", datetime.fromtimestamp(t, UTC))


def log_event_wall(server: Server, needle: str) -> float | None:
    """time.time() of the first server log line containing `needle` (ms resolution, from the
    log's local-time stamp), None when there is none."""
    try:
        text = server.log_path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if needle in line:
            try:
                stamp = datetime.strptime(line[:23], LOG_TIME_FORMAT)
            except ValueError:
                return None
            return stamp.timestamp()  # naive: read as local time, as logging wrote it
    return None


def boot_figures(server: Server) -> dict[str, Any]:
    ready = server.ready_at
    loaded = log_event_wall(server, ALARM_LOG_LINE)
    return {
        "ready_s": round(ready - server.launched_at, 3) if ready is not None else None,
        "alarms_loaded_s": round(loaded - server.launched_wall, 3) if loaded else None,
        "alarms_loaded_wall": loaded,
        "ready_wall": round(server.launched_wall + (ready or 0) - server.launched_at, 3),
        "launched_wall": round(server.launched_wall, 3),
    }


def memory_figures(proc: psutil.Process) -> dict[str, Any]:
    return {**(memory_of(proc) or {}), "peak_rss_mib": peak_rss_mib(proc)}


# -- Squall ------------------------------------------------------------------------------------


def phase_squall_alarms(plan: Plan, rule_status: str, jitter_s: float = 0.0) -> dict[str, Any]:
    check_window(plan)
    root = Path(tempfile.mkdtemp(prefix="squall-bench-alarms-"))
    data = root / "data"
    data.mkdir(mode=0o700)
    auth = guest_auth()
    firing, idle = plan.alarm_firing, plan.alarm_idle
    out: dict[str, Any] = {
        "settings": dict(SETTINGS),
        "firing": firing,
        "idle": idle,
        "alarms": firing + idle,
        "rule_status": rule_status,
        "jitter_s": jitter_s,
        "window_s": int(plan.alarm_window_s),
        "warmup_s": plan.alarm_warmup_s,
    }
    try:
        out["seed"] = seed(
            data / "squall.db", firing, idle, rule_status, jitter_s, plan.alarm_seed_lead_s
        )
        timeout = plan.alarm_boot_timeout_s
        with squall_server(SETTINGS, timeout, data_dir=data, auth=auth, poll_s=0.01) as first:
            out["first_boot"] = boot_figures(first)
            # > 0: the first boot was ready before the seeded alarms' first ticks (no backlog)
            out["first_boot"]["ready_before_first_ticks_s"] = round(
                out["seed"]["first_ticks_after_wall"] - out["first_boot"]["ready_wall"], 3
            )
            time.sleep(plan.alarm_first_boot_s)
            stopped_wall = time.time()
        out["first_boot"].update(
            stop_sent_wall=round(stopped_wall, 3), stop_s=first.stop_s, killed=first.killed
        )
        fires_before = fires_total(data / "squall.db")
        with squall_server(SETTINGS, timeout, data_dir=data, auth=auth, poll_s=0.01) as squall:
            restart = boot_figures(squall)
            main = squall.process()
            out["memory_at_ready"] = memory_figures(main)
            catchup = wait_caught_up(squall, plan, spread=jitter_s > 0)
            caught_up = catchup["caught_up_wall"]
            restart["caught_up_s"] = (
                round(caught_up - restart["ready_wall"], 3) if caught_up else None
            )
            restart["most_behind_s"] = catchup["most_behind_s"]
            w0, w1 = choose_window(restart["ready_wall"], catchup["waited_wall"], plan)
            sleep_until(w0)
            before = cpu_snapshot(main)
            sleep_until(w1)
            after = cpu_snapshot(main)
            out["memory_end"] = memory_figures(main)
            out["tree_memory_end"] = tree_memory(main)
            sleep_until(w1 + plan.alarm_stop_margin_s)
            stop2_wall = time.time()
        restart.update(stop_s=squall.stop_s, killed=squall.killed)
        # Every fire the restarted server delivered, from the alarms' own counters: a rate
        # that holds with inactive rules too (no records) and while the platform is behind.
        delivered_life = fires_total(data / "squall.db") - fires_before
        life_from = restart["alarms_loaded_wall"] or restart["ready_wall"]
        out["restart_life"] = {
            "fires_delivered": delivered_life,
            "seconds": round(stop2_wall - life_from, 2),
            "fires_per_s": round(delivered_life / max(stop2_wall - life_from, 1e-3), 1),
        }
        out["restart"] = restart
        out["window"] = {"w0": w0, "w1": w1}
        analysis = analyze_squall(
            data / "squall.db",
            firing,
            w0,
            w1,
            int(stopped_wall),
            restart["launched_wall"],
            recorded=rule_status == ACTIVE,
            stop_wall=stop2_wall,
            jitter_s=jitter_s,
        )
        out.update(analysis)
        delivered = analysis["window_fires"]["delivered"]
        wf = out["window_fires"]
        # CPU per fire made in the window, whatever its tick (a backlog fires older ticks):
        # counted from the records, or with inactive rules from the firesCount rate.
        if rule_status == ACTIVE:
            fires_made, out["cpu_fires_source"] = wf["landed_in_window"], "records"
        else:
            fires_made = round(out["restart_life"]["fires_per_s"] * (w1 - w0))
            out["cpu_fires_source"] = "firesCount rate x window"
        out["cpu"] = cpu_per_op(before, after, fires_made)
        out["fires_per_s"] = round(delivered / (w1 - w0), 1)
        wf["lost_or_doubled"] = wf["lost"] + wf["doubled"]
        out["records_landed_per_s"] = round(wf["landed_in_window"] / (w1 - w0), 1)
        first_fire = analysis.get("first_fire_wall_ms")
        out["restart"]["first_fire_landed_s"] = (
            round(first_fire / 1000 - restart["launched_wall"], 3) if first_fire else None
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def read_trigger_records(conn: sqlite3.Connection, since_ms: int) -> dict[str, tuple[int, bool]]:
    """activation id -> (start ms, its rule line reports success) of the triggers' records."""
    found: dict[str, tuple[int, bool]] = {}
    rows = conn.execute(
        "SELECT activation_id, start_ms, json_extract(doc, '$.logs[0]') FROM activations "
        "WHERE namespace = ? AND name GLOB ? AND start_ms >= ?",
        (NAMESPACE, TRIGGER_GLOB, since_ms),
    )
    for aid, start, line in rows:
        ok = False
        if isinstance(line, str):
            with contextlib.suppress(orjson.JSONDecodeError):
                ok = bool(orjson.loads(line).get("success"))
        found[aid] = (int(start), ok)
    return found


def read_action_causes(conn: sqlite3.Connection, since_ms: int) -> tuple[Counter[str], set[str]]:
    """Action activations per cause (trigger activation id), and the causes of successful ones."""
    per_cause: Counter[str] = Counter()
    succeeded: set[str] = set()
    rows = conn.execute(
        "SELECT json_extract(doc, '$.cause'), json_extract(doc, '$.response.success') "
        "FROM activations WHERE namespace = ? AND name = ? AND start_ms >= ?",
        (NAMESPACE, NOOP_ACTION, since_ms),
    )
    for cause, success in rows:
        if isinstance(cause, str):
            per_cause[cause] += 1
            if success:
                succeeded.add(cause)
    return per_cause, succeeded


def read_last_fires(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Trigger name -> the alarm document's `lastFire` (when it has one)."""
    rows = conn.execute(
        "SELECT name, json_extract(doc, '$.lastFire') FROM entities "
        "WHERE collection = ? AND namespace = ?",
        (ALARMS_COLLECTION, store_path(NAMESPACE)),
    )
    return {name: orjson.loads(last) for name, last in rows if last}


def fires_total(db: Path) -> int:
    """The sum of every alarm's `firesCount` (fires delivered since creation), as stored."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT coalesce(sum(json_extract(doc, '$.firesCount')), 0) FROM entities "
            "WHERE collection = ? AND namespace = ?",
            (ALARMS_COLLECTION, store_path(NAMESPACE)),
        ).fetchone()
    finally:
        conn.close()
    return int(row[0])


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def analyze_squall(
    db: Path,
    firing: int,
    w0: int,
    w1: int,
    gap_from: int,
    restart_wall: float,
    recorded: bool,
    stop_wall: float,
    jitter_s: float = 0.0,
) -> dict[str, Any]:
    """Every fire scheduled from the first boot's stop (`gap_from`) to W1, looked up by its id;
    `restart_wall` is when the measured boot's process started; `recorded`: the rules are
    active, so every fire leaves a trigger activation. A window tick not fired by the stop
    (`stop_wall`) enters the lag figures censored: with the lag it had at least, stop - tick.
    With `jitter_s`, a record's lag is from its tick's due instant (tick + jitter)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        since_ms = (gap_from - 120) * 1000
        records = read_trigger_records(conn, since_ms)
        per_cause, succeeded = read_action_causes(conn, since_ms)
        last_fires = read_last_fires(conn)
    finally:
        conn.close()
    window = [(i, t, tick_id(i, t)) for i, t in ticks_between(firing, w0, w1)]
    gap = [(i, t, tick_id(i, t)) for i, t in ticks_between(firing, gap_from, w0)]
    lags = [
        records[a][0] - due_ms(i, t, jitter_s) if a in records else censored_ms(stop_wall, t)
        for i, t, a in window
    ]
    window_ids = {a for _, _, a in window}
    landed = sum(1 for start, _ in records.values() if w0 * 1000 <= start < w1 * 1000)
    found = sum(1 for a in window_ids if a in records)
    out: dict[str, Any] = {
        "window_fires": {
            "expected": len(window),
            "recorded": found,
            "rule_lines_ok": sum(1 for a in window_ids if a in records and records[a][1]),
            "actions_recorded": sum(1 for a in window_ids if per_cause[a] > 0),
            "actions_succeeded": sum(1 for a in window_ids if a in succeeded),
            "doubled": sum(per_cause[a] - 1 for a in window_ids if per_cause[a] > 1),
            "landed_in_window": landed,
        },
        "record_lag": summarize_ms([float(x) for x in lags]),
        "record_lag_censored": sum(1 for a in window_ids if a not in records),
    }
    gap_found = [records[a][0] - t * 1000 for _, t, a in gap if a in records]
    out["restart_gap"] = {
        "from_wall": gap_from,
        "to_wall": w0,
        "expected": len(gap),
        "recorded": len(gap_found),
        "doubled": sum(per_cause[a] - 1 for _, _, a in gap if per_cause[a] > 1),
        "lag": summarize_ms([float(x) for x in gap_found]),
    }
    restart_ms = restart_wall * 1000
    starts = [start for start, _ in records.values() if start >= restart_ms]
    out["first_fire_wall_ms"] = min(starts) if starts else None
    out["scheduler"] = scheduler_side(last_fires, firing, w0, w1, stop_wall)
    sched = out["scheduler"]
    wf = out["window_fires"]
    if recorded:
        wf.update(source="trigger activation records", delivered=found, unverifiable=0)
        due = "due instant (tick + jitter)" if jitter_s else "scheduled second"
        out["lag"], out["lag_source"] = out["record_lag"], f"record start - {due}"
        out["lag_censored"] = out["record_lag_censored"]
    else:  # inactive rules: the platform records no trigger activation (OpenWhisk's 204)
        wf.update(
            source="alarm documents (lastFire); no records with inactive rules",
            delivered=sched["delivered"],
            unverifiable=sched["fired_again_before_stop"],
        )
        out["lag"], out["lag_censored"] = sched["lag"], sched["not_fired_by_stop"]
        out["lag_source"] = "AlarmService lastFire.lagMs (fire call - scheduled second)"
    wf["lost"] = wf["expected"] - wf["delivered"] - wf["unverifiable"]
    return out


def due_ms(i: int, tick: int, jitter_s: float) -> float:
    """When trigger i's tick (epoch seconds) was due, in epoch ms: the tick plus its jitter,
    as the platform derives it from the alarm id and the tick."""
    if jitter_s <= 0:
        return tick * 1000.0
    when = datetime.fromtimestamp(tick, UTC)
    due = due_at(f"{NAMESPACE}/{trigger_name(i)}", when, jitter_s)
    return due.timestamp() * 1000.0


def censored_ms(stop_wall: float, tick: int) -> float:
    """The least lag of a tick that had not fired when the server was told to stop."""
    return (stop_wall - tick) * 1000.0


def scheduler_side(
    last_fires: dict[str, dict[str, Any]], firing: int, w0: int, w1: int, stop_wall: float
) -> dict[str, Any]:
    """From the alarms' documents: each firing alarm's last fire against its window tick (a
    window under a minute holds one tick per alarm; the stop comes before the next one)."""
    lags: list[float] = []
    outcomes: Counter[str] = Counter()
    expected = matched = later = not_fired = 0
    for i in range(firing):
        offset = (i % 60 - w0) % 60
        if offset >= w1 - w0:
            continue  # no tick of this alarm in the window
        expected += 1
        tick = w0 + offset
        last = last_fires.get(trigger_name(i))
        fired_tick = iso_seconds(last["tick"]) if last else None
        if last is not None and fired_tick == tick:
            matched += 1
            lags.append(float(last.get("lagMs", 0.0)))
            outcomes[str(last.get("outcome"))] += 1
        elif fired_tick is not None and fired_tick > tick:
            later += 1  # fired again after the window before the stop: not checkable here
        else:
            not_fired += 1  # the window's tick had not fired by the stop
            lags.append(censored_ms(stop_wall, tick))
    return {
        "expected": expected,
        "last_fire_is_window_tick": matched,
        "delivered": outcomes["fired"] + outcomes["no_active_rules"],
        "outcomes": dict(outcomes),
        "not_fired_by_stop": not_fired,
        "fired_again_before_stop": later,
        "lag": summarize_ms(lags),
    }


# -- APScheduler -------------------------------------------------------------------------------


def apscheduler_version() -> str | None:
    if importlib.util.find_spec("apscheduler") is None:
        return None
    from importlib import metadata

    try:
        return metadata.version("apscheduler")
    except metadata.PackageNotFoundError:
        return None


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"APScheduler peer exited ({proc.returncode}): {tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"APScheduler peer not ready in {timeout:.0f} s: {tail(log)}")
        time.sleep(0.01)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def phase_apscheduler(plan: Plan) -> dict[str, Any]:
    check_window(plan)
    version = apscheduler_version()
    if version is None:
        if plan.smoke:
            return {"skipped": "APScheduler is not installed (pip install 'apscheduler>=3.10,<4')"}
        raise RuntimeError("APScheduler 3.x is not installed: pip install 'apscheduler>=3.10,<4'")
    firing, idle = plan.alarm_firing, plan.alarm_idle
    root = Path(tempfile.mkdtemp(prefix="squall-bench-apscheduler-"))
    ready_file, fires_file, log = root / "ready.json", root / "fires.json", root / "peer.log"
    run_s = plan.alarm_boot_timeout_s + plan.alarm_warmup_s + 60 + 30
    argv = [
        sys.executable, "-m", "bench.apscheduler_peer", "--firing", str(firing),
        "--idle", str(idle), "--ready", str(ready_file), "--out", str(fires_file),
        "--max-fires", str(int(firing / 60 * run_s) + 1000), "--max-seconds", str(run_s),
    ]  # fmt: skip
    out: dict[str, Any] = {
        "version": version,
        "firing": firing,
        "idle": idle,
        "alarms": firing + idle,
        "window_s": int(plan.alarm_window_s),
        "warmup_s": plan.alarm_warmup_s,
    }
    try:
        with open(log, "wb") as log_file:
            launched_at, launched_wall = time.monotonic(), time.time()
            proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=clean_env({}),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_file(ready_file, proc, plan.alarm_boot_timeout_s, log)
            ready_at = time.monotonic()
            peer = psutil.Process(proc.pid)
            out["startup"] = {
                "ready_s": round(ready_at - launched_at, 3),
                **json.loads(ready_file.read_text()),
            }
            out["memory_at_ready"] = memory_figures(peer)
            w0, w1 = choose_window(launched_wall + ready_at - launched_at, None, plan)
            sleep_until(w0)
            before = cpu_snapshot(peer)
            sleep_until(w1)
            after = cpu_snapshot(peer)
            out["memory_end"] = memory_figures(peer)
            sleep_until(w1 + plan.alarm_stop_margin_s)
            stop_process(proc)
            if proc.returncode != 0:
                raise RuntimeError(f"APScheduler peer failed ({proc.returncode}): {tail(log)}")
            fires = json.loads(fires_file.read_text())
        finally:
            stop_process(proc, grace_s=5.0)
        out["window"] = {"w0": w0, "w1": w1}
        out.update(analyze_apscheduler(fires, firing, w0, w1))
        delivered = out["window_fires"]["delivered"]
        out["cpu"] = cpu_per_op(before, after, delivered)
        out["fires_per_s"] = round(delivered / (w1 - w0), 1)
        wf = out["window_fires"]
        wf["lost_or_doubled"] = wf["lost"] + wf["doubled"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def scheduled_second(i: int, fired: float) -> int:
    """The tick a once-a-minute job at second i mod 60 ran for: the latest such second."""
    base = math.floor(fired)
    return base - (base - i % 60) % 60


def analyze_apscheduler(fires: dict[str, Any], firing: int, w0: int, w1: int) -> dict[str, Any]:
    seen: Counter[tuple[int, int]] = Counter()
    lags: list[float] = []
    idle_fired = 0
    for i, fired in zip(fires["index"], fires["time"], strict=True):
        if i >= firing:
            idle_fired += 1
            continue
        tick = scheduled_second(i, fired)
        if w0 <= tick < w1:
            seen[(i, tick)] += 1
            lags.append((fired - tick) * 1000.0)
    expected = sum(1 for _ in ticks_between(firing, w0, w1))
    delivered = len(seen)
    return {
        "window_fires": {
            "expected": expected,
            "delivered": delivered,
            "lost": expected - delivered,
            "doubled": sum(c - 1 for c in seen.values()),
            "idle_jobs_fired": idle_fired,
            "recorded_total": len(fires["index"]),
            "overflow": fires.get("overflow", 0),
            "source": "the jobs' own records",
        },
        "lag": summarize_ms(lags),
        "lag_source": "job start - scheduled second",
        "missed_events": fires.get("missed", 0),
        "error_events": fires.get("errors", 0),
    }


# -- the phases --------------------------------------------------------------------------------


def phase_alarms(plan: Plan) -> dict[str, Any]:
    return phase_squall_alarms(plan, ACTIVE)


def phase_alarms_inactive(plan: Plan) -> dict[str, Any]:
    return phase_squall_alarms(plan, INACTIVE)


def phase_alarms_spread(plan: Plan) -> dict[str, Any]:
    """Rules inactive, each firing alarm's tick spread over its second by jitterSeconds: the
    same rate without a thousand ticks due at one instant (lag is then from the due instant,
    tick + jitter, as the alarm records it)."""
    return phase_squall_alarms(plan, INACTIVE, jitter_s=plan.alarm_spread_jitter_s)


def phase_alarms_spread_active(plan: Plan) -> dict[str, Any]:
    """Rules active (each fire recorded, its rule's no-op action run and recorded), the ticks
    spread over each second as in `alarms_spread`: the whole fire's lag at the same rate,
    from each tick's due instant to its trigger activation's start."""
    return phase_squall_alarms(plan, ACTIVE, jitter_s=plan.alarm_spread_jitter_s)


