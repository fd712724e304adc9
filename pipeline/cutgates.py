"""Cut gates a user placed with qiskit-addon-cutting's ``cut_gates``: safe to reuse, or refused.

Two library behaviours make such circuits fragile:

- ``partition_problem`` numbers each cut by appending ``_<index>`` to the cut gate's label and then
  decomposes it. A ``TwoQubitQPDGate`` whose decomposition was already built — by drawing the
  circuit, dumping it as QPY, or an earlier run — keeps the old, unnumbered labels in that cached
  decomposition, and ``generate_cutting_experiments`` then refuses it with a ``ValueError`` about
  label suffixes. :func:`fresh_cut_gates` rebuilds the gates, so a cut never depends on what was
  done to the circuit before, and the caller's circuit object is never touched.
- QPY has no representation for a QPD gate: one saved after ``cut_gates`` loads as an opaque
  ``qpd_2q`` instruction without its basis. It cannot be cut or run, and nothing can rebuild it
  (the angles of the cut gate are gone), so :func:`check_cut_gates` refuses it in one line,
  before anything is written.
"""

from __future__ import annotations

from qiskit import QuantumCircuit

from pipeline.errors import PipelineError

_QPD_NAMES = frozenset({"qpd_1q", "qpd_2q"})


def fresh_cut_gates(circuit: QuantumCircuit) -> QuantumCircuit:
    """``circuit`` itself if it has no cut gates, else a copy whose cut gates are new objects.

    The new gates carry the same basis and label but no cached decomposition (see the module).
    """
    if not any(inst.operation.name == "qpd_2q" for inst in circuit.data):
        return circuit
    from qiskit_addon_cutting.qpd import TwoQubitQPDGate

    out = circuit.copy_empty_like()
    for inst in circuit.data:
        operation = inst.operation
        if isinstance(operation, TwoQubitQPDGate):
            fresh = TwoQubitQPDGate(operation.basis, basis_id=operation.basis_id, label=operation.label)
            out.append(inst.replace(operation=fresh))
        else:
            out.append(inst)
    return out


def check_cut_gates(circuit: QuantumCircuit) -> None:
    """Refuse QPD instructions that are not the library's QPD gates (a QPY round trip's leftovers)."""
    from qiskit_addon_cutting.qpd import BaseQPDGate

    for position, inst in enumerate(circuit.data):
        operation = inst.operation
        if operation.name in _QPD_NAMES and not isinstance(operation, BaseQPDGate):
            qubits = ",".join(str(circuit.find_bit(q).index) for q in inst.qubits)
            label = f" '{operation.label}'" if getattr(operation, "label", None) else ""
            raise PipelineError(
                f"instruction {position} ('{operation.name}'{label}, qubits {qubits}) is a cut gate "
                "without its decomposition, as QPY loads a circuit saved after cut_gates: save the "
                "circuit before cutting and give --partition, or pass the cut circuit to "
                "pipeline.api.run in the same process"
            )
