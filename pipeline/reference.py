"""Exact reference values of non-unitary circuits: a density matrix, channel by channel.

Why: a statevector simulation of a reset picks one branch at random, so circuits with resets,
``Move`` wire cuts (a reset and a swap) or cut gates made by ``cut_gates`` had no exact
reference, and a wrong reconstruction of them went unnoticed. A density matrix takes each of
these as the channel it is: a reset is deterministic on ρ, and a cut gate's quasi-probability
decomposition Σ_i c_i Φ_i (each Φ_i local operations and signed measurements) sums, superoperator
by superoperator, to the channel of the gate that was cut. Memory grows as 4^n, so this is for
circuits up to :data:`DENSITY_MATRIX_MAX_QUBITS` qubits; wider ones get an ``exact_reason``.
"""

from __future__ import annotations

from functools import reduce

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Instruction
from qiskit.quantum_info import DensityMatrix, Kraus, Operator, PauliList, SuperOp

#: widest circuit whose reference is computed as a density matrix (4^12 amplitudes: 256 MiB)
DENSITY_MATRIX_MAX_QUBITS = 12

_P0 = np.diag([1.0, 0.0]).astype(complex)
_P1 = np.diag([0.0, 1.0]).astype(complex)


def _local_channel(operations: tuple[Instruction, ...]) -> SuperOp:
    """One qubit's part of a QPD term: its gates, resets and signed ("qpd") measurements in order."""
    channel = SuperOp(np.eye(4, dtype=complex))
    for operation in operations:
        if operation.name == "qpd_measure":
            # the outcome's sign multiplies the term: P0 ρ P0 − P1 ρ P1
            step = SuperOp(Kraus([_P0])) - SuperOp(Kraus([_P1]))
        elif operation.name == "reset":
            step = SuperOp(Kraus([_P0, np.array([[0, 1], [0, 0]], dtype=complex)]))
        else:
            step = SuperOp(Operator(operation))
        channel = channel.compose(step)
    return channel


def qpd_channel(operation: Instruction) -> SuperOp:
    """The channel a cut two-qubit gate stands for: Σ_i c_i (Φ_i^0 ⊗ Φ_i^1) over its QPD basis."""
    basis = operation.basis  # type: ignore[attr-defined]
    terms = [
        coefficient * _local_channel(tuple(second)).tensor(_local_channel(tuple(first)))
        for coefficient, (first, second) in zip(basis.coeffs, basis.maps, strict=True)
    ]
    return reduce(lambda a, b: a + b, terms)


def density_matrix_expectations(circuit: QuantumCircuit, observables: PauliList) -> list[float]:
    """⟨P⟩ of each Pauli on the mixed state ``circuit`` prepares from |0…0⟩ (resets, cut gates).

    Cut markers and barriers are dropped; a ``qpd_2q`` gate becomes its channel (as Kraus
    operators, which Aer's density-matrix method applies exactly); everything else runs as Aer
    runs it, translated into its density-matrix instruction set.
    """
    from qiskit_aer import AerSimulator

    from pipeline.backends.runnable import AER_DENSITY_MATRIX_BASIS, aer_runnable

    prepared = QuantumCircuit(circuit.num_qubits)
    for inst in circuit.data:
        name = inst.operation.name
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        if name in ("cut_wire", "barrier", "measure"):
            continue
        if name == "qpd_2q":
            kraus = Kraus(qpd_channel(inst.operation))
            prepared.append(kraus.to_instruction(), qubits)
        else:
            prepared.append(inst.operation, qubits)
    prepared = aer_runnable(prepared, AER_DENSITY_MATRIX_BASIS)
    prepared.save_density_matrix()  # type: ignore[attr-defined]
    result = AerSimulator(method="density_matrix").run(prepared).result()
    rho = DensityMatrix(np.asarray(result.data(0)["density_matrix"]))
    return [float(np.real(rho.expectation_value(pauli))) for pauli in observables]
