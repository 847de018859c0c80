"""What the server processes cost: CPU time and memory of the platform, zygote and sandboxes.

Process tree of `squall standalone`: the platform process forks a zygote; every sandbox (stem
cell or warm container) is a child of the zygote.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import psutil

from bench.stats import percentile

MiB = 1024 * 1024


@dataclass(frozen=True)
class CpuSnapshot:
    """User+system CPU seconds of the main process and of its whole live tree."""

    main_s: float
    tree_s: float


def cpu_seconds(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def metric_samples(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {sample name with its labels: value} (comments skipped)."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def cpu_snapshot(main: psutil.Process) -> CpuSnapshot:
    """Children are read live; a child that exits between two snapshots loses its time."""
    main_s = cpu_seconds(main)
    try:
        family = main.children(recursive=True)
    except psutil.Error:
        family = []
    return CpuSnapshot(main_s, main_s + sum(cpu_seconds(p) for p in family))


def cpu_per_op(before: CpuSnapshot, after: CpuSnapshot, ops: int) -> dict[str, Any]:
    main = after.main_s - before.main_s
    tree = after.tree_s - before.tree_s
    return {
        "ops": ops,
        "server_main_cpu_s": round(main, 4),
        "server_tree_cpu_s": round(tree, 4),
        "main_cpu_us_per_op": round(main / ops * 1e6, 2) if ops else None,
        "tree_cpu_us_per_op": round(tree / ops * 1e6, 2) if ops else None,
    }


def zygotes(main: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return main.children(recursive=False)
    return []


def sandboxes(main: psutil.Process) -> list[psutil.Process]:
    found: list[psutil.Process] = []
    for zygote in zygotes(main):
        with contextlib.suppress(psutil.Error):
            found.extend(zygote.children(recursive=False))
    return found


def memory_of(proc: psutil.Process) -> dict[str, float] | None:
    """RSS, USS and PSS in MiB, or None when the process is gone."""
    try:
        info = proc.memory_full_info()
    except psutil.Error:
        return None
    return {
        "rss_mib": round(info.rss / MiB, 2),
        "uss_mib": round(info.uss / MiB, 2),
        "pss_mib": round(getattr(info, "pss", 0) / MiB, 2),
    }


def spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        "min": round(ordered[0], 2),
        "p50": round(percentile(ordered, 50), 2),
        "max": round(ordered[-1], 2),
    }


def total(parts: list[dict[str, float]], key: str) -> float:
    return round(sum(p[key] for p in parts), 2)


def tree_memory(main: psutil.Process) -> dict[str, Any]:
    """Memory of the platform process, its zygote(s) and every sandbox, with totals."""
    main_mem = memory_of(main) or {}
    zygote_mem = [m for m in (memory_of(z) for z in zygotes(main)) if m]
    sandbox_mem = [m for m in (memory_of(s) for s in sandboxes(main)) if m]
    everything = [main_mem, *zygote_mem, *sandbox_mem] if main_mem else []
    return {
        "main": main_mem,
        "zygotes": zygote_mem,
        "sandbox_count": len(sandbox_mem),
        "sandbox_uss_mib": spread([m["uss_mib"] for m in sandbox_mem]),
        "sandbox_pss_mib": spread([m["pss_mib"] for m in sandbox_mem]),
        "sandbox_rss_mib": spread([m["rss_mib"] for m in sandbox_mem]),
        "total_rss_mib": total(everything, "rss_mib"),
        "total_pss_mib": total(everything, "pss_mib"),
        "total_uss_mib": total(everything, "uss_mib"),
    }


def peak_rss_mib(proc: psutil.Process) -> float | None:
    """The process's peak resident set (Linux VmHWM) in MiB, None when unknown."""
    try:
        with open(f"/proc/{proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) * 1024 / MiB, 2)
    except (OSError, ValueError, IndexError):
        return None
    return None
