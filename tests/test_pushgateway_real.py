"""Batch metrics that survive their pods: ``qubelet task … --pushgateway`` against a real
Pushgateway, scraped by a real Prometheus, read back after every step process has exited.

One run, kept small (4 qubits, 1 cut, 64 shots, two CPU batches): generate pushes a waiting group
per batch; one batch executes, the other fails on a corrupted subexperiment; reconstruct then
fails for want of results. Then, with no qubelet process left:

- each group's final values are in Prometheus, keyed by run and task;
- ``increase()`` sees them (the groups started at zero) and the queue depth is back to 0;
- the dashboard's pipeline panels have data;
- the policy's Prometheus source reads this server, and the policy fitted from it decides
  exactly as one fitted from the same telemetry served by the FakePrometheus double.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from doubles.fake_prometheus import FakePrometheus, FakeTelemetry
from prom_tools import (
    RealPrometheus,
    RealPushgateway,
    dashboard_queries,
    needs_prometheus,
    needs_pushgateway,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from policy.interface import BackendState, CircuitFeatures
from policy.telemetry import TelemetryPolicy
from policy.telemetry_sources import PrometheusSource

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow, needs_prometheus, needs_pushgateway]

NAMESPACE = "qubelet-workloads"
#: Dashboard panels fed by pipeline steps (the others read node daemons, cAdvisor or DCGM).
PIPELINE_PANELS = (
    "Task states (in range)",
    "Task completions by backend and state",
    "Queue wait (p95)",
    "Queue depth",
    "Subexperiments completed per second",
    "Backend up",
)


def _qubelet(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("QUBELET_PUSHGATEWAY", None)
    return subprocess.run(
        [sys.executable, "-m", "qubelet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def _telemetry_from_exposition(text: str, run_id: str) -> FakeTelemetry:
    """The run's pushed series, aggregated per backend as the policy's PromQL does."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    up: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("run") != run_id or "backend" not in labels:
                continue
            backend = labels["backend"]
            if sample.name == "qubelet_pipeline_task_duration_seconds_sum":
                sums[backend]["duration_sum"] += sample.value
            elif sample.name == "qubelet_pipeline_task_duration_seconds_count":
                sums[backend]["duration_count"] += sample.value
            elif sample.name == "qubelet_pipeline_tasks_total":
                sums[backend]["tasks"] += sample.value
                if labels["state"] == "failed":
                    sums[backend]["failed"] += sample.value
            elif sample.name == "qubelet_pipeline_queue_depth":
                sums[backend]["depth"] += sample.value
            elif sample.name == "qubelet_pipeline_backend_up":
                up[backend] = min(up.get(backend, 1.0), sample.value)
    return FakeTelemetry(
        mean_run_seconds={b: s["duration_sum"] / s["duration_count"] for b, s in sums.items()},
        failure_ratio={b: s["failed"] / s["tasks"] for b, s in sums.items()},
        queue_depth={b: s["depth"] for b, s in sums.items()},
        backend_up=up,
    )


def _decisions(source: PrometheusSource) -> list[str]:
    policy = TelemetryPolicy.from_sources([source], seed=0, record_metrics=False)
    tasks = [CircuitFeatures(f"k{i}", 4 + i % 2, 20, 6, 4 + i % 2, 64) for i in range(8)]
    states = [
        BackendState(name="cpu", kind="cpu"),
        BackendState(name="qpu:apollo", kind="qpu", max_qubits=20, fidelity_2q=0.999, readout_fidelity=0.999),
    ]
    return [d.backend for d in policy.select(tasks, states)]


