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
from qiskit.circuit import CircuitInstruction, Gate
from qiskit.circuit.library import CXGate

from qubelet.errors import QubeletError

#: Instructions that do nothing to the state and are dropped from the deferred circuit.
_NO_OPS = frozenset({"barrier", "delay"})


class NotDeferrableError(QubeletError, ValueError):
    """The circuit has non-unitary operations besides measurements; simulate it shot by shot.

    That covers resets, classically controlled operations and composite instructions that hide
    a reset (``initialize``): only :class:`~qiskit.circuit.Gate` instances are unitary, so
    anything else is refused by type rather than by a list of names that would miss some.
    """


def defer_measurements(
    circuit: QuantumCircuit, *, allow_resets: bool = False
) -> tuple[QuantumCircuit, list[int]]:
    """Return a measurement-free equivalent and, per clbit, the qubit holding its value at the end.

    Clbits that are never written map to -1 (they read as 0). ``allow_resets`` keeps resets
    (for a density-matrix simulation, where a reset is a deterministic channel and the deferred
    measurement's ancilla keeps the outcome the reset erases).
    """
    data = list(circuit.data)
    qubit_index = {bit: i for i, bit in enumerate(circuit.qubits)}
    clbit_index = {bit: i for i, bit in enumerate(circuit.clbits)}
    last_use: dict[int, int] = {}
    for position, inst in enumerate(data):
        name = inst.operation.name
        if name in _NO_OPS:
            continue
        if name == "reset" and allow_resets:
            pass
        elif name != "measure" and not isinstance(inst.operation, Gate):
            raise NotDeferrableError(f"operation {name!r} is not a unitary gate")
        if getattr(inst.operation, "condition", None) is not None:
            raise NotDeferrableError(f"operation {name!r} is classically controlled")
        for qubit in inst.qubits:
            last_use[qubit_index[qubit]] = position
    mid_measurements = sum(
        1
        for position, inst in enumerate(data)
        if inst.operation.name == "measure" and last_use[qubit_index[inst.qubits[0]]] != position
    )
    out = circuit.copy_empty_like()  # same qubits (and registers); clbits stay unused
    if mid_measurements:
        out.add_register(QuantumRegister(mid_measurements, "deferred"))
    ancilla_indices = range(circuit.num_qubits, circuit.num_qubits + mid_measurements)
    clbit_source = [-1] * circuit.num_clbits
    next_ancilla = 0
    cx = CXGate()
    for position, inst in enumerate(data):
        name = inst.operation.name
        if name in _NO_OPS:
            continue
        if name == "measure":
            source = qubit_index[inst.qubits[0]]
            clbit = clbit_index[inst.clbits[0]]
            if last_use[source] == position:
                clbit_source[clbit] = source
            else:
                target = ancilla_indices[next_ancilla]
                next_ancilla += 1
                out._append(CircuitInstruction(cx, (out.qubits[source], out.qubits[target]), ()))
                clbit_source[clbit] = target
            continue
        if inst.clbits:
            raise NotDeferrableError(f"operation {name!r} writes classical bits")
        # Same qubit objects: the output keeps the input's registers, ancillas come after.
        out._append(CircuitInstruction(inst.operation, inst.qubits, ()))
    return out, clbit_source


def add_save_probabilities(circuit: QuantumCircuit, qubits: list[int]) -> None:
    """Append Aer's save-probabilities instruction over ``qubits`` (bit j of the result = qubits[j])."""
    from qiskit_aer.library import SaveProbabilities

    circuit.append(SaveProbabilities(len(qubits)), [circuit.qubits[q] for q in qubits])
