"""Renders bench/results/latest.json into BENCHMARKS.md, between the results markers; the
hand-written part above them is kept as it is.

    python -m bench.report [--results bench/results/latest.json] [--markdown BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench import plots
from bench.targets import dig, evaluate

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "bench" / "results" / "latest.json"
# The run recorded on a quiet machine before the peers were added (2026-11-27): every figure
# of it stays in BENCHMARKS.md, beside the latest run's, whatever the latest run measured.
REFERENCE = REPO_ROOT / "bench" / "results" / "reference.json"
MARKDOWN = REPO_ROOT / "BENCHMARKS.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"

HEADER = """# Benchmarks

Hand-written above the results markers (how to run, the machine, how to read the figures,
published figures of other platforms with their sources); everything between them is
regenerated from `bench/results/latest.json` by `python -m bench.report` (which `python -m
bench` runs).

"""


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def verdict(passed: bool | None) -> str:
    return {True: "**pass**", False: "**MISS**", None: "not measured"}[passed]


def targets_section(
    results: dict[str, Any], reference: dict[str, Any] | None = None
) -> list[str]:
    rows = [
        [
            c["label"], fmt(c["value"]) + " " + c["unit"], f"{c['op']} {fmt(c['target'])}",
            verdict(c["passed"]), fmt(c["baseline"]), fmt(c["ratio_to_baseline"]) + "x"
            if c["ratio_to_baseline"] is not None else "-",
        ]
        for c in results.get("checks", [])
    ]  # fmt: skip
    headers = ["Figure", "Measured", "Target", "Result", "Baseline", "Squall ÷ baseline"]
    intro: list[str] = []
    if reference is not None:
        recorded = {c["key"]: c for c in evaluate(reference)}
        for row, c in zip(rows, results.get("checks", []), strict=True):
            before = recorded.get(c["key"]) or {}
            row += [fmt(before.get("value")), ratio(c["value"], before.get("value"))]
        headers += ["Reference run", "÷ reference"]
        intro = [
            "'Reference run': the same figure in the run recorded on a quiet machine "
            f"({(reference.get('machine') or {}).get('date')}, `{REFERENCE.name}`, every "
            "table of it at the end of this section); '÷ reference' > 1 on a time means "
            "slower than then.",
            "",
        ]
    return ["### Targets", "", *intro, *table(headers, rows)]


def latency_row(name: str, r: dict[str, Any] | None) -> list[Any]:
    r = r or {}
    lat, cpu = r.get("latency", {}), r.get("cpu", {})
    keys = ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms", "mean_ms")
    return [
        name, r.get("requests"), r.get("errors"), *(lat.get(k) for k in keys),
        cpu.get("main_cpu_us_per_op"), cpu.get("tree_cpu_us_per_op"),
    ]  # fmt: skip


def latency_section(results: dict[str, Any]) -> list[str]:
    lat = dig(results, ("warm", "latency")) or {}
    plan = results.get("plan", {})
    headers = (
        "Server", "Requests", "Errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
        "mean ms", "CPU µs/op (server)", "CPU µs/op (server+sandboxes)",
    )  # fmt: skip
    rows = [
        latency_row("baseline: GET / (hello world)", lat.get("baseline")),
        latency_row("Squall: POST blocking invoke", lat.get("squall")),
    ]
    intro = (
        f"One keep-alive connection (http.client, `perf_counter_ns`) in its own process, "
        f"{fmt(plan.get('latency_warmup'))} warm-up requests, then "
        f"{fmt(plan.get('latency_count'))} measured. Squall's record is persisted by the "
        f"platform (read back through the API: {fmt(dig(results, ('warm', 'record_persisted')))})."
    )
    return ["### Warm invoke latency (concurrency 1)", "", intro, "", *table(headers, rows)]


def throughput_row(name: str, r: dict[str, Any] | None, base_rps: Any) -> list[Any]:
    r = r or {}
    lat, cpu = r.get("latency", {}), r.get("cpu", {})
    rps = r.get("requests_per_s")
    share = round(rps / base_rps, 3) if rps and base_rps else None
    return [
        name, r.get("tool"), r.get("connections"), r.get("elapsed_s"), rps, share,
        lat.get("p50_ms"), lat.get("p90_ms"), lat.get("p99_ms"), r.get("errors"),
        cpu.get("main_cpu_us_per_op"), cpu.get("tree_cpu_us_per_op"),
    ]  # fmt: skip


def throughput_section(results: dict[str, Any]) -> list[str]:
    thr = dig(results, ("warm", "throughput")) or {}
    base_rps = dig(thr, ("baseline", "requests_per_s"))
    headers = (
        "Server", "Tool", "Clients", "Seconds", "req/s", "÷ baseline", "p50 ms", "p90 ms",
        "p99 ms", "Errors", "CPU µs/op (server)", "CPU µs/op (server+sandboxes)",
    )  # fmt: skip
    rows = [
        throughput_row("baseline: GET /", thr.get("baseline"), base_rps),
        throughput_row("Squall: POST blocking invoke", thr.get("squall"), base_rps),
    ]
    return ["### Throughput", "", *table(headers, rows)]


COLD = (
    ("cold_steady", "stem cells refilled (pause between)"),
    ("cold_burst", "back-to-back burst"),
    ("cold_no_prewarm", "SQUALL_PREWARM_COUNT=0"),
)


def cold_row(label: str, r: dict[str, Any] | None) -> list[Any]:
    r = r or {}
    client, init = r.get("client", {}), r.get("init_time", {})
    cpu = r.get("cpu", {})
    tree = cpu.get("tree_cpu_us_per_op")
    return [
        label, (r.get("settings") or {}).get("SQUALL_PREWARM_COUNT", "2 (default)"),
        fmt(r.get("pause_s", 0) * 1000, 0), r.get("invocations"), r.get("cold"), r.get("failed"),
        client.get("p50_ms"), client.get("p90_ms"), client.get("max_ms"), init.get("p50_ms"),
        dig(r, ("wait_time", "p50_ms")), tree / 1000 if tree is not None else None,
    ]  # fmt: skip


def cold_section(results: dict[str, Any]) -> list[str]:
    headers = (
        "Scenario", "Prewarm", "Pause ms", "Invokes", "Cold (has initTime)", "Failed",
        "client p50 ms", "client p90 ms", "client max ms", "initTime p50 ms",
        "waitTime p50 ms", "CPU ms/op (server+sandboxes)",
    )  # fmt: skip
    rows = [cold_row(label, results.get(key)) for key, label in COLD]
    intro = (
        "First blocking invoke of each of a set of freshly created actions (default memory, "
        "so a stem cell fits), one fresh server per scenario, after one uncounted cold start. "
        "Client-observed latency on a keep-alive connection; `initTime`/`waitTime` are the "
        "record's annotations (whole milliseconds)."
    )
    return ["### Cold start", "", intro, "", *table(headers, rows)]


def nodejs_section(results: dict[str, Any]) -> list[str]:
    r = results.get("nodejs")
    if not r:
        return []
    if "skipped" in r:
        return ["### Node.js actions", "", f"Not measured: {r['skipped']}.", ""]  # fmt: skip
    headers = ("Measure", "Invokes", "Failed", "client p50 ms", "client p90 ms",
               "client p99 ms", "initTime p50 ms")  # fmt: skip
    cold = r.get("cold") or {}
    rows = [[
        "Node.js cold start (stem cell)", cold.get("invocations"), cold.get("failed"),
        dig(cold, ("client", "p50_ms")), dig(cold, ("client", "p90_ms")),
        dig(cold, ("client", "p99_ms")), dig(cold, ("init_time", "p50_ms")),
    ]]  # fmt: skip
    for kind, label in (("nodejs:20", "Node.js warm invoke"), ("python:3", "Python warm invoke")):
        w = dig(r, ("warm", kind)) or {}
        rows.append([
            label, w.get("invocations"), w.get("failed"), dig(w, ("client", "p50_ms")),
            dig(w, ("client", "p90_ms")), dig(w, ("client", "p99_ms")), None,
        ])  # fmt: skip
    intro = (
        "`function main() { return {ok: true}; }`, 256 MB (the size of the manifest's Node.js "
        "stem cells), blocking invokes one at a time on a keep-alive connection; cold starts "
        "are fresh actions with a pause between so a stem cell is ready; the Python row is "
        "the same loop against a Python action on the same server."
    )
    return ["### Node.js actions", "", intro, "", *table(headers, rows)]


def memory_rows(results: dict[str, Any]) -> list[list[Any]]:
    mem = results.get("memory") or {}
    warm = results.get("warm") or {}
    rows = []
    for label, m in (
        ("idle platform, no sandbox (prewarm 0)", mem.get("empty")),
        (f"{fmt(dig(mem, ('loaded', 'sandbox_count')))} warm sandboxes, 128 MB each",
         mem.get("loaded")),
        ("stem cells only (default prewarm)", warm.get("stem_cells_memory")),
        ("after the warm throughput run", warm.get("memory_after_throughput")),
    ):  # fmt: skip
        m = m or {}
        zyg = m.get("zygotes") or [{}]
        rows.append([
            label, dig(m, ("main", "rss_mib")), zyg[0].get("rss_mib"), m.get("sandbox_count"),
            dig(m, ("sandbox_uss_mib", "p50")), dig(m, ("sandbox_uss_mib", "max")),
            dig(m, ("sandbox_pss_mib", "p50")), dig(m, ("sandbox_rss_mib", "p50")),
            m.get("total_rss_mib"), m.get("total_pss_mib"),
        ])  # fmt: skip
    return rows


def memory_section(results: dict[str, Any]) -> list[str]:
    headers = (
        "State", "Platform RSS MiB", "Zygote RSS MiB", "Sandboxes", "Sandbox USS p50 MiB",
        "Sandbox USS max MiB", "Sandbox PSS p50 MiB", "Sandbox RSS p50 MiB",
        "Total RSS MiB (sum)", "Total PSS MiB",
    )  # fmt: skip
    mem = results.get("memory") or {}
    intro = (
        f"psutil `memory_full_info()`; sandboxes are the zygote's children. The loaded state "
        f"invoked {fmt(mem.get('invoked'))} actions once each in "
        f"{fmt(mem.get('invoke_elapsed_s'))} s ({fmt(mem.get('failed'))} failed). The RSS sum "
        "counts pages shared between the forked processes once per process; the PSS total "
        "splits them and is the platform's real footprint."
    )
    return ["### Memory", "", intro, "", *table(headers, memory_rows(results))]


ALARM_RUNS = (
    ("alarms", "Squall, rules active (record + no-op action run)"),
    ("alarms_inactive_rules", "Squall, rules inactive (no record, no action)"),
    ("alarms_spread", "Squall, rules inactive, ticks spread over each second (jitter 1 s)"),
    ("alarms_spread_active", "Squall, rules active, ticks spread over each second (jitter 1 s)"),
    ("alarms_apscheduler", "APScheduler {version} AsyncIOScheduler, memory store"),
)


SQUALL_ALARM_RUNS = ("alarms", "alarms_inactive_rules", "alarms_spread", "alarms_spread_active")


def alarm_label(key: str, label: str, r: dict[str, Any]) -> str:
    return label.format(version=r.get("version", "3.x"))


def alarm_start_s(r: dict[str, Any]) -> Any:
    return dig(r, ("restart", "ready_s")) or dig(r, ("startup", "ready_s"))


def alarm_timing_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for key, label in ALARM_RUNS:
        r = results.get(key) or {}
        wf, lag = r.get("window_fires") or {}, r.get("lag") or {}
        rows.append([
            alarm_label(key, label, r), r.get("alarms"), alarm_start_s(r),
            dig(r, ("restart", "caught_up_s")), r.get("window_s"),
            wf.get("expected"), wf.get("delivered"), wf.get("lost"), wf.get("doubled"),
            r.get("fires_per_s"), lag.get("p50_ms"), lag.get("p90_ms"), lag.get("p99_ms"),
            lag.get("max_ms"), r.get("lag_censored", 0) if lag else None,
            r.get("lag_source") or r.get("skipped"),
        ])  # fmt: skip
    return rows


def per_fire_ms(r: dict[str, Any], key: str) -> Any:
    value = dig(r, ("cpu", key))
    return value / 1000 if value is not None else None


def alarm_cost_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for key, label in ALARM_RUNS:
        r = results.get(key) or {}
        end, ready = r.get("memory_end") or {}, r.get("memory_at_ready") or {}
        rows.append([
            alarm_label(key, label, r), per_fire_ms(r, "main_cpu_us_per_op"),
            per_fire_ms(r, "tree_cpu_us_per_op"), ready.get("rss_mib"), end.get("rss_mib"),
            end.get("uss_mib"), end.get("peak_rss_mib"),
        ])  # fmt: skip
    return rows


def alarm_ratio_rows(results: dict[str, Any]) -> list[list[Any]]:
    base = results.get("alarms_apscheduler") or {}
    figures = (
        ("start to ready s", alarm_start_s),
        ("lag p50 ms", lambda r: dig(r, ("lag", "p50_ms"))),
        ("lag p99 ms", lambda r: dig(r, ("lag", "p99_ms"))),
        ("lag max ms", lambda r: dig(r, ("lag", "max_ms"))),
        ("CPU ms per fire (with sandboxes)", lambda r: per_fire_ms(r, "tree_cpu_us_per_op")),
        ("RSS MiB, end of window", lambda r: dig(r, ("memory_end", "rss_mib"))),
        ("peak RSS MiB", lambda r: dig(r, ("memory_end", "peak_rss_mib"))),
    )
    rows = []
    for name, get in figures:
        b = get(base)
        row: list[Any] = [name, b]
        for key in SQUALL_ALARM_RUNS:
            v = get(results.get(key) or {})
            row += [v, ratio(v, b)]
        rows.append(row)
    return rows


def alarm_detail_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for key, label in ALARM_RUNS:
        if key not in SQUALL_ALARM_RUNS:
            continue
        r = results.get(key) or {}
        wf, gap, sched = r.get("window_fires") or {}, r.get("restart_gap") or {}, r.get(
            "scheduler") or {}
        rows.append([
            label, dig(r, ("seed", "write_s")), dig(r, ("first_boot", "ready_s")),
            dig(r, ("restart", "alarms_loaded_s")), dig(r, ("restart", "ready_s")),
            dig(r, ("restart", "first_fire_landed_s")),
            f"{fmt(gap.get('recorded'))} / {fmt(gap.get('expected'))}"
            if gap.get("recorded") else "-", dig(gap, ("lag", "max_ms")),
            dig(sched, ("lag", "p50_ms")), dig(sched, ("lag", "p99_ms")),
            dig(sched, ("lag", "max_ms")), wf.get("rule_lines_ok"), wf.get("actions_succeeded"),
            r.get("records_landed_per_s"), dig(r, ("restart_life", "fires_per_s")),
            stop_text(r.get("first_boot")), stop_text(r.get("restart")),
        ])  # fmt: skip
    return rows


def stop_text(boot: dict[str, Any] | None) -> str:
    """How long SIGTERM took; 'killed' when it had to be SIGKILLed after the grace period."""
    boot = boot or {}
    if boot.get("stop_s") is None:
        return "-"
    return fmt(boot["stop_s"]) + (" (killed)" if boot.get("killed") else "")


def ratio(value: Any, base: Any) -> str:
    if not isinstance(value, int | float) or not isinstance(base, int | float) or not base:
        return "-"
    return f"{value / base:,.2f}x"


def alarms_section(results: dict[str, Any]) -> list[str]:
    if not any(results.get(key) for key, _ in ALARM_RUNS):
        return []
    plan = results.get("plan", {})
    firing, idle = plan.get("alarm_firing"), plan.get("alarm_idle")
    intro = (
        f"{fmt(firing)} alarm triggers with a 6-field cron firing once a minute at second "
        f"i mod 60 ({fmt((firing or 0) / 60, 0)} fires every second) plus {fmt(idle)} with a "
        "yearly cron (registered, idle). Squall: one rule per firing trigger to the same no-op "
        "action `def main(a): return {}`; the data dir is seeded offline (the alarms' first "
        f"ticks {fmt(plan.get('alarm_seed_lead_s'))} s after seeding starts, so the first boot "
        "starts on time), booted once and "
        "stopped, then **restarted**: the restart is timed from process start to the first "
        "answered `/ping` (the platform serves only after `AlarmService.start` has loaded and "
        "armed every alarm). The harness then waits (at most "
        f"{fmt(plan.get('alarm_catchup_max_s'))} s) until the platform has fired the ticks "
        "missed while it was down (`squall_alarm_fires_behind_seconds` under 1.5 s on three "
        "scrapes a second apart; 'Caught up s' in the timing table, from ready): the window "
        "measures the sustained rate, not the restart's catch-up. "
        f"After at least {fmt(plan.get('alarm_warmup_s'))} s of warm-up, a window "
        f"of {fmt(plan.get('alarm_window_s'))} whole seconds is measured; the server is "
        f"stopped {fmt(plan.get('alarm_stop_margin_s'))} s after it and its SQLite file is read "
        "directly. Every tick has a deterministic activation id, so each expected fire is "
        "looked up by id: lost = no record, lag = record `start` (whole ms) minus the "
        "scheduled second; doubled = more than one action activation with the same trigger "
        "activation as `cause`. 'Not fired' counts the window's ticks with no fire by the "
        "stop: lost outright, or dropped by the `fire_once` misfire policy while the platform "
        "was behind (a tick more than 1 s late is missed; only the latest missed tick of an "
        "alarm fires). A window tick not fired by the stop enters the lag figures "
        "**censored**, with the lag it had at least (stop - tick): 'Lag censored' counts them, "
        "and with any, the lag figures are lower bounds. APScheduler runs the same schedule in "
        "its own process."
    )
    timing_headers = (
        "Run", "Alarms", "Start to ready s", "Caught up s", "Window s", "Expected fires",
        "Delivered",
        "Not fired", "Doubled", "Fires/s", "Lag p50 ms", "Lag p90 ms", "Lag p99 ms", "Lag max ms",
        "Lag censored", "Lag measured as",
    )  # fmt: skip
    cost_headers = (
        "Run", "CPU ms/fire (process)", "CPU ms/fire (with zygote + sandboxes)",
        "RSS MiB at ready", "RSS MiB end of window", "USS MiB end of window", "Peak RSS MiB",
    )  # fmt: skip
    ratio_headers = (
        "Figure", "APScheduler", "Squall (rules active)", "÷ APScheduler",
        "Squall (rules inactive)", "÷ APScheduler", "Squall (spread)", "÷ APScheduler",
        "Squall (spread, rules active)", "÷ APScheduler",
    )  # fmt: skip
    detail_headers = (
        "Squall run", "Seed write s", "First boot ready s", "Restart: alarms loaded s (log)",
        "Restart: /ping s", "Restart: first fire landed s",
        "Ticks from the first boot's stop to W0: recorded / scheduled", "... their lag max ms",
        "Scheduler lag p50 ms", "Scheduler lag p99 ms", "Scheduler lag max ms",
        "Rule lines OK (window)", "Actions succeeded (window)",
        "Trigger records landing per s in the window (any tick)",
        "Fires delivered per s, restarted server's life (firesCount)", "First boot stop s",
        "Restart stop s",
    )  # fmt: skip
    work = (
        "Work per fire differs, and the figures should be read with that in mind. Squall, "
        "rules active: the AlarmService computes the tick's id and calls the controller's "
        "trigger fire, which takes the namespace's identity (cached for 10 s), checks the id "
        "is not recorded yet (only for a tick that may have fired: restored, caught up or "
        "retried), reads the trigger, resolves its rule, writes the trigger activation and "
        "flushes it (SQLite, group commit), sends the action to the scheduler and invoker, "
        "which run it in a warm sandbox and record its activation; then the alarm's new state "
        "(`lastFire`, `nextTick`) is written to SQLite in a batch with other alarms'. Spread: "
        "rules inactive, each firing alarm with `jitterSeconds` 1, so its ticks are due at a "
        "fixed offset within their second and lag is measured from that due instant. Spread, "
        "rules active: the same spread with the whole fire of the first run, lag from the due "
        "instant to the trigger record's start. "
        "Rules inactive: the same without the record, the "
        "flush and the action (OpenWhisk semantics: no active rule, no activation), so lag is "
        "the AlarmService's own (`lastFire.lagMs`, taken when it calls the fire) and delivery "
        "is read from the alarms' documents. APScheduler: computes the next run time, updates "
        "its in-memory job store and runs a coroutine that appends a timestamp: no I/O, no "
        "persistence, nothing that survives a restart."
    )
    heading = (
        f"### Alarms: {fmt((firing or 0) + (idle or 0))} alarm triggers, about "
        f"{fmt((firing or 0) / 60, 0)} fires per second"
    )
    return [
        heading,
        "",
        intro,
        "",
        *table(timing_headers, alarm_timing_rows(results)),
        *table(cost_headers, alarm_cost_rows(results)),
        "Squall ÷ APScheduler, same run:",
        "",
        *table(ratio_headers, alarm_ratio_rows(results)),
        "Squall details:",
        "",
        *table(detail_headers, alarm_detail_rows(results)),
        work,
        "",
    ]


STORE_NAMES = (
    ("sqlite", "SQLite"), ("postgresql", "PostgreSQL"), ("opensearch", "OpenSearch (osmem)"),
)


def stores_section(results: dict[str, Any]) -> list[str]:
    phase = results.get("stores")
    if not phase:
        return []
    seeded = phase.get("seeded") or {}
    intro = (
        "Activation stores, one run, SQLite as the baseline (÷ SQLite: the backend's figure "
        "divided by SQLite's). Writes: records handed to `store()` and flushed in the stores' "
        f"own batches ({fmt(dig(results, ('plan', 'store_write_records')))} records). Queries "
        f"through the store API on {fmt(seeded.get('records'))} records seeded in bulk (100 "
        "actions, 30 days), each a p50 over "
        f"{fmt(dig(results, ('plan', 'store_query_calls')))} random calls; duration "
        "statistics: one action over the last day. OpenSearch is osmem, an in-memory test "
        "server: its figures show the adapter's batching and queries, not a cluster's speed."
    )
    headers = ("Backend", "Writes records/s", "÷ SQLite", "store() µs", "List by name p50 ms",
               "p99 ms", "List name+range p50 ms", "p99 ms", "÷ SQLite",
               "Duration stats p50 ms", "÷ SQLite", "Seed s")  # fmt: skip
    measured = phase.get("writes") or {}
    rows = [store_row(phase, key, label) for key, label in STORE_NAMES if key in measured]
    notes = [f"- {key}: not measured in this run ({why})" for key, why in
             {**(phase.get("skipped") or {}), **(phase.get("failed") or {})}.items()]
    return ["### Activation stores", "", intro, "", *table(headers, rows),
            *([*notes, ""] if notes else [])]  # fmt: skip


def store_row(phase: dict[str, Any], key: str, label: str) -> list[Any]:
    writes = (phase.get("writes") or {}).get(key) or {}
    base_w = ((phase.get("writes") or {}).get("sqlite") or {}).get("records_per_s")
    seeded = (phase.get("seeded") or {}).get(key) or {}
    base = (phase.get("seeded") or {}).get("sqlite") or {}
    if key == "opensearch":  # queried over the records it wrote: no ratio to the 1M stores
        seeded, base = phase.get("opensearch_queries") or {}, {}
        label = f"{label}, {fmt(seeded.get('records'))} records"
    stats = seeded.get("duration_stats") or {}
    stats_base = (base.get("duration_stats") or {}).get("p50_ms")
    name, window = seeded.get("list_by_name") or {}, seeded.get("list_by_name_and_time") or {}
    return [
        label, fmt(writes.get("records_per_s"), 0), ratio(writes.get("records_per_s"), base_w),
        fmt(writes.get("store_call_us")), fmt(name.get("p50_ms")), fmt(name.get("p99_ms")),
        fmt(window.get("p50_ms")), fmt(window.get("p99_ms")),
        ratio(window.get("p50_ms"), (base.get("list_by_name_and_time") or {}).get("p50_ms")),
        fmt(stats.get("p50_ms")), ratio(stats.get("p50_ms"), stats_base),
        fmt(dig(phase, ("seeded", "seed_s", key))),
    ]  # fmt: skip


# -- concurrency sweeps and peers ----------------------------------------------------------


def sweep_run(results: dict[str, Any], phase: str, system: str, level: Any) -> dict[str, Any]:
    run: dict[str, Any] = dig(results, (phase, system, str(level))) or {}
    return run


def concurrency_section(results: dict[str, Any]) -> list[str]:
    phase = results.get("concurrency")
    if not phase:
        return []
    headers = (
        "Clients", "Baseline req/s", "Squall req/s", "Squall ÷ baseline", "Baseline p50 ms",
        "Baseline p99 ms", "Squall p50 ms", "Squall p90 ms", "Squall p99 ms",
        "Squall CPU µs/op (server)", "Squall CPU µs/op (server+sandboxes)",
        "Baseline CPU µs/op", "Errors (baseline / Squall)",
    )  # fmt: skip
    rows = []
    for level in phase.get("levels", []):
        base, squall = sweep_run(results, "concurrency", "baseline", level), sweep_run(
            results, "concurrency", "squall", level
        )
        rows.append([
            level, base.get("requests_per_s"), squall.get("requests_per_s"),
            ratio(squall.get("requests_per_s"), base.get("requests_per_s")),
            dig(base, ("latency", "p50_ms")), dig(base, ("latency", "p99_ms")),
            dig(squall, ("latency", "p50_ms")), dig(squall, ("latency", "p90_ms")),
            dig(squall, ("latency", "p99_ms")), dig(squall, ("cpu", "main_cpu_us_per_op")),
            dig(squall, ("cpu", "tree_cpu_us_per_op")), dig(base, ("cpu", "main_cpu_us_per_op")),
            f"{fmt(base.get('errors'))} / {fmt(squall.get('errors'))}",
        ])  # fmt: skip
    tool = sweep_run(results, "concurrency", "squall", (phase.get("levels") or [0])[0]).get("tool")
    plan = results.get("plan", {})
    intro = (
        f"Squall's warm blocking invoke beside the bare hello-world baseline (same run, same "
        f"HTTP stack) at each number of concurrent keep-alive clients, with {tool or '-'}: "
        f"{fmt(plan.get('sweep_warmup_s'))} s of warm-up, then {fmt(plan.get('sweep_s'))} s "
        "measured per level, one fresh server of each for the whole sweep."
    )
    return ["### Throughput against concurrency", "", intro, "", *table(headers, rows)]


def peer_latency_row(label: str, run: dict[str, Any]) -> list[Any]:
    lat, cpu = run.get("latency") or {}, run.get("cpu") or {}
    return [
        label, run.get("requests"), run.get("errors"), lat.get("p50_ms"), lat.get("p90_ms"),
        lat.get("p99_ms"), lat.get("p99.9_ms"), lat.get("max_ms"),
        cpu.get("server_cpu_us_per_op"), cpu.get("client_cpu_us_per_op"),
    ]  # fmt: skip


def celery_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for level in dig(results, ("celery", "levels")) or []:
        squall, peer = sweep_run(results, "celery", "squall", level), sweep_run(
            results, "celery", "celery", level
        )
        rows.append([
            level, squall.get("requests_per_s"), peer.get("requests_per_s"),
            ratio(squall.get("requests_per_s"), peer.get("requests_per_s")),
            dig(squall, ("latency", "p50_ms")), dig(squall, ("latency", "p99_ms")),
            dig(peer, ("latency", "p50_ms")), dig(peer, ("latency", "p99_ms")),
            dig(squall, ("cpu", "server_cpu_us_per_op")),
            dig(peer, ("cpu", "server_cpu_us_per_op")),
            ratio(dig(squall, ("cpu", "server_cpu_us_per_op")),
                  dig(peer, ("cpu", "server_cpu_us_per_op"))),
            f"{fmt(squall.get('errors'))} / {fmt(peer.get('errors'))}",
        ])  # fmt: skip
    return rows


def celery_memory_rows(phase: dict[str, Any]) -> list[list[Any]]:
    squall = dig(phase, ("memory", "squall")) or {}
    peer = dig(phase, ("memory", "celery")) or {}
    return [
        [
            "Squall (platform, zygote, sandboxes)", 2 + (squall.get("sandbox_count") or 0),
            squall.get("total_rss_mib"), squall.get("total_pss_mib"),
            f"platform process {fmt(dig(squall, ('main', 'rss_mib')))} MiB RSS, "
            f"{fmt(squall.get('sandbox_count'))} sandboxes",
        ],
        [
            "Celery (worker, pool processes) + redis-server",
            2 + (peer.get("pool_processes") or 0), peer.get("total_rss_mib"),
            peer.get("total_pss_mib"),
            f"worker main {fmt(dig(peer, ('worker_main', 'rss_mib')))} MiB, "
            f"{fmt(peer.get('pool_processes'))} pool processes "
            f"{fmt(peer.get('pool_rss_mib'))} MiB, redis-server "
            f"{fmt(dig(peer, ('redis', 'rss_mib')))} MiB RSS",
        ],
    ]  # fmt: skip


def celery_section(results: dict[str, Any]) -> list[str]:
    phase = results.get("celery")
    if not phase:
        return []
    heading = "### Squall beside Celery (Redis broker and result backend)"
    if "skipped" in phase:
        return [heading, "", f"Not measured in this run: {phase['skipped']}", ""]
    packages = (results.get("machine") or {}).get("packages") or {}
    intro = (
        f"The same trivial work both ways, the same client, in one run: Celery "
        f"{packages.get('celery') or '-'} (kombu {packages.get('kombu') or '-'}, redis-py "
        f"{packages.get('redis') or '-'}) on redis-server {phase.get('redis_server') or '-'} "
        "started by the harness (127.0.0.1, free port, temporary dir, no persistence), the "
        "task `bench.hello` returning `{\"ok\": true}` called with `send_task(...).get()`; "
        "Squall's trivial action called with `POST ...?blocking=true`, its activation record "
        "stored as usual. Worker: `" + " ".join(phase.get("worker_argv") or []) + "` (Celery's "
        "defaults for this machine: prefork, one process per core). Client: "
        "`bench/rpc_client.py`, N threads over up to 2 processes, each thread with its own "
        "connection (Squall) or its own Celery app (Celery), calling again as soon as a call "
        f"returns; {fmt(phase.get('warmup_s_per_level'))} s of warm-up, then "
        f"{fmt(phase.get('seconds_per_level'))} s measured per level. Server CPU: Squall's "
        "whole process tree; the Celery worker's tree plus redis-server. Client CPU: the "
        "client processes' own. Celery's results stay in Redis memory (an hour); Squall's "
        "records are written to SQLite."
    )
    lat_headers = (
        "System", "Calls", "Errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
        "Server CPU µs/call", "Client CPU µs/call",
    )  # fmt: skip
    lat_rows = [
        peer_latency_row("Squall: blocking invoke", sweep_run(results, "celery", "squall", 1)),
        peer_latency_row("Celery: send_task().get()", sweep_run(results, "celery", "celery", 1)),
    ]
    thr_headers = (
        "Clients", "Squall calls/s", "Celery calls/s", "Squall ÷ Celery", "Squall p50 ms",
        "Squall p99 ms", "Celery p50 ms", "Celery p99 ms", "Squall server CPU µs/call",
        "Celery server CPU µs/call", "CPU Squall ÷ Celery", "Errors (Squall / Celery)",
    )  # fmt: skip
    mem_headers = ("System", "Processes", "RSS MiB (sum)", "PSS MiB", "Detail")
    return [
        heading, "", intro, "",
        "Round trip of one call at a time (concurrency 1):", "",
        *table(lat_headers, lat_rows),
        "Calls per second at each concurrency:", "",
        *table(thr_headers, celery_rows(results)),
        "Memory at the end of the phase:", "",
        *table(mem_headers, celery_memory_rows(phase)),
    ]  # fmt: skip


def cluster_section(results: dict[str, Any]) -> list[str]:
    phase = results.get("cluster")
    alarms = results.get("cluster_alarms") or dig(phase, ("alarms",))  # older runs: in cluster
    if not phase and not alarms:
        return []
    title = "### Squall standalone beside cluster mode"
    lines = [title, ""]
    if phase and "skipped" in phase:
        lines += [phase["skipped"], ""]
    elif phase:
        lines += cluster_warm_lines(phase.get("warm", {}))
    if alarms and "skipped" in alarms:
        lines += [f"Alarms: {alarms['skipped']}", ""]
    elif alarms:
        lines += cluster_alarm_lines(alarms)
    return lines


def cluster_warm_lines(warm: dict[str, Any]) -> list[str]:
    base = dig(warm, ("standalone", "throughput", "requests_per_s"))
    lat_headers = ("Shape", "Requests", "Errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
                   "max ms", "mean ms", "CPU µs/op (API process)", "CPU µs/op (its tree)")
    thr_headers = ("Shape", "Tool", "Clients", "Seconds", "req/s", "÷ standalone", "p50 ms",
                   "p90 ms", "p99 ms", "Errors", "CPU µs/op (API process)",
                   "CPU µs/op (its tree)")  # fmt: skip
    shapes = (("standalone (one process)", "standalone"),
              ("cluster: controller, scheduler, invoker", "cluster"))  # fmt: skip
    memory = [[member, dig(m, ("main", "rss_mib")), m.get("total_rss_mib"),
               m.get("total_uss_mib")]
              for member, m in (dig(warm, ("cluster", "memory")) or {}).items()]  # fmt: skip
    intro = ("Every process on this machine, on the same Tansu, etcd and PostgreSQL (standalone "
             "gets the same PostgreSQL and its in-process bus). See bench/cluster.py.")
    return [
        intro, "", "Warm blocking invoke, concurrency 1:", "",
        *table(lat_headers, [latency_row(label, dig(warm, (key, "latency")))
                             for label, key in shapes]),
        "", "Throughput:", "",
        *table(thr_headers, [throughput_row(label, dig(warm, (key, "throughput")), base)
                             for label, key in shapes]),
        "", "Memory of the cluster's processes (each with its sandboxes):", "",
        *table(("Member", "process RSS MiB", "with sandboxes: RSS MiB", "USS MiB"), memory),
        "",
    ]  # fmt: skip


def cluster_alarm_lines(alarms: dict[str, Any]) -> list[str]:
    """Per scheduler: burst (every alarm due at the same instant), then spread over each
    second (jitterSeconds 1); older runs measured the burst only."""
    runs = [("burst", alarms.get("burst") or {"schedulers": alarms.get("schedulers") or {}}),
            ("spread", alarms.get("spread") or {})]  # fmt: skip
    rows = [[load, sid, lag.get("alarms_held"), lag.get("window_fires"), lag.get("samples"),
             lag.get("lag_p50_ms"), lag.get("lag_p99_ms"), lag.get("lag_max_ms"),
             lag.get("cpu_ms_per_fire"), run.get("db_transactions_per_fire")]
            for load, run in runs
            for sid, lag in (run.get("schedulers") or {}).items()]  # fmt: skip
    return [
        f"Alarms: {fmt(alarms.get('alarms'))} triggers firing every second (rules inactive: "
        f"the trigger is read and its rules resolved) on two schedulers. `burst`: all due at "
        f"the same instant, so each scheduler fires its share one after another; `spread`: "
        f"the same alarms with `jitterSeconds` 1. Each after {fmt(alarms.get('warmup_s'))} s; "
        f"fires and CPU counted over {fmt(alarms.get('window_s'))} s; lag over each "
        "scheduler's last 4,096 on-time fires, from its /metrics; PostgreSQL transactions of "
        "the whole cluster per fire (from `pg_stat_database`):", "",
        *table(("Load", "Scheduler", "Alarms held", "Fires in window", "Samples",
                "lag p50 ms", "lag p99 ms", "lag max ms", "CPU ms per fire",
                "DB transactions per fire"), rows),
        "",
        *([f"Spread not measured: {spread_error}", ""]
          if (spread_error := dig(alarms, ("spread", "error"))) else []),
    ]  # fmt: skip


def plots_section(drawn: list[tuple[str, Path]], markdown_dir: Path) -> list[str]:
    if not drawn:
        return []
    lines = ["### Plots", ""]
    for title, path in drawn:
        link = Path(os.path.relpath(path, markdown_dir)).as_posix()
        lines += [f"![{title}]({link})", ""]
    return lines


def reference_section(reference: dict[str, Any] | None) -> list[str]:
    """Every table of the reference run, folded, its headings one level down."""
    if reference is None:
        return []
    body = ("\n" + render(reference, heading=False)).replace("\n### ", "\n#### ")
    date = (reference.get("machine") or {}).get("date")
    return [
        "### Reference run (quiet machine)",
        "",
        f"Every table of the run of {date} (`bench/results/{REFERENCE.name}`), recorded while "
        "the machine was otherwise idle; the hand-written reading above quotes it.",
        "",
        "<details><summary>The reference run's tables</summary>",
        "",
        body.strip(),
        "",
        "</details>",
        "",
    ]


def settings_section(results: dict[str, Any]) -> list[str]:
    rows = []
    for key in (
        "warm", "concurrency", "celery", "cold_steady", "cold_burst", "cold_no_prewarm",
        "memory", "nodejs", "composition", "alarms", "alarms_inactive_rules", "alarms_spread",
        "alarms_spread_active", "alarms_apscheduler", "stores",
    ):  # fmt: skip
        if key not in results:
            continue
        settings = dig(results, (key, "settings")) or {}
        rows.append([
            key, ", ".join(f"`{k}={v}`" for k, v in sorted(settings.items())),
            dig(results, ("phase_seconds", key)), dig(results, ("background_cpu_pct", key)),
            dig(results, ("phase_dates", key)) or (results.get("machine") or {}).get("date"),
        ])  # fmt: skip
    headers = (
        "Scenario", "Server environment", "Phase s", "Other CPU use before it %", "Run (UTC)",
    )
    intro = (
        "Each scenario gets fresh servers. 'Other CPU use' is the machine's CPU use measured "
        "for 0.5 s before the phase, while none of the harness's servers ran: anything well "
        "above 0 means other work shared the machine and the figures are noisy. At the start: "
        f"{fmt(results.get('cpu_busy_pct_at_start'))} %. Phases re-run alone (`--only ... "
        "--merge`) keep the other phases' figures; 'Run' tells when each was measured."
    )
    return ["### Server settings and run conditions", "", intro, "", *table(headers, rows)]


def load_text(load: list[float] | None) -> str:
    """The load averages, our own servers and load generators included."""
    return ", ".join(f"{x:.2f}" for x in load) if load else "-"


def machine_section(results: dict[str, Any]) -> list[str]:
    m = results.get("machine", {})
    pkgs = ", ".join(f"{k} {v}" for k, v in (m.get("packages") or {}).items())
    rows = [
        ("Date (UTC)", m.get("date")), ("CPU", m.get("cpu_model")),
        ("Cores", f"{m.get('logical_cores')} logical / {m.get('physical_cores')} physical"),
        ("RAM", f"{m.get('ram_gib')} GiB"), ("Kernel", m.get("kernel")),
        ("Python", f"{m.get('python')} ({m.get('python_implementation')})"),
        ("Packages", pkgs), ("wrk", m.get("wrk") or "not installed (Python load generator)"),
        ("redis-server", m.get("redis_server") or "not installed"),
        ("Load average (1, 5, 15 min) at start", load_text(m.get("load_average_at_start"))),
        ("Load average (1, 5, 15 min) at end", load_text(results.get("load_average_at_end"))),
    ]  # fmt: skip
    return ["### Machine of this run", "", *table(("", "Value"), rows)]


def misses_section(results: dict[str, Any]) -> list[str]:
    lines = ["### Misses and errors", ""]
    for c in results.get("checks", []):
        if c["passed"] is False:
            lines.append(
                f"- **{c['label']}**: {fmt(c['value'])} {c['unit']} misses the target "
                f"{c['op']} {fmt(c['target'])} {c['unit']}."
            )
        elif c["passed"] is None:
            lines.append(f"- **{c['label']}**: not measured in this run.")
    for phase, message in (results.get("errors") or {}).items():
        lines.append(f"- phase `{phase}` failed: `{message}`")
    if len(lines) == 2:
        lines.append("None: every figure meets its target.")
    return [*lines, ""]


def notes_section(results: dict[str, Any]) -> list[str]:
    tool = dig(results, ("warm", "throughput", "squall", "tool")) or "-"
    return [
        "### How these figures are made",
        "",
        "- Baseline: `bench/baseline_app.py`, a hello-world JSON route on Squall's own stack "
        "(uvicorn, httptools, uvloop, Starlette, one worker, no access log), its own process.",
        "- Squall: `squall standalone` with a temporary data dir; the trivial action "
        "`def main(args): return {'ok': True}`, 128 MB, invoked with "
        "`POST .../actions/NAME?blocking=true` and body `{}`; its activation record is stored "
        "by the platform as usual.",
        f"- Throughput tool this run: {tool}. The load generator and the server share the "
        "machine's cores, for the baseline and Squall alike.",
        "- CPU per operation: user+system CPU time of the server process (and of the process "
        "plus its zygote and sandboxes) over the measured part only, divided by the requests; "
        "Linux counts it in 10 ms ticks, so small runs are coarse.",
        "- The tenant quota of invocations per minute (default 60, as in OpenWhisk) is lifted "
        "in every scenario: it is a policy limit, not a cost. Other settings are listed below.",
        "- Memory is in MiB; the 15 MB sandbox target is read as 15 MiB.",
        "",
    ]


def composition_section(results: dict[str, Any]) -> list[str]:
    r = results.get("composition")
    if not r:
        return []
    headers = ("Measured", "Count", "p50 ms", "p90 ms", "p99 ms", "mean ms")
    labels = (
        ("sequence", f"{r.get('steps')}-step sequence, one blocking invoke"),
        ("direct", f"the same {r.get('steps')} actions, blocking invokes one after another"),
        ("web", "web action, GET /api/v1/web/... (.http)"),
        ("invoke", "the same action, blocking invoke with result=true"),
    )
    rows = [
        [label, (r.get(key) or {}).get("count"),
         *((r.get(key) or {}).get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"))]
        for key, label in labels
    ]  # fmt: skip
    intro = (
        "One keep-alive connection from the harness, warm containers. p50 ratios: sequence / "
        f"direct {fmt(r.get('sequence_over_direct_p50'))}, web / invoke "
        f"{fmt(r.get('web_over_invoke_p50'))}."
    )
    return ["### Sequences and web actions", "", intro, "", *table(headers, rows)]


def render(
    results: dict[str, Any],
    *,
    heading: bool = True,
    reference: dict[str, Any] | None = None,
    plot_lines: list[str] | None = None,
) -> str:
    mode = "smoke (not a measurement)" if results.get("plan", {}).get("smoke") else "full"
    lines = [
        "## Results",
        "",
        f"Generated by `python -m bench.report` from `bench/results/latest.json`: run of "
        f"{results.get('machine', {}).get('date')}, mode {mode}.",
        "",
    ] if heading else []  # fmt: skip
    lines += targets_section(results, reference)
    for section in (
        misses_section, latency_section, throughput_section, concurrency_section,
        celery_section, cold_section, nodejs_section, memory_section, alarms_section,
        stores_section, composition_section, cluster_section,
    ):  # fmt: skip
        lines += section(results)
    lines += plot_lines or []
    for section in (notes_section, settings_section, machine_section):
        lines += section(results)
    lines += reference_section(reference)
    return "\n".join(lines).rstrip() + "\n"


def splice(existing: str | None, generated: str) -> str:
    """Replace what lies between the markers; a file without them gets the header template."""
    block = f"{START}\n{generated}{END}\n"
    if existing is None or START not in existing or END not in existing:
        return (existing.rstrip() + "\n\n" if existing else HEADER) + block
    head, _, rest = existing.partition(START)
    _, _, tail = rest.partition(END)
    return head + block + tail.lstrip("\n")


def load_results(path: Path) -> dict[str, Any]:
    results: dict[str, Any] = json.loads(path.read_text())
    results["checks"] = evaluate(results)  # the stored figures against the current targets
    return results


def regenerate(
    results_path: Path = RESULTS, markdown_path: Path = MARKDOWN, reference: Path | None = REFERENCE
) -> None:
    """The results section of `markdown_path` and the plots (in `plots/` beside the results
    file) from `results_path`, with the reference run's figures when there is one."""
    results = load_results(results_path)
    same = reference is not None and reference.resolve() == results_path.resolve()
    ref = load_results(reference) if reference and reference.exists() and not same else None
    drawn = plots.draw_all(results, results_path.parent / "plots")
    plot_lines = plots_section(drawn, markdown_path.resolve().parent)
    existing = markdown_path.read_text() if markdown_path.exists() else None
    generated = render(results, reference=ref, plot_lines=plot_lines)
    markdown_path.write_text(splice(existing, generated))


def summary_text(results: dict[str, Any]) -> str:
    lines = []
    for c in results.get("checks", []):
        base = f" (baseline {fmt(c['baseline'])}, x{fmt(c['ratio_to_baseline'])})"
        lines.append(
            f"{verdict(c['passed']).strip('*'):>12}  {c['label']}: {fmt(c['value'])} {c['unit']} "
            f"(target {c['op']} {fmt(c['target'])})" + (base if c["baseline"] is not None else "")
        )
    for phase, message in (results.get("errors") or {}).items():
        lines.append(f"       ERROR  phase {phase}: {message}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--markdown", type=Path, default=MARKDOWN)
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    args = parser.parse_args(argv)
    regenerate(args.results, args.markdown, args.reference)
    print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