def test_pushed_metrics_outlive_the_steps(tmp_path: Path) -> None:
    with (
        RealPushgateway(tmp_path / "pushgateway") as gateway,
        RealPrometheus(
            tmp_path / "prometheus",
            {"pushgateway": [gateway.address]},
            honor_labels=["pushgateway"],
            labels={"pushgateway": {"namespace": NAMESPACE}},
        ) as prom,
    ):
        run_dir = tmp_path / "run"
        push = f"--pushgateway={gateway.url}"
        gen = _qubelet(
            "task", "generate", "--run-dir", str(run_dir), push,
            "--qubits", "4", "--cuts", "1", "--shots", "64", "--backends", "cpu", "--batch-size", "6",
        )  # fmt: skip
        assert gen.returncode == 0, gen.stderr
        plan = json.loads((run_dir / "plan.json").read_text())
        run_id, batches = plan["run_id"], plan["batches"]
        assert len(batches) == 2, batches
        good, bad = batches

        # Waiting groups: one per batch, depth 1, counters at 0, scraped before any step runs.
        depth = f'sum(qubelet_pipeline_queue_depth{{run="{run_id}"}})'
        wait_for(lambda: prom.value(depth) == 2.0, 30, "the waiting groups in Prometheus")
        assert prom.value(f'sum(qubelet_pipeline_tasks_total{{run="{run_id}"}})') == 0.0

        first_key = bad["keys"][0]
        (run_dir / "subexperiments" / f"{first_key}.qpy").write_bytes(b"not qpy")
        ok = _qubelet("task", "execute", "--run-dir", str(run_dir), "--batch", good["id"], push)
        assert ok.returncode == 0, ok.stderr
        failed = _qubelet("task", "execute", "--run-dir", str(run_dir), "--batch", bad["id"], push)
        assert failed.returncode == 2 and "not a valid QPY file" in failed.stderr
        rec = _qubelet("task", "reconstruct", "--run-dir", str(run_dir), push)
        assert rec.returncode != 0

        # Every qubelet process has exited; Prometheus still gets the final values.
        def final(task: str, state: str) -> float | None:
            sel = f'run="{run_id}", task="{task}", state="{state}"'
            return prom.value(f"qubelet_pipeline_tasks_total{{{sel}}}")

        wait_for(lambda: final(good["id"], "succeeded") == len(good["keys"]), 30, "the good batch's push")
        wait_for(lambda: final(bad["id"], "failed") == len(bad["keys"]), 30, "the failed batch's push")
        wait_for(
            lambda: prom.value(f'qubelet_pipeline_runs_total{{run="{run_id}", outcome="failed"}}') == 1.0,
            30,
            "the reconstruct step's push",
        )
        assert prom.value(depth) == 0.0
        assert prom.value(f'qubelet_pipeline_backend_up{{run="{run_id}", task="{bad["id"]}"}}') == 0.0
        # The groups started at zero, so increase() counts them (a counter that first appears
        # at its final value would count as no increase).
        increase = prom.value(
            f'sum(increase(qubelet_pipeline_tasks_total{{run="{run_id}", state="succeeded"}}[5m]))'
        )
        assert increase is not None and increase == pytest.approx(len(good["keys"]), rel=0.2)

        panels = dashboard_queries(
            {"$namespace": NAMESPACE, "$__rate_interval": "1m", "$__range": "5m", "$__range_s": "300"}
        )
        with_data: set[str] = set()
        for title, expr in panels:
            if title in PIPELINE_PANELS and prom.query(expr):  # every query parses (or fails here)
                with_data.add(title)
        missing = set(PIPELINE_PANELS) - with_data
        assert not missing, f"panels with no data from pushed series: {sorted(missing)}"

        # The policy's Prometheus source on the real server, against the double fed the same
        # telemetry (the Pushgateway's own exposition of this run's groups).
        real = PrometheusSource(prom.url, window="5m")
        real_snaps = real.snapshots()
        assert real.last_error is None
        telemetry = _telemetry_from_exposition(gateway.metrics_text(), run_id)
        with FakePrometheus(telemetry=telemetry) as double:
            fake = PrometheusSource(double.url, window="5m")
            fake_snaps = fake.snapshots()
            assert set(real_snaps) == set(fake_snaps) == {"cpu"}
            for name, snap in real_snaps.items():
                other = fake_snaps[name]
                assert snap.up is other.up is False
                assert snap.queue_depth == other.queue_depth == 0.0
                assert snap.failure_ratio == pytest.approx(other.failure_ratio, rel=1e-6)
                assert snap.failure_ratio == pytest.approx(len(bad["keys"]) / 10)
                assert snap.mean_run_seconds == pytest.approx(other.mean_run_seconds, rel=1e-6)
            decided = _decisions(real)
            assert decided == _decisions(fake)
        # The telemetry mattered: cpu is down, so nothing goes there; priors alone pick cpu.
        assert "cpu" not in decided
        assert "cpu" in _decisions(PrometheusSource(f"{prom.url}/nothing-here", timeout=0.5))
