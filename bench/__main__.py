"""`python -m bench [--smoke] [PHASE ...]`: every benchmark, or the named phases (or groups
of phases), Squall beside its peers in the same run; `--smoke`: a short run that only proves
the harness works (no timing is asserted).

The full run writes bench/results/latest.json and regenerates BENCHMARKS.md with its plots;
the smoke run writes its results, a report and the plots to a temporary dir unless --out is
given (the report and plots then go beside it). A run of some phases writes to a temporary
file unless --merge folds them into the stored results. Exit code 1 when a phase failed or
(smoke) produced no usable numbers; a figure missing its target is reported, not an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from bench import machine, report, targets
from bench.scenarios import FULL, GROUPS, PHASES, SMOKE, Plan

QUIET_PCT = 10.0  # system-wide CPU % below which the machine counts as idle


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="phases: " + ", ".join(PHASES) + "\ngroups: "
        + "; ".join(f"{g} = {' '.join(p)}" for g, p in GROUPS.items()),
    )
    parser.add_argument(
        "phases", nargs="*", metavar="PHASE", help="phases or groups to run (default: all)"
    )
    parser.add_argument("--smoke", action="store_true", help="short run, asserts no timings")
    parser.add_argument("--out", type=Path, help="where to write the results JSON")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator")
    parser.add_argument(
        "--only", action="append", choices=sorted(PHASES), help="run only these phases"
    )
    parser.add_argument("--no-report", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --only: merge the phases run into the results file (default "
        "bench/results/latest.json, or --out), keeping the other phases, and regenerate "
        "BENCHMARKS.md from it",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        help="seconds to wait for an idle machine first (default: 120 full, 0 smoke)",
    )
    args = parser.parse_args(argv)
    try:
        args.only = selected_phases(args.phases, args.only)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def selected_phases(names: list[str], only: list[str] | None) -> list[str] | None:
    """The phases named (groups expanded, in run order), or None for every phase."""
    wanted: set[str] = set(only or ())
    for name in names:
        if name in GROUPS:
            wanted.update(GROUPS[name])
        elif name in PHASES:
            wanted.add(name)
        else:
            choices = ", ".join([*PHASES, *GROUPS])
            raise ValueError(f"unknown phase {name!r} (choose from {choices})")
    return [name for name in PHASES if name in wanted] or None


def stop_on_signals() -> None:
    """SIGTERM and SIGINT (even if inherited as ignored) unwind like Ctrl-C, so every server
    is stopped by its `finally`."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def background_cpu_pct(seconds: float = 0.5) -> float:
    """System-wide CPU use while none of our servers runs: other work on the machine."""
    return float(psutil.cpu_percent(interval=seconds))


def wait_until_quiet(max_wait_s: float, threshold_pct: float = QUIET_PCT) -> float:
    """Wait (bounded) for the machine to be idle; the last busy percentage measured."""
    deadline = time.monotonic() + max_wait_s
    busy = background_cpu_pct(1.0)
    while busy > threshold_pct and time.monotonic() < deadline:
        print(f"[bench] machine busy ({busy:.0f}% CPU); waiting ...", file=sys.stderr)
        busy = background_cpu_pct(2.0)
    if busy > threshold_pct:
        print(
            f"[bench] warning: machine still busy ({busy:.0f}% CPU): figures will be noisy",
            file=sys.stderr,
        )
    return busy


def run_phases(plan: Plan, only: list[str] | None) -> dict[str, Any]:
    results: dict[str, Any] = {
        "errors": {}, "phase_seconds": {}, "background_cpu_pct": {}, "phase_dates": {},
    }  # fmt: skip
    for name, phase in PHASES.items():
        if only and name not in only:
            continue
        results["background_cpu_pct"][name] = background_cpu_pct()
        results["phase_dates"][name] = machine.describe()["date"]
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            results[name] = phase(plan)
        except Exception as exc:
            traceback.print_exc()
            results["errors"][name] = f"{type(exc).__name__}: {exc}"[:2000]
        results["phase_seconds"][name] = round(time.monotonic() - started, 1)
    return results


