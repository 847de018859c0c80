"""PNG plots of a results file (matplotlib, Agg backend: no display needed).

Each function draws what the results hold and returns False when they hold nothing to draw
(a phase not run, or run before it kept what the plot needs).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from bench.targets import dig

# (label, path to a run with `cdf` and `latency`) of the latency distributions at concurrency 1
LATENCY_RUNS = (
    ("bare hello-world (loadgen)", ("warm", "latency", "baseline")),
    ("Squall blocking invoke (loadgen)", ("warm", "latency", "squall")),
    ("Squall blocking invoke (thread client)", ("celery", "squall", "1")),
    ("Celery task + Redis (thread client)", ("celery", "celery", "1")),
)
# (label, phase, system) of the throughput-against-concurrency lines
SWEEPS = (
    ("bare hello-world (wrk)", "concurrency", "baseline"),
    ("Squall blocking invoke (wrk)", "concurrency", "squall"),
    ("Squall blocking invoke (thread client)", "celery", "squall"),
    ("Celery task + Redis (thread client)", "celery", "celery"),
)


def pyplot() -> Any:
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def latency_cdf(results: dict[str, Any], path: Path) -> bool:
    """The distribution of one-at-a-time call latency, one line per system (log x)."""
    lines = [(label, dig(results, (*where, "cdf"))) for label, where in LATENCY_RUNS]
    lines = [(label, cdf) for label, cdf in lines if cdf and cdf.get("ms")]
    if not lines:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, cdf in lines:
        ax.plot(cdf["ms"], cdf["pct"], label=label, drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (log scale)")
    ax.set_ylabel("percentile")
    ax.set_title("Round trip of a trivial call, one at a time (concurrency 1)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def sweep_points(results: dict[str, Any], phase: str, system: str) -> list[tuple[int, Any]]:
    runs = dig(results, (phase, system)) or {}
    return sorted((int(level), run) for level, run in runs.items() if isinstance(run, dict))


def throughput_concurrency(results: dict[str, Any], path: Path) -> bool:
    """Calls per second and p99 latency against the number of concurrent clients."""
    series = [(label, sweep_points(results, phase, system)) for label, phase, system in SWEEPS]
    series = [(label, points) for label, points in series if points]
    if not series:
        return False
    plt = pyplot()
    fig, (rate_ax, p99_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for label, points in series:
        levels = [level for level, _ in points]
        rate_ax.plot(levels, [r.get("requests_per_s") for _, r in points], "o-", label=label)
        p99 = [dig(r, ("latency", "p99_ms")) for _, r in points]
        p99_ax.plot(levels, p99, "o-", label=label)
    levels_all = sorted({level for _, points in series for level, _ in points})
    for ax in (rate_ax, p99_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels_all, [str(level) for level in levels_all])
        ax.set_xlabel("concurrent clients (log scale)")
        ax.grid(True, which="both", alpha=0.3)
    rate_ax.set_ylabel("calls per second")
    rate_ax.set_title("Throughput")
    p99_ax.set_yscale("log")
    p99_ax.set_ylabel("p99 latency, ms (log scale)")
    p99_ax.set_title("p99 latency")
    rate_ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


ALARM_BARS = (
    ("Squall, rules active", "alarms"),
    ("Squall, rules inactive", "alarms_inactive_rules"),
    ("Squall, spread (jitter 1 s)", "alarms_spread"),
    ("APScheduler 3.x", "alarms_apscheduler"),
)


def alarm_lag(results: dict[str, Any], path: Path) -> bool:
    """Fire lag p50 / p99 / max of each alarm run (log y)."""
    runs = [
        (label + ("\n(lower bound: censored)" if dig(results, (key, "lag_censored")) else ""),
         dig(results, (key, "lag")))
        for label, key in ALARM_BARS
    ]  # fmt: skip
    runs = [(label, lag) for label, lag in runs if lag and lag.get("p50_ms") is not None]
    if not runs:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.27
    for k, (stat, name) in enumerate((("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max"))):
        xs = [i + (k - 1) * width for i in range(len(runs))]
        ax.bar(xs, [max(lag.get(stat) or 0.0, 0.01) for _, lag in runs], width, label=name)
    ax.set_xticks(range(len(runs)), [label for label, _ in runs], fontsize="small")
    ax.set_yscale("log")
    ax.set_ylabel("fire lag, ms (log scale)")
    ax.set_title("Timed triggers at the same schedule load: lag behind the scheduled second")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


PLOTS = (
    ("latency_cdf.png", "Latency distribution at concurrency 1", latency_cdf),
    ("throughput_concurrency.png", "Throughput and p99 against concurrency",
     throughput_concurrency),
    ("alarm_lag.png", "Alarm fire lag, Squall beside APScheduler", alarm_lag),
)  # fmt: skip


def draw_all(results: dict[str, Any], plots_dir: Path) -> list[tuple[str, Path]]:
    """(title, file) of every plot drawn into `plots_dir`; stale files of plots that have
    nothing to draw any more are removed."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    drawn = []
    for name, title, draw in PLOTS:
        path = plots_dir / name
        if draw(results, path):
            drawn.append((title, path))
        else:
            path.unlink(missing_ok=True)
    return drawn
