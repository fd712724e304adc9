"""Live signals: the loop reads backend health and Kueue queues from Prometheus as it re-plans."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from doubles.fake_prometheus import DEFAULT_TELEMETRY, FakePrometheus

from policy.interface import BackendState
from policy.live import LiveSignals
from policy.telemetry_sources import PrometheusSource
from qubelet.cli import main

STATES = [
    BackendState(name="cpu", kind="cpu"),
    BackendState(name="qpu:apollo", kind="qpu", max_qubits=20),
]


def test_health_and_kueue_queue_reach_the_states(fake_prometheus: FakePrometheus) -> None:
    now = [0.0]
    live = LiveSignals(PrometheusSource(fake_prometheus.url, timeout=2.0), ttl=15.0, clock=lambda: now[0])
    cpu, qpu = live.apply(STATES)
    assert cpu.healthy and cpu.external_queue_depth == 0
    assert not qpu.healthy  # qubelet_pipeline_backend_up{backend="qpu:apollo"} == 0
    assert qpu.external_queue_depth == 7  # kueue_local_queue_pending_workloads{name="qubelet-qpu"}
    asked = len(fake_prometheus.queries)
    live.apply(STATES)
    assert len(fake_prometheus.queries) == asked  # cached for ttl
    now[0] = 16.0
    live.apply(STATES)
    assert len(fake_prometheus.queries) > asked


def test_a_dead_prometheus_changes_nothing() -> None:
    live = LiveSignals(PrometheusSource("http://127.0.0.1:9", timeout=0.2))
    assert live.apply(STATES) == STATES


def test_a_run_avoids_the_backend_prometheus_reports_down(tmp_path: Path) -> None:
    telemetry = replace(DEFAULT_TELEMETRY, backend_up={"cpu": 1.0, "qpu:apollo": 0.0})
    with FakePrometheus(telemetry=telemetry) as prometheus:
        run_dir = tmp_path / "run"
        code = main(
            ["run", "--qubits", "4", "--cuts", "1", "--shots", "200", "--backends", "cpu,qpu",
             "--policy", "greedy", "--error-budget", "1", "--prometheus", prometheus.url,
             "--run-dir", str(run_dir), "--no-progress"]
        )  # fmt: skip
        assert code == 0
    plan = json.loads((run_dir / "plan.json").read_text())
    for decision in plan["decisions"].values():
        assert decision["backend"] == "cpu"
        lost = {c["backend"]: c.get("lost_because") for c in decision["candidates"]}
        # both signals say so: its own up gauge, and the device plugin's unhealthy devices
        assert lost["qpu:apollo"] == (
            'unhealthy: Prometheus: qubelet_pipeline_backend_up{backend="qpu:apollo"} is 0; '
            "Prometheus: 2 device-plugin devices Unhealthy and no QPU reported up"
        )


def test_the_dra_drivers_per_qpu_health_reaches_the_states() -> None:
    telemetry = replace(
        DEFAULT_TELEMETRY, backend_up={}, unhealthy_devices=None, qpu_healthy={"apollo": 0.0, "adonis": 1.0}
    )
    states = [*STATES, BackendState(name="qpu:adonis", kind="qpu", max_qubits=5)]
    with FakePrometheus(telemetry=telemetry) as prometheus:
        cpu, apollo, adonis = LiveSignals(PrometheusSource(prometheus.url)).apply(states)
    assert cpu.healthy and adonis.healthy and not apollo.healthy
    assert apollo.unhealthy_reason == (
        'Prometheus: qubelet_dra_qpu_healthy{qpu="apollo"} is 0 (its DRA health probe fails)'
    )


def test_the_admission_checks_health_expression_is_the_policys() -> None:
    from admission_check.telemetry import PROMQL as ADMISSION_PROMQL
    from policy.telemetry_sources import PROMQL

    assert PROMQL["qpu_healthy"] == ADMISSION_PROMQL["device_healthy"]
