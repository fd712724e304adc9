"""Exact outcome distributions of small cutting subexperiments, by deferred measurement.

Gate-cutting subexperiments carry mid-circuit measurements (the QPD terms of a cut CNOT measure
a qubit and continue). A shot-based simulator must then re-run the circuit shot by shot. By the
deferred-measurement principle, a measurement of qubit q that is followed by more gates equals a
CNOT from q onto a fresh ancilla that is read at the end, so the whole circuit becomes
measurement-free: one statevector simulation gives the exact joint distribution of every
classical bit, and sampling ``shots`` outcomes from it is statistically identical to running the
shots one by one. The cost is one ancilla per mid-circuit measurement (K for K cuts).
"""

from __future__ import annotations

from qiskit import QuantumCircuit, QuantumRegister

SUPPORTED_NON_UNITARY = {"measure", "barrier"}


class NotDeferrableError(ValueError):
    """The circuit has resets or classically controlled operations; simulate it shot by shot."""


def defer_measurements(circuit: QuantumCircuit) -> tuple[QuantumCircuit, list[int]]:
    """Return a measurement-free equivalent and, per clbit, the qubit holding its value at the end.

    Clbits that are never written map to -1 (they read as 0).
    """
    data = list(circuit.data)
    last_use: dict[int, int] = {}
    for position, inst in enumerate(data):
        if inst.operation.name == "barrier":
            continue
        if getattr(inst.operation, "condition", None) is not None or inst.operation.name in (
            "reset",
            "if_else",
            "while_loop",
            "for_loop",
            "switch_case",
        ):
            raise NotDeferrableError(f"operation {inst.operation.name!r} cannot be deferred")
        for qubit in inst.qubits:
            last_use[circuit.find_bit(qubit).index] = position
    mid_measurements = sum(
        1
        for position, inst in enumerate(data)
        if inst.operation.name == "measure" and last_use[circuit.find_bit(inst.qubits[0]).index] != position
    )
    ancillas = QuantumRegister(mid_measurements, "deferred") if mid_measurements else None
    out = QuantumCircuit(*circuit.qregs, name=circuit.name)
    if ancillas is not None:
        out.add_register(ancillas)
    clbit_source = [-1] * circuit.num_clbits
    next_ancilla = 0
    for position, inst in enumerate(data):
        name = inst.operation.name
        if name == "barrier":
            continue
        qubit_indices = [circuit.find_bit(q).index for q in inst.qubits]
        if name == "measure":
            source = qubit_indices[0]
            clbit = circuit.find_bit(inst.clbits[0]).index
            if last_use[source] == position:
                clbit_source[clbit] = source
            else:
                assert ancillas is not None
                target = ancillas[next_ancilla]
                next_ancilla += 1
                out.cx(source, target)
                clbit_source[clbit] = out.find_bit(target).index
            continue
        if inst.clbits:
            raise NotDeferrableError(f"operation {name!r} writes classical bits")
        out.append(inst.operation, [out.qubits[i] for i in qubit_indices])
    return out, clbit_source


def add_save_probabilities(circuit: QuantumCircuit, qubits: list[int]) -> None:
    """Append Aer's save-probabilities instruction over ``qubits`` (bit j of the result = qubits[j])."""
    from qiskit_aer.library import SaveProbabilities

    circuit.append(SaveProbabilities(len(qubits)), [circuit.qubits[q] for q in qubits])
