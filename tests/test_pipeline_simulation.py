"""The fast simulation paths agree with an independent reference and with shot-based Aer."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.quantum_info import Statevector

from pipeline.backends.base import Counts
from pipeline.backends.deferred import defer_measurements
from pipeline.backends.qpu import IQMBackend, resolve_qpu_target
from pipeline.backends.simulators import AerStatevectorBackend
from pipeline.circuits import build_target, default_observables, hardware_efficient_ansatz
from pipeline.cutting import cut_and_store
from pipeline.store import ArtifactStore


def branching_distribution(circuit: QuantumCircuit) -> dict[int, float]:
    """Reference: simulate measurements by explicit branching over outcomes (no deferral)."""
    n = circuit.num_qubits
    branches: list[tuple[float, Statevector, int]] = [(1.0, Statevector.from_label("0" * n), 0)]
    for inst in circuit.data:
        name = inst.operation.name
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        if name == "barrier":
            continue
        if name == "measure":
            clbit = circuit.find_bit(inst.clbits[0]).index
            new = []
            for weight, state, bits in branches:
                probs = state.probabilities([qubits[0]])
                for outcome in (0, 1):
                    if probs[outcome] < 1e-12:
                        continue
                    projector = np.zeros((2, 2))
                    projector[outcome, outcome] = 1.0
                    collapsed = state.evolve(projector, [qubits[0]])
                    collapsed = Statevector(collapsed.data / np.linalg.norm(collapsed.data))
                    new_bits = (bits & ~(1 << clbit)) | (outcome << clbit)
                    new.append((weight * probs[outcome], collapsed, new_bits))
            branches = new
            continue
        branches = [(w, s.evolve(inst.operation, qubits), b) for w, s, b in branches]
    out: dict[int, float] = {}
    for weight, _state, bits in branches:
        out[bits] = out.get(bits, 0.0) + weight
    return out


@pytest.fixture(scope="module")
def subexperiments(tmp_path_factory: pytest.TempPathFactory) -> list[QuantumCircuit]:
    circuit, partition = hardware_efficient_ansatz(6, 2, seed=5)
    target = build_target(circuit, partition, default_observables(6, partition))
    store = ArtifactStore(tmp_path_factory.mktemp("sub"))
    cut, _features = cut_and_store(target, store)
    keys = cut.unique_keys()
    return [store.get_circuit(k) for k in keys[:: max(1, len(keys) // 8)]]


def test_deferred_measurement_is_exact(subexperiments: list[QuantumCircuit]) -> None:
    for circuit in subexperiments:
        flat, sources = defer_measurements(circuit)
        assert not any(i.operation.name == "measure" for i in flat.data)
        written = [c for c, q in enumerate(sources) if q >= 0]
        probs = Statevector(flat).probabilities([sources[c] for c in written])
        deferred = {}
        for index, p in enumerate(probs):
            if p > 1e-12:
                outcome = sum(((index >> j) & 1) << c for j, c in enumerate(written))
                deferred[outcome] = deferred.get(outcome, 0.0) + p
        reference = branching_distribution(circuit)
        for outcome in set(deferred) | set(reference):
            assert deferred.get(outcome, 0.0) == pytest.approx(reference.get(outcome, 0.0), abs=1e-9)


def total_variation(a: Counts, b: Counts) -> float:
    pa = dict(zip(a.outcomes.tolist(), (a.counts / a.shots).tolist(), strict=True))
    pb = dict(zip(b.outcomes.tolist(), (b.counts / b.shots).tolist(), strict=True))
    return 0.5 * sum(abs(pa.get(k, 0.0) - pb.get(k, 0.0)) for k in set(pa) | set(pb))


def test_cpu_sampling_matches_shot_based_aer(subexperiments: list[QuantumCircuit]) -> None:
    from qiskit_aer import AerSimulator

    shots = 20000
    fast = AerStatevectorBackend("cpu").run_batch(subexperiments[:4], shots, [1, 2, 3, 4])
    for circuit, counts in zip(subexperiments[:4], fast, strict=False):
        assert counts.shots == shots
        slow = AerSimulator().run(circuit, shots=shots, seed_simulator=9).result().get_counts()
        reference = Counts.from_qiskit(slow, circuit.num_clbits)
        # Two independent 20k-shot samples of <= 2^9 outcomes: TV distance well under 0.05.
        assert total_variation(counts, reference) < 0.05


def test_fake_qpu_exact_noise_matches_shot_based_noisy_simulator(
    subexperiments: list[QuantumCircuit],
) -> None:
    from qiskit_aer import AerSimulator

    backend = IQMBackend(resolve_qpu_target("fake:IQMFakeAdonis", {}))
    shots = 20000
    circuits = subexperiments[:3]
    fast = backend.run_batch(circuits, shots, [5, 6, 7])
    compiled = transpile(circuits, backend=backend._backend, optimization_level=1, seed_transpiler=5)
    noisy = AerSimulator(noise_model=backend._backend.noise_model)
    for circuit, compiled_circuit, counts in zip(circuits, compiled, fast, strict=True):
        slow = noisy.run(compiled_circuit, shots=shots, seed_simulator=3).result().get_counts()
        assert total_variation(counts, Counts.from_qiskit(slow, circuit.num_clbits)) < 0.05
    state = backend.state()
    assert state.kind == "qpu" and state.max_qubits == 5
    assert state.fidelity_2q is not None and 0.9 < state.fidelity_2q < 1.0


def test_fake_qpu_is_noisy(subexperiments: list[QuantumCircuit]) -> None:
    """The noise model really acts: noisy and ideal distributions differ beyond sampling noise."""
    circuit = subexperiments[0]
    shots = 50000
    ideal = AerStatevectorBackend("cpu").run_batch([circuit], shots, [1])[0]
    noisy = IQMBackend(resolve_qpu_target("fake:IQMFakeApollo", {})).run_batch([circuit], shots, [1])[0]
    assert total_variation(ideal, noisy) > 0.02


def test_gpu_unavailable_or_consistent() -> None:
    from pipeline.backends.simulators import gpu_devices_available
    from pipeline.errors import BackendUnavailableError

    if not gpu_devices_available():
        with pytest.raises(BackendUnavailableError, match="no CUDA device"):
            AerStatevectorBackend("gpu")
        return
    circuit, _ = hardware_efficient_ansatz(6, 1, seed=0)
    circuit.measure_all()
    gpu = AerStatevectorBackend("gpu").run_batch([circuit], 8192, [3])[0]
    cpu = AerStatevectorBackend("cpu").run_batch([circuit], 8192, [3])[0]
    assert total_variation(gpu, cpu) < 0.05