def smoke_problems(results: dict[str, Any]) -> list[str]:
    """What makes a run unusable: failed phases, errors under load, failed invocations."""
    problems = [f"phase {k}: {v}" for k, v in results.get("errors", {}).items()]
    for path in (
        ("warm", "latency", "baseline"), ("warm", "latency", "squall"),
        ("warm", "throughput", "baseline"), ("warm", "throughput", "squall"),
    ):  # fmt: skip
        run = targets.dig(results, path)
        if run is not None and (not run.get("requests") or run.get("errors")):
            problems.append(
                f"{'/'.join(path)}: {run.get('requests')} requests, "
                f"{run.get('errors')} errors ({run.get('first_error')})"
            )
    for sweep in sweep_paths(results):
        run = targets.dig(results, sweep) or {}
        if not run.get("requests") or run.get("errors"):
            problems.append(
                f"{'/'.join(sweep)}: {run.get('requests')} requests, "
                f"{run.get('errors')} errors ({run.get('first_error')})"
            )
    for key in ("cold_steady", "cold_burst", "cold_no_prewarm", "memory"):
        phase = results.get(key)
        if phase is not None and phase.get("failed"):
            problems.append(f"{key}: {phase['failed']} invocations failed")
    smoke = bool(targets.dig(results, ("plan", "smoke")))
    alarm_phases = (
        "alarms", "alarms_inactive_rules", "alarms_spread", "alarms_spread_active",
        "alarms_apscheduler",
    )  # fmt: skip
    for key in alarm_phases if smoke else ():
        phase = results.get(key)
        if phase and "skipped" not in phase and not targets.dig(phase, ("fires_per_s",)):
            problems.append(f"{key}: no alarm fire was delivered in the window")
    return problems


def sweep_paths(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """Every (phase, system, level) run of the concurrency sweeps that were measured."""
    paths: list[tuple[str, ...]] = []
    sweeps = (("concurrency", ("baseline", "squall")), ("celery", ("squall", "celery")))
    for phase, systems in sweeps:
        data = results.get(phase)
        if not data or "skipped" in data:
            continue
        paths += [(phase, system, str(level)) for system in systems for level in data["levels"]]
    return paths


PER_PHASE = ("errors", "phase_seconds", "background_cpu_pct", "phase_dates")


def merge_into(path: Path, fresh: dict[str, Any], phases: list[str]) -> dict[str, Any]:
    """The stored results with `phases` (and their errors, timings, dates) from `fresh`."""
    merged: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    stored_date = (merged.get("machine") or {}).get("date")
    for name in phases:
        merged.pop(name, None)
        if name in fresh:
            merged[name] = fresh[name]
    for key in PER_PHASE:
        table = merged.setdefault(key, {})
        for name in phases:
            table.pop(name, None)
            if name in fresh.get(key, {}):
                table[name] = fresh[key][name]
    dates = merged["phase_dates"]
    for name in PHASES:  # phases measured before phase dates were kept: the run's own date
        if name in merged and name not in dates and stored_date:
            dates[name] = stored_date
    merged["plan"] = fresh["plan"]
    merged["machine"] = fresh["machine"]
    merged["load_average_at_end"] = fresh.get("load_average_at_end")
    merged.setdefault("schema", fresh["schema"])
    merged.setdefault("cpu_busy_pct_at_start", fresh.get("cpu_busy_pct_at_start"))
    merged["checks"] = targets.evaluate(merged)
    return merged


def output_path(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return Path(args.out)
    if args.merge:
        return report.RESULTS
    if args.smoke or args.only:  # a partial run never replaces the full results
        return Path(tempfile.mkdtemp(prefix="squall-bench-partial-")) / "results.json"
    return report.RESULTS


def write_report(results: Path, smoke: bool) -> Path:
    """BENCHMARKS.md and its plots from the stored results (bench/results/latest.json); any
    other results file gets its report and plots beside it, never the repository's."""
    if results.resolve() == report.RESULTS.resolve():
        report.regenerate(results, report.MARKDOWN)
        return report.MARKDOWN
    markdown = results.parent / "BENCHMARKS.md"
    report.regenerate(results, markdown, reference=None if smoke else report.REFERENCE)
    return markdown


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge and (args.smoke or not args.only):
        print("[bench] --merge needs --only and a full (not --smoke) run", file=sys.stderr)
        return 2
    plan = SMOKE if args.smoke else FULL
    plan = dataclasses.replace(plan, use_wrk=not args.no_wrk)
    stop_on_signals()
    results: dict[str, Any] = {"schema": 1, "machine": machine.describe(), "plan": plan.to_json()}
    wait_s = args.wait_quiet if args.wait_quiet is not None else (0.0 if args.smoke else 120.0)
    results["cpu_busy_pct_at_start"] = wait_until_quiet(wait_s)
    results.update(run_phases(plan, args.only))
    results["load_average_at_end"] = machine.load_average()
    results["checks"] = targets.evaluate(results)
    out = output_path(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge:
        results = merge_into(out, results, args.only)
    out.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    print(f"[bench] results: {out}", file=sys.stderr)
    if not args.no_report:
        markdown = write_report(out, smoke=args.smoke)
        print(f"[bench] report: {markdown}", file=sys.stderr)
    print(report.summary_text(results))
    problems = smoke_problems(results)
    for problem in problems:
        print(f"[bench] problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("[bench] interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
