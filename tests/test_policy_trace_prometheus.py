"""``policy eval --trace RUN_DIR --prometheus URL``: a run's cluster replayed from a Prometheus range.

The Prometheus is the real one (Debian's ``prometheus``), its history written by the real
``promtool tsdb create-blocks-from openmetrics`` (backfill): a backend reported down and a Kueue
backlog during a recorded ``qubelet run``. The replay must turn them into the scenario's down and
busy spans on the run's clock, and a simulated run on that cluster must wait them out.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from prom_tools import PROMTOOL, RealPrometheus, needs_prometheus, needs_promtool

from policy.simulator import simulate
from policy.size_rule import SizePolicy
from policy.telemetry_sources import PrometheusSource
from policy.trace import scenario_from_trace, windows_where
from qubelet.cli import main


def test_windows_merge_adjacent_steps_and_start_at_the_origin() -> None:
    samples = [(100.0, 1.0), (115.0, 0.0), (130.0, 0.0), (145.0, 1.0), (160.0, 0.0), (85.0, 0.0)]
    assert windows_where(samples, lambda v: v < 1.0, origin=100.0, step=15.0) == ((15.0, 45.0), (60.0, 75.0))


def test_a_sample_before_the_origin_clips_to_it() -> None:
    assert windows_where([(90.0, 0.0), (105.0, 0.0)], lambda v: v < 1.0, origin=100.0, step=15.0) == (
        (0.0, 20.0),
    )
    assert windows_where([(80.0, 0.0)], lambda v: v < 1.0, origin=100.0, step=15.0) == ()


def _openmetrics(t0: float) -> str:
    """Two Kueue workloads pending for qubelet-cpu for the run's first 30 s, cpu down at 60-90 s.

    A sample every 15 s, 1 s before each step of the replay's range query (so rounding of the
    query's start never picks the previous sample).
    """
    up = 'qubelet_pipeline_backend_up{backend="cpu",run="r",task="t"}'
    pending = 'kueue_local_queue_pending_workloads{name="qubelet-cpu",namespace="q"}'
    lines = [
        "# TYPE qubelet_pipeline_backend_up gauge",
        *(f"{up} {0 if k in (4, 5) else 1} {t0 - 1 + 15 * k:.3f}" for k in range(-4, 41)),
        "# TYPE kueue_local_queue_pending_workloads gauge",
        *(f"{pending} {2 if k <= 1 else 0} {t0 - 1 + 15 * k:.3f}" for k in range(-4, 41)),
        "# EOF",
        "",
    ]
    return "\n".join(lines)


@needs_prometheus
@needs_promtool
@pytest.mark.timeout(180)
def test_a_runs_cluster_is_replayed_from_a_prometheus_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    flags = ["--qubits", "4", "--cuts", "1", "--shots", "300", "--backends", "cpu", "--policy", "greedy"]
    assert main(["run", *flags, "--run-dir", str(run_dir), "--no-progress"]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in (run_dir / "telemetry.jsonl").read_text().splitlines() if line]
    t0 = min(float(r["ts"]) for r in rows)

    workdir = tmp_path / "prom"
    (workdir / "tsdb").mkdir(parents=True)
    history = tmp_path / "history.om"
    history.write_text(_openmetrics(t0))
    assert PROMTOOL is not None
    subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(history), str(workdir / "tsdb")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with RealPrometheus(workdir, {}) as prometheus:
        source = PrometheusSource(prometheus.url, timeout=10.0)
        scenario = scenario_from_trace(run_dir, source)
        (cpu,) = scenario.backends
        assert [list(w) for w in cpu.down_windows] == [pytest.approx([60.0, 90.0], abs=0.01)]
        assert [list(w) for w in cpu.busy_windows] == [pytest.approx([0.0, 30.0], abs=0.01)]

        assert main(["policy", "eval", "--trace", str(run_dir), "--prometheus", prometheus.url]) == 0
        out = capsys.readouterr().out
        assert "cpu: down 60-90 s, others ahead 0-30 s" in out

    # the replayed cluster is what the simulated run lives through: nothing starts before the
    # other tenants' workloads leave
    replayed = simulate(scenario, SizePolicy(), seed=0)
    assert replayed.makespan >= 30.0
    assert min(float(r["ts"]) for r in replayed.rows) >= 30.0
    assert simulate(scenario_from_trace(run_dir), SizePolicy(), seed=0).makespan < 30.0


def test_prometheus_without_a_trace_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "eval", "--prometheus", "http://127.0.0.1:9"]) == 2
    assert "--prometheus replays a run's cluster: it needs --trace RUN_DIR" in capsys.readouterr().err


def test_a_backend_that_goes_down_serves_nothing_and_its_work_is_replanned() -> None:
    from dataclasses import replace

    from policy.baselines import GreedyPolicy
    from policy.scenarios import SCENARIOS

    paper = SCENARIOS["paper"]
    cpu_down = tuple(
        replace(b, down_windows=((0.1, 60.0),)) if b.kind == "cpu" else b for b in paper.backends
    )
    down = replace(paper, backends=cpu_down, metrics_lag_seconds=0.0)
    result = simulate(down, GreedyPolicy(record_metrics=False), seed=0)
    on_cpu = [float(r["ts"]) for r in result.rows if r["backend_kind"] == "cpu"]
    assert on_cpu and min(on_cpu) < 0.1, "greedy starts on the CPUs"
    assert not [ts for ts in on_cpu if 0.1 <= ts < 60.0], "nothing starts on a backend that is down"
    # its planned work moved to the GPU and QPU at once instead of waiting a minute for the CPUs
    assert result.makespan < 60.0
