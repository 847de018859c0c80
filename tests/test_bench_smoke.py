"""The benchmark harness still runs end to end (smoke mode asserts no timings), and its
command line, report and recorded figures stay whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench import report
from bench.__main__ import selected_phases, sweep_paths
from bench.scenarios import GROUPS, PHASES
from bench.stats import CDF_GRID, cdf_points
from bench.targets import evaluate

from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_smoke(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip


def check_sweeps(results: dict[str, Any]) -> None:
    """Every level of every sweep made calls, none failed, and their cost was measured."""
    paths = sweep_paths(results)
    assert paths, "no concurrency sweep in the results"
    for path in paths:
        run = results[path[0]][path[1]][path[2]]
        assert run["requests"] > 0 and run["errors"] == 0, (path, run.get("first_error"))
        assert run["latency"]["p50_ms"] > 0, path
        assert run["requests_per_s"] > 0, path


def check_celery(results: dict[str, Any]) -> None:
    celery = results["celery"]
    if "skipped" in celery:  # locally without redis-server or Celery; a failure under CI
        require(False, celery["skipped"])
    assert results["machine"]["redis_server"], "redis-server version not recorded"
    assert results["machine"]["packages"]["celery"], "Celery version not recorded"
    for system in ("squall", "celery"):
        one = celery[system]["1"]
        assert len(one["cdf"]["ms"]) == len(CDF_GRID), system
        assert one["cpu"]["server_cpu_us_per_op"] > 0, (system, one["cpu"])
        assert one["cpu"]["client_cpu_us_per_op"] > 0, (system, one["cpu"])
    assert celery["memory"]["celery"]["redis"]["rss_mib"] > 0
    assert celery["memory"]["celery"]["pool_processes"] >= 1
    assert celery["memory"]["squall"]["total_rss_mib"] > 0


def check_report(out: Path) -> None:
    """The smoke run's own report and plots, written beside its results."""
    markdown = (out.parent / "BENCHMARKS.md").read_text()
    for heading in ("### Throughput against concurrency", "### Plots", "### Squall standalone"):
        assert heading in markdown, heading
    pngs = sorted((out.parent / "plots").glob("*.png"))
    assert {p.name for p in pngs} >= {"latency_cdf.png", "throughput_concurrency.png"}, pngs
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC, png
        assert f"plots/{png.name}" in markdown, png


@pytest.mark.slow
@pytest.mark.timeout(450)  # the whole harness in small: ~2 min here, more on a busy machine
def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    completed = run_smoke(out)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads(out.read_text())
    # The alarm phases ran their tiny version: fires were delivered, none twice.
    for phase in ("alarms", "alarms_inactive_rules", "alarms_spread_active", "alarms_apscheduler"):
        run = results[phase]
        if "skipped" in run:  # APScheduler not installed: reported, not measured
            continue
        fires = run["window_fires"]
        assert fires["delivered"] > 0, (phase, fires)
        assert fires["doubled"] == 0, (phase, fires)
    check_sweeps(results)
    check_cluster(results["cluster"])
    check_cluster_alarms(results["cluster_alarms"])
    assert results["machine"]["load_average_at_start"] and results["load_average_at_end"]
    check_report(out)
    check_celery(results)


def check_cluster(phase: dict[str, object]) -> None:
    """Standalone and a cluster both served the warm invokes."""
    warm = phase["warm"]
    assert isinstance(warm, dict)
    for shape in ("standalone", "cluster"):
        latency = warm[shape]["latency"]
        assert latency["requests"] > 0 and latency["errors"] == 0, (shape, latency)
        assert warm[shape]["throughput"]["requests_per_s"] > 0, shape


def check_cluster_alarms(alarms: dict[str, Any]) -> None:
    """The two schedulers both fired, burst and spread, and their cost was measured."""
    for load in ("burst", "spread"):
        run = alarms[load]
        held = [lag["alarms_held"] for lag in run["schedulers"].values()]
        assert len(held) == 2 and sum(held) == alarms["alarms"], (load, run)
        assert run["fires"] > 0 and run["cpu_ms_per_fire_worst"] > 0, (load, run)
        assert run["db_transactions_per_fire"] is not None, (load, run)
    assert alarms["lag_p99_ms_worst"] is not None, alarms
    assert alarms["spread_lag_p99_ms_worst"] is not None, alarms


def test_phase_names_and_groups_select_phases_in_run_order() -> None:
    assert selected_phases([], None) is None
    assert selected_phases(["stores", "warm"], None) == ["warm", "stores"]
    assert selected_phases(["cold"], ["celery"]) == ["celery", *GROUPS["cold"]]
    for group in GROUPS.values():
        assert set(group) <= set(PHASES)
    with pytest.raises(ValueError, match="unknown phase"):
        selected_phases(["warmm"], None)


def test_cdf_points_follow_the_samples() -> None:
    samples = [float(i) for i in range(1, 1001)]
    cdf = cdf_points(samples)
    assert cdf["pct"] == list(CDF_GRID)
    assert cdf["ms"][0] == 1.0 and cdf["ms"][-1] == 1000.0
    assert cdf["ms"][cdf["pct"].index(50.0)] == 500.0
    assert cdf["ms"] == sorted(cdf["ms"])
    assert cdf_points([]) == {"pct": [], "ms": []}


def test_report_says_when_a_peer_was_not_measured() -> None:
    results = {"celery": {"skipped": "not installed: redis-server"}, "cluster": {"skipped": "x"}}
    text = report.render(results)
    assert "Not measured in this run: not installed: redis-server" in text
    assert "### Squall standalone beside cluster mode" in text


def test_recorded_figures_stay_in_benchmarks_md() -> None:
    """Every target figure of the reference run and of the latest run appears in the
    committed BENCHMARKS.md: regenerating it must never drop a recorded figure."""
    markdown = report.MARKDOWN.read_text()
    for path in (report.REFERENCE, report.RESULTS):
        for check in evaluate(json.loads(path.read_text())):
            if check["value"] is not None:
                assert f"{report.fmt(check['value'])} {check['unit']}" in markdown or (
                    f"| {report.fmt(check['value'])} |" in markdown
                ), (path.name, check["label"], check["value"])
