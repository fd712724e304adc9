"""The mirror probe's circuit and its reading: a wide QPU batch's error without simulation.

A QPU batch whose subexperiments are all too wide for the exact probe
(:func:`pipeline.mitigation.observed.batch_observed_error`) gets ONE extra circuit in its job:
the unitary part ``U`` of the subexperiment with the most two-qubit gates (measurements,
resets, classical control, barriers and delays stripped), a barrier, ``U†``, and every qubit
``U`` acts on measured. Ideally it reads ``0…0`` on every shot; the fraction that does is turned
into an estimate of that subexperiment's error by :func:`policy.probe.mirror_error`, the same
function the simulator uses (the model and why ``P(0…0)`` rather than parity are in
:mod:`policy.probe`). The barrier keeps the transpiler from cancelling ``U`` against ``U†``.

The mirror runs in the batch's job at the job's shots (an IQM job has one shot count), unfolded
under ZNE (it measures the device, not a mitigated value), and its counts are returned beside
the batch's, never as a result: it is no subexperiment and never reaches reconstruction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qiskit import ClassicalRegister, QuantumCircuit
from qiskit.circuit import Gate

from policy.interface import BackendState, CircuitFeatures
from policy.probe import mirror_error, mirrored_index

if TYPE_CHECKING:
    from pipeline.backends.base import Counts

#: the classical register the mirror's reads go to
MIRROR_REGISTER = "mirror"


@dataclass(frozen=True)
class MirrorProbe:
    """The mirror circuit of one subexperiment of a batch."""

    index: int  #: position in the batch of the mirrored subexperiment (its row carries the result)
    circuit: QuantumCircuit
    qubits: int  #: qubits measured (those ``U`` acts on)


def unitary_part(circuit: QuantumCircuit) -> QuantumCircuit:
    """``circuit``'s gates alone, on only the qubits they act on (no measurements, resets, control)."""
    gates = [inst for inst in circuit.data if isinstance(inst.operation, Gate)]
    used = sorted({circuit.find_bit(q).index for inst in gates for q in inst.qubits})
    position = {q: k for k, q in enumerate(used)}
    out = QuantumCircuit(len(used), name=f"{circuit.name}-unitary")
    for inst in gates:
        out.append(inst.operation, [position[circuit.find_bit(q).index] for q in inst.qubits])
    return out


def mirror_circuit(circuit: QuantumCircuit) -> QuantumCircuit | None:
    """``U``, a barrier, ``U†``, every qubit measured; None when ``U`` has no qubits or no inverse."""
    unitary = unitary_part(circuit)
    if unitary.num_qubits == 0:
        return None
    try:
        inverse = unitary.inverse()
    except Exception:  # a gate without a known inverse: no mirror for this batch
        return None
    register = ClassicalRegister(unitary.num_qubits, MIRROR_REGISTER)
    mirror = QuantumCircuit(*unitary.qregs, register, name=f"{circuit.name}-mirror")
    mirror.compose(unitary, inplace=True)
    mirror.barrier()
    mirror.compose(inverse, inplace=True)
    mirror.measure(range(unitary.num_qubits), range(unitary.num_qubits))
    return mirror


def plan_mirror(
    circuits: Sequence[QuantumCircuit], features: Sequence[CircuitFeatures], exact_max_width: int
) -> MirrorProbe | None:
    """The batch's mirror probe, or None when the exact probe measures it (or nothing can).

    The exact probe takes a batch with any subexperiment of at most ``exact_max_width`` qubits
    plus clbits; a batch with none gets the mirror of the subexperiment with the most two-qubit
    gates (:func:`policy.probe.mirrored_index`, the simulator's choice too).
    """
    if not circuits or any(c.num_clbits and c.num_qubits + c.num_clbits <= exact_max_width for c in circuits):
        return None
    index = mirrored_index(list(features))
    circuit = mirror_circuit(circuits[index])
    if circuit is None:
        return None
    return MirrorProbe(index=index, circuit=circuit, qubits=circuit.num_qubits)


def zero_fraction(counts: Counts) -> float:
    """The fraction of shots that read ``0…0``."""
    total = float(counts.counts.sum())
    if total <= 0:
        return 0.0
    zero = counts.counts[counts.outcomes == 0]
    return float(zero.sum()) / total


def mirror_observed_error(
    probe: MirrorProbe, counts: Counts, feature: CircuitFeatures, state: BackendState
) -> float | None:
    """The mirrored subexperiment's estimated error at ``state``'s mitigation level.

    None without a published calibration to convert with (:func:`policy.probe.mirror_error`).
    """
    if state.fidelity_2q is None or state.readout_fidelity is None:
        return None
    return mirror_error(
        zero_fraction(counts),
        probe.qubits,
        feature,
        state.fidelity_2q,
        state.readout_fidelity,
        state.mitigation,
    )
