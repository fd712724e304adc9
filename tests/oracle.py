"""The independent oracle: qiskit-addon-cutting's own flow, and qiskit's own simulators.

Nothing here calls qubelet. Given the circuit, the cut and the observables a qubelet run was
given, it computes what the library computes with its own ``ExactSampler`` (every
subexperiment's exact distribution) and ``reconstruct_expectation_values``, and the uncut
circuit's value from ``qiskit.quantum_info`` (Statevector, or DensityMatrix for resets and
``Move``). qubelet's exact backend must agree with both to 1e-9; its shot backends must agree
within their standard errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qiskit import QuantumCircuit
from qiskit.quantum_info import DensityMatrix, PauliList, SparsePauliOp, Statevector
from qiskit_addon_cutting import (
    cut_wires,
    expand_observables,
    generate_cutting_experiments,
    partition_problem,
    reconstruct_expectation_values,
)
from qiskit_addon_cutting.utils.simulation import ExactSampler

#: agreement required between qubelet's exact backend and the oracle
TOLERANCE = 1e-9


def _without_measurements(circuit: QuantumCircuit) -> QuantumCircuit:
    if any(inst.operation.name == "measure" for inst in circuit.data):
        return circuit.remove_final_measurements(inplace=False)
    return circuit


def library_values(
    circuit: QuantumCircuit, observables: Sequence[str], partition: str | None = None
) -> list[float]:
    """⟨P⟩ per Pauli label by the library's flow, with exact subexperiment distributions.

    ``partition`` is one label per qubit of the circuit after ``cut_wires`` (None: the circuit's
    connectivity, as the library infers it from its cut gates and ``Move`` instructions).
    ``CutWire`` markers are turned into ``Move`` by ``cut_wires``, observables by
    ``expand_observables``, as the library's how-to does.
    """
    circuit = _without_measurements(circuit)
    paulis = PauliList(list(observables))
    if any(inst.operation.name == "cut_wire" for inst in circuit.data):
        expanded = cut_wires(circuit)
        paulis = expand_observables(paulis, circuit, expanded)
        circuit = expanded
    labels = list(partition) if partition is not None else None
    if labels is None and not any(inst.operation.name in ("qpd_2q", "move") for inst in circuit.data):
        # a circuit without cut markers and no partition: one subcircuit, no cut
        labels = ["A"] * circuit.num_qubits
    if labels is not None:
        used = _used_qubits(circuit)
        labels = [label if q in used else None for q, label in enumerate(labels)]
    problem = partition_problem(circuit=circuit, partition_labels=labels, observables=paulis)
    subexperiments, coefficients = generate_cutting_experiments(
        circuits=problem.subcircuits, observables=problem.subobservables, num_samples=np.inf
    )
    sampler = ExactSampler()
    results = {label: sampler.run(experiments).result() for label, experiments in subexperiments.items()}
    return [float(v) for v in reconstruct_expectation_values(results, coefficients, problem.subobservables)]


def library_cut_gates_values(circuit: QuantumCircuit, observables: Sequence[str]) -> list[float]:
    """⟨P⟩ for a circuit whose cut gates were made by ``cut_gates`` (no partition), as tutorial 2."""
    subexperiments, coefficients = generate_cutting_experiments(
        circuits=circuit, observables=PauliList(list(observables)), num_samples=np.inf
    )
    result = ExactSampler().run(subexperiments).result()
    return [
        float(v) for v in reconstruct_expectation_values(result, coefficients, PauliList(list(observables)))
    ]


def _used_qubits(circuit: QuantumCircuit) -> set[int]:
    return {
        circuit.find_bit(q).index
        for inst in circuit.data
        if inst.operation.name != "barrier"
        for q in inst.qubits
    }


def exact_values(circuit: QuantumCircuit, observables: Sequence[str]) -> list[float]:
    """⟨P⟩ of the uncut circuit from qiskit.quantum_info (DensityMatrix when it resets)."""
    circuit = _without_measurements(circuit)
    plain = circuit.copy_empty_like()
    for inst in circuit.data:
        if inst.operation.name not in ("cut_wire", "barrier"):
            plain.append(inst)
    if any(inst.operation.name in ("reset", "move") for inst in plain.data):
        state: Statevector | DensityMatrix = DensityMatrix(_expanded_moves(plain))
    else:
        state = Statevector(plain)
    return [float(np.real(state.expectation_value(SparsePauliOp(label)))) for label in observables]


def _expanded_moves(circuit: QuantumCircuit) -> QuantumCircuit:
    """The library's ``Move`` is reset(target) then swap: spelled out for DensityMatrix."""
    out = circuit.copy_empty_like()
    for inst in circuit.data:
        if inst.operation.name == "move":
            source, target = inst.qubits
            out.reset(target)
            out.swap(source, target)
        else:
            out.append(inst)
    return out


def weighted(values: Sequence[float], terms: Sequence[tuple[int, float]]) -> float:
    """Σ w_p values[p] over (Pauli index, weight) pairs."""
    return float(sum(w * values[p] for p, w in terms))
