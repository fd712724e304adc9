"""Telemetry sources: local JSONL history and the Prometheus HTTP API (through a test double).

The same source against a real Prometheus: tests/test_pushgateway_real.py.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from doubles.fake_prometheus import FakePrometheus

from policy.interface import BackendState, CircuitFeatures
from policy.telemetry import TelemetryPolicy
from policy.telemetry_sources import PROMQL, LocalHistory, PrometheusSource

pytestmark = pytest.mark.timeout(60)

GOOD_ROW = {
    "ts": 1.0, "run_id": "r", "task_id": "t", "key": "k", "partition": "A", "backend": "cpu",
    "backend_kind": "cpu", "model": "", "num_qubits": 5, "depth": 20, "num_2q_gates": 8,
    "num_clbits": 5, "shots": 4096, "batch_size": 4, "queue_wait_seconds": 0.0, "run_seconds": 0.004,
    "success": True, "error": None, "attempt": 1, "fidelity_2q": None, "readout_fidelity": None,
}  # fmt: skip


def test_prometheus_round_trip(fake_prometheus: FakePrometheus) -> None:
    source = PrometheusSource(fake_prometheus.url, timeout=2.0)
    snaps = source.snapshots()
    assert source.last_error is None
    assert snaps["cpu"].mean_run_seconds == pytest.approx(0.004)
    assert snaps["qpu:apollo"].failure_ratio == pytest.approx(0.25)
    assert snaps["qpu:apollo"].queue_depth == 40.0
    assert snaps["cpu"].up is True and snaps["qpu:apollo"].up is False
    assert source.unhealthy_devices() == 2
    assert source.kueue_pending() == {"cpu": 0.0, "qpu": 7.0}
    sent = {q for _, q in fake_prometheus.queries}
    assert PROMQL["mean_run_seconds"].format(window="5m") in sent
    assert ("/api/v1/query_range", PROMQL["failure_ratio"].format(window="5m")) in fake_prometheus.queries
    assert source.rows() == []


def test_backend_down_in_prometheus_is_avoided(fake_prometheus: FakePrometheus) -> None:
    policy = TelemetryPolicy.from_sources([PrometheusSource(fake_prometheus.url)], seed=0)
    qpu = BackendState(
        name="qpu:apollo", kind="qpu", max_qubits=20, fidelity_2q=0.999, readout_fidelity=0.999
    )
    wide = [CircuitFeatures(f"k{i}", 20, 30, 10, 20, 4096) for i in range(5)]
    decisions = policy.select(wide, [BackendState(name="cpu", kind="cpu"), qpu])
    assert {d.backend for d in decisions} == {"cpu"}  # up == 0 for the QPU
    assert policy.model.failure_ratio(qpu) == pytest.approx(0.25)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dead_endpoint_falls_back_to_priors() -> None:
    source = PrometheusSource(f"http://127.0.0.1:{_dead_port()}", timeout=0.5)
    assert source.snapshots() == {}
    assert source.last_error is not None and "prometheus http://127.0.0.1" in source.last_error
    policy = TelemetryPolicy.from_sources([source], seed=0)
    [d] = policy.select([CircuitFeatures("k", 5, 20, 8, 5, 4096)], [BackendState(name="cpu", kind="cpu")])
    assert d.backend == "cpu"


def test_garbage_answer_falls_back() -> None:
    with FakePrometheus(mode="garbage") as double:
        source = PrometheusSource(double.url, timeout=2.0)
        assert source.snapshots() == {}
        assert source.last_error is not None and "JSONDecodeError" in source.last_error


def test_local_history_reads_rows_and_names_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.jsonl"
    bad_kind = dict(GOOD_ROW, backend_kind="tpu")
    path.write_text(
        "\n".join([json.dumps(GOOD_ROW), "{truncated", json.dumps(bad_kind), "", json.dumps(GOOD_ROW)]) + "\n"
    )
    assert len(LocalHistory([path]).rows()) == 2  # lenient: bad lines skipped
    with pytest.raises(ValueError, match=rf"{path}:2: bad telemetry row"):
        LocalHistory([path], strict=True).rows()
    path.write_text(json.dumps(GOOD_ROW) + "\n" + json.dumps(bad_kind) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:2: .*backend_kind"):
        LocalHistory([path], strict=True).rows()
    snaps = LocalHistory([path]).snapshots()
    assert snaps["cpu"].samples == 1 and snaps["cpu"].mean_run_seconds == pytest.approx(0.004)


def test_missing_history_file(tmp_path: Path) -> None:
    assert LocalHistory([tmp_path / "nope.jsonl"]).rows() == []
    with pytest.raises(ValueError, match=r"cannot read telemetry file .*nope.jsonl"):
        LocalHistory([tmp_path / "nope.jsonl"], strict=True).rows()
