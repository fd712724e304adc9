"""The ansatz, observables and user-circuit inputs of a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qiskit import QuantumCircuit, qasm3, qpy

from pipeline.circuits import (
    build_target,
    default_observables,
    hardware_efficient_ansatz,
    load_circuit_file,
    parse_observable,
)
from pipeline.errors import PipelineError


def crossing_two_qubit_gates(circuit: QuantumCircuit, partition: str) -> int:
    count = 0
    for inst in circuit.data:
        if len(inst.qubits) == 2:
            a, b = (circuit.find_bit(q).index for q in inst.qubits)
            count += partition[a] != partition[b]
    return count


@pytest.mark.parametrize(("qubits", "cuts"), [(6, 1), (6, 3), (10, 3), (14, 2), (11, 4)])
def test_ansatz_has_exactly_k_crossing_gates(qubits: int, cuts: int) -> None:
    circuit, partition = hardware_efficient_ansatz(qubits, cuts, seed=3)
    assert circuit.num_qubits == qubits
    assert len(partition) == qubits and set(partition) == {"A", "B"}
    assert crossing_two_qubit_gates(circuit, partition) == cuts


def test_ansatz_is_seeded() -> None:
    first, _ = hardware_efficient_ansatz(8, 2, seed=11)
    again, _ = hardware_efficient_ansatz(8, 2, seed=11)
    other, _ = hardware_efficient_ansatz(8, 2, seed=12)
    assert first == again
    assert first != other


def test_too_few_qubits_for_cuts() -> None:
    with pytest.raises(PipelineError, match="too few for 3 cuts"):
        hardware_efficient_ansatz(4, 3, seed=0)


def test_observable_forms() -> None:
    assert [p.to_label() for p in parse_observable("Z0Z3", 4)] == ["ZIIZ"]
    assert [p.to_label() for p in parse_observable("XIIZ", 4)] == ["XIIZ"]
    assert sorted(p.to_label() for p in parse_observable("sumZ", 3)) == ["IIZ", "IZI", "ZII"]
    with pytest.raises(PipelineError, match="unknown observable 'Q3'"):
        parse_observable("Q3", 4)
    with pytest.raises(PipelineError, match="out of range"):
        parse_observable("Z9", 4)


def test_target_flattens_sums_and_dedupes() -> None:
    circuit, partition = hardware_efficient_ansatz(6, 1, seed=0)
    target = build_target(circuit, partition, ["sumZ", "Z0", "Z0Z5"])
    assert len(target.pauli_names) == 7  # six single Z (Z0 shared) + Z0Z5
    assert target.observable_terms["Z0"] == (target.pauli_names.index("IIIIIZ"),)
    assert default_observables(10, "AAAAABBBBB")[2] == "Z4Z5"


def test_partition_must_match_circuit() -> None:
    circuit, _ = hardware_efficient_ansatz(6, 1, seed=0)
    with pytest.raises(PipelineError, match="has 5 labels but the circuit has 6 qubits"):
        build_target(circuit, "AABBB", ["Z0"])
    with pytest.raises(PipelineError, match="at least two parts"):
        build_target(circuit, "AAAAAA", ["Z0"])


def test_user_circuit_files(tmp_path: Path) -> None:
    circuit, _ = hardware_efficient_ansatz(6, 1, seed=0)
    qpy_path = tmp_path / "c.qpy"
    with qpy_path.open("wb") as handle:
        qpy.dump(circuit, handle)
    assert load_circuit_file(qpy_path) == circuit
    qasm_path = tmp_path / "c.qasm"
    qasm_path.write_text(qasm3.dumps(circuit))
    loaded = load_circuit_file(qasm_path)
    assert loaded.num_qubits == 6
    from qiskit.quantum_info import Operator

    assert Operator(loaded).equiv(Operator(circuit))


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("bad.qpy", b"not qpy", "not a QPY file"),
        ("bad.qasm", b"OPENQASM 3.0; qubit[2] q; frob q;", "not a valid OpenQASM 3 circuit"),
    ],
)
def test_malformed_circuit_files(tmp_path: Path, name: str, content: bytes, says: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PipelineError) as info:
        load_circuit_file(path)
    message = str(info.value)
    assert message.startswith(str(path)) and says in message
    assert "\n" not in message


def test_missing_circuit_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="no such circuit file"):
        load_circuit_file(tmp_path / "absent.qpy")


def test_final_measurements_are_stripped() -> None:
    circuit = QuantumCircuit(4)
    circuit.h(0)
    circuit.cx(0, 3)
    circuit.measure_all()
    target = build_target(circuit, "AABB", ["Z0Z3"])
    assert target.circuit.num_clbits == 0
    assert np.isclose(sum(1 for _ in target.circuit.data), 2)


def test_exact_expectations_match_qiskit_statevector() -> None:
    """The Aer + parity path gives qiskit's exact values, for diagonal and other Paulis alike."""
    from qiskit.quantum_info import Statevector

    from pipeline.circuits import exact_expectations

    circuit, partition = hardware_efficient_ansatz(8, 2, seed=5)
    target = build_target(circuit, partition, ["ZIZIIIIZ", "XXYYZIII", "IYIIIIXZ", "sumZ", "Z0Z7"])
    ours = exact_expectations(target)
    state = Statevector(circuit)
    expected = [float(np.real(state.expectation_value(p))) for p in target.observables]
    assert ours is not None
    assert np.allclose(ours, expected, atol=1e-12)
    assert max(abs(v) for v in expected) > 0.05  # not a trivially zero comparison


def test_z_string_expectations_are_parity_sums() -> None:
    from pipeline.circuits import z_string_expectations

    rng = np.random.default_rng(2)
    probabilities = rng.random(1 << 5)
    probabilities /= probabilities.sum()
    outcomes = np.arange(1 << 5)
    fast = z_string_expectations(probabilities, 5)
    for mask in range(1 << 5):
        parity = np.array([bin(x & mask).count("1") % 2 for x in outcomes])
        assert fast[mask] == pytest.approx(float(probabilities @ (1 - 2 * parity)), abs=1e-12)
