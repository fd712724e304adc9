"""The telemetry policy's decisions: budget, health, width, saturation, determinism."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy import metrics
from policy.interface import BackendState, CircuitFeatures, NoUsableBackendError
from policy.models import PolicyModel
from policy.registry import make_policy
from policy.telemetry import TelemetryPolicy

pytestmark = pytest.mark.timeout(60)

CPU = BackendState(name="cpu", kind="cpu", workers=2)
GPU = BackendState(name="gpu", kind="gpu")
GOOD_QPU = BackendState(
    name="qpu:good", kind="qpu", max_qubits=54, model="Aphrodite", fidelity_2q=0.999, readout_fidelity=0.995
)
NOISY_QPU = BackendState(
    name="qpu:noisy", kind="qpu", max_qubits=54, model="Adonis", fidelity_2q=0.95, readout_fidelity=0.9
)


def _tasks(n: int, qubits: int = 5, depth: int = 20, gates: int = 8) -> list[CircuitFeatures]:
    return [CircuitFeatures(f"k{i}", qubits, depth + i % 3, gates, qubits, 4096) for i in range(n)]


def test_one_decision_per_task_in_order_with_alternatives() -> None:
    tasks = _tasks(30)
    decisions = TelemetryPolicy(seed=0).select(tasks, [CPU, GPU, GOOD_QPU])
    assert [d.key for d in decisions] == [t.key for t in tasks]
    for d in decisions:
        assert d.backend in {"cpu", "gpu", "qpu:good"}
        assert set(d.alternatives) == {"cpu", "gpu", "qpu:good"}
        assert {"seconds", "error"} <= set(d.alternatives["cpu"])
        assert d.reason


def test_error_budget_is_respected() -> None:
    # 30-qubit circuits: a CPU statevector is hopeless, so only the error budget keeps them off
    # the noisy QPU.
    tasks = _tasks(20, qubits=30, depth=30, gates=40)
    decisions = TelemetryPolicy(seed=0, error_budget=0.35).select(tasks, [CPU, NOISY_QPU])
    assert {d.backend for d in decisions} == {"cpu"}
    decisions = TelemetryPolicy(seed=0, error_budget=0.35).select(tasks, [CPU, GOOD_QPU])
    on_qpu = [d for d in decisions if d.kind == "qpu"]
    # a good QPU within budget beats a 2^30-amplitude CPU simulation for every one of them
    assert len(on_qpu) == len(tasks), [d.backend for d in decisions]
    for d in on_qpu:
        assert d.predicted_error is not None and d.predicted_error <= 0.35
        assert d.min_qubits == 30
        assert d.min_fidelity_2q is not None and d.min_fidelity_2q <= GOOD_QPU.fidelity_2q  # type: ignore[operator]


def test_qpu_wins_for_wide_circuits_not_only_tiny_ones() -> None:
    tasks = _tasks(40, qubits=28, depth=30, gates=40)
    decisions = TelemetryPolicy(seed=0, epsilon=0.0).select(tasks, [CPU, GPU, GOOD_QPU])
    by_kind = {k: sum(d.kind == k for d in decisions) for k in ("cpu", "gpu", "qpu")}
    assert by_kind["qpu"] > by_kind["gpu"] > 0, by_kind


def test_unhealthy_and_too_small_backends_are_avoided() -> None:
    tasks = _tasks(30)
    sick_cpu = BackendState(name="cpu", kind="cpu", workers=4, healthy=False)
    tiny_qpu = BackendState(
        name="qpu:tiny", kind="qpu", max_qubits=3, fidelity_2q=0.999, readout_fidelity=0.999
    )
    decisions = TelemetryPolicy(seed=0).select(tasks, [sick_cpu, tiny_qpu, GPU])
    assert {d.backend for d in decisions} == {"gpu"}
    with pytest.raises(NoUsableBackendError, match="no healthy backend fits 5 qubits"):
        TelemetryPolicy(seed=0).select(tasks, [sick_cpu, tiny_qpu])


def test_saturated_backend_is_avoided() -> None:
    tasks = _tasks(10)
    busy_cpu = BackendState(name="cpu", kind="cpu", workers=2, queue_depth=500, queue_wait_seconds=60.0)
    decisions = TelemetryPolicy(seed=0, epsilon=0.0).select(tasks, [busy_cpu, GPU])
    assert {d.backend for d in decisions} == {"gpu"}


def test_queue_depth_with_known_latency_counts_as_backlog() -> None:
    # the state gives only a depth; recent telemetry says each CPU task takes a second
    row = {"backend": "cpu", "backend_kind": "cpu", "num_qubits": 5, "depth": 20, "num_2q_gates": 8,
           "num_clbits": 5, "shots": 4096, "run_seconds": 1.0, "success": True}  # fmt: skip
    policy = TelemetryPolicy(PolicyModel([row] * 5), seed=0, epsilon=0.0)  # type: ignore[list-item]
    deep = BackendState(name="cpu", kind="cpu", workers=2, queue_depth=200)
    assert policy.model.queue_wait(deep) == pytest.approx(100.0)
    assert {d.backend for d in policy.select(_tasks(5), [deep, GPU])} == {"gpu"}


def test_registry_builds_the_telemetry_policy(tmp_path: Path) -> None:
    policy = make_policy("telemetry", seed=3, model_path=None)
    assert isinstance(policy, TelemetryPolicy) and policy.name == "telemetry" and policy.seed == 3
    model = tmp_path / "model.json"
    PolicyModel().save(model)
    assert isinstance(make_policy("telemetry", seed=0, model_path=model), TelemetryPolicy)


def test_load_is_spread_when_one_backend_would_be_the_bottleneck() -> None:
    # 5-qubit tasks: the CPU is fastest per task, yet many of them also fill the GPU in parallel.
    decisions = TelemetryPolicy(seed=0, epsilon=0.0).select(_tasks(400), [CPU, GPU])
    assert 0 < sum(d.backend == "gpu" for d in decisions) < sum(d.backend == "cpu" for d in decisions)


def test_decisions_are_deterministic_for_a_seed() -> None:
    # one long subexperiment sets the makespan: the short ones have idle time to explore into
    tasks = [CircuitFeatures("long", 20, 2000, 8, 20, 4096), *_tasks(200)]
    backends = [CPU, GPU, GOOD_QPU]
    first = TelemetryPolicy(seed=7, epsilon=0.3).select(tasks, backends)
    second = TelemetryPolicy(seed=7, epsilon=0.3).select(tasks, backends)
    assert [d.backend for d in first] == [d.backend for d in second]
    assert any("exploring" in d.reason for d in first)  # exploration really happened


def test_explain_names_the_winner_and_the_excluded() -> None:
    policy = TelemetryPolicy(seed=0)
    sick = BackendState(name="qpu:sick", kind="qpu", max_qubits=54, healthy=False)
    report = policy.explain(_tasks(1)[0], [CPU, GPU, NOISY_QPU, sick])
    assert report["chosen"] == "cpu"
    assert report["why"].startswith("cpu finishes first")
    rows = {r["backend"]: r for r in report["backends"]}
    assert any("budget" in why for why in rows["qpu:noisy"]["excluded_because"])
    assert rows["qpu:sick"]["excluded_because"] == ["unhealthy"]
    assert rows["cpu"]["model"] == "prior"


def test_decisions_and_prediction_errors_are_exported_as_metrics() -> None:
    def count(kind: str) -> float:
        return metrics.DECISIONS.labels(policy="telemetry", backend_kind=kind, backend=kind)._value.get()

    def observations() -> float:
        return sum(b.get() for b in metrics.PREDICTION_ERROR._buckets)

    before, seen = count("cpu"), observations()
    policy = TelemetryPolicy(seed=0, epsilon=0.0)
    [decision] = policy.select(_tasks(1), [CPU])
    assert count("cpu") == before + 1
    policy.observe(
        [
            {
                "key": decision.key, "backend": "cpu", "backend_kind": "cpu", "num_qubits": 5,
                "depth": 20, "num_2q_gates": 8, "num_clbits": 5, "shots": 4096,
                "run_seconds": 0.5, "success": True,
            }
        ]
    )  # fmt: skip
    assert observations() == seen + 1
    assert policy.model.stats["cpu"].rows == 1
