"""Checks on a user's circuit before anything runs, each failing with one line that says where.

Why before: a circuit the backends cannot run would otherwise fail inside a batch, be retried,
mark every backend unhealthy in turn and end as "no healthy backend left" — a report about the
machines when the problem is the input. Validation turns those into usage errors (exit 2).
"""

from __future__ import annotations

from collections.abc import Iterator

from qiskit import QuantumCircuit
from qiskit.circuit import Gate, Instruction
from qiskit.circuit.library import get_standard_gate_name_mapping

from pipeline.cutgates import check_cut_gates
from pipeline.errors import PipelineError

#: Non-gate instructions the cutting library and the backends understand by name.
_KNOWN_INSTRUCTIONS = frozenset(
    {
        "measure",
        "reset",
        "barrier",
        "delay",
        "initialize",
        "unitary",
        "state_preparation",
        "cut_wire",
        "move",
        "qpd_1q",
        "qpd_2q",
    }
)
#: Instructions that carry no quantum operation (markers), ignored by the unitarity check.
_MARKERS = frozenset({"barrier", "cut_wire", "delay"})
_CONTROL_FLOW = frozenset({"if_else", "while_loop", "for_loop", "switch_case", "box", "break_loop"})


def _known(operation: Instruction) -> bool:
    return operation.name in _KNOWN_INSTRUCTIONS or operation.name in get_standard_gate_name_mapping()


def _describe(circuit: QuantumCircuit, position: int) -> str:
    inst = circuit.data[position]
    qubits = ",".join(str(circuit.find_bit(q).index) for q in inst.qubits)
    return f"'{inst.operation.name}' (instruction {position}, qubits {qubits})"


def check_bound(circuit: QuantumCircuit) -> None:
    """Unbound parameters cannot be simulated; name them and say how to bind them."""
    if circuit.parameters:
        names = [p.name for p in circuit.parameters]
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise PipelineError(
            f"the circuit has {len(names)} unbound parameters ({shown}): bind them, or give "
            "--parameters FILE with one row of values per run"
        )


def _leaves(operation: Instruction) -> Iterator[Instruction]:
    """The operation itself if it is known, else what its definition is made of (recursively)."""
    if _known(operation):
        yield operation
        return
    definition = operation.definition
    if definition is None:
        yield operation
        return
    for inner in definition.data:
        yield from _leaves(inner.operation)


def check_instructions(circuit: QuantumCircuit) -> None:
    """Every instruction is a standard gate, a known instruction, or defined in terms of them."""
    for position, inst in enumerate(circuit.data):
        name = inst.operation.name
        if name in _CONTROL_FLOW:
            raise PipelineError(
                f"unsupported instruction {_describe(circuit, position)}: classically controlled "
                "operations cannot be cut"
            )
        for leaf in _leaves(inst.operation):
            if not _known(leaf):
                inner = "" if leaf is inst.operation else f" (inside its definition: '{leaf.name}')"
                raise PipelineError(
                    f"unsupported instruction {_describe(circuit, position)}{inner}: it has no "
                    "definition in standard gates; decompose it or give its definition"
                )


def check_partition_crossings(circuit: QuantumCircuit, partition: str) -> None:
    """Only one- and two-qubit gates can be cut: a wider gate must stay inside one partition."""
    for position, inst in enumerate(circuit.data):
        if len(inst.qubits) < 3 or inst.operation.name == "barrier":
            continue
        labels = sorted({partition[circuit.find_bit(q).index] for q in inst.qubits})
        if len(labels) > 1:
            raise PipelineError(
                f"gate {_describe(circuit, position)} spans partitions {','.join(labels)}: only "
                "1- and 2-qubit gates can be cut; decompose it or change --partition"
            )


def non_unitary_reason(circuit: QuantumCircuit) -> str | None:
    """Why the circuit is not a unitary (reset, initialize, a move), or None when it is one."""
    for position, inst in enumerate(circuit.data):
        operation = inst.operation
        if operation.name in _MARKERS or operation.name == "measure":
            continue
        for leaf in _leaves(operation):
            if leaf.name in _MARKERS:
                continue
            if not isinstance(leaf, Gate) or leaf.name in ("move", "qpd_2q", "qpd_1q"):
                inner = "" if leaf is operation else f" (it contains '{leaf.name}')"
                return f"not unitary: {_describe(circuit, position)}{inner}"
    return None


#: cutting markers the library replaces before anything runs
_CUT_MARKERS = frozenset({"cut_wire", "move", "qpd_1q", "qpd_2q"})


def check_runnable(circuit: QuantumCircuit) -> None:
    """Every instruction runs on the simulators, as it is or translated into Aer's gates.

    Why here: a gate the simulator cannot take would fail every batch and mark each backend
    unhealthy in turn; refused now, it is one line naming the instruction, before any work.
    """
    from pipeline.backends.runnable import unrunnable_reason

    seen: set[str] = set()
    for position, inst in enumerate(circuit.data):
        operation = inst.operation
        if operation.name in _CUT_MARKERS or operation.name in seen or inst.clbits:
            continue
        seen.add(operation.name)
        reason = unrunnable_reason(operation)
        if reason is not None:
            raise PipelineError(f"unsupported instruction {_describe(circuit, position)}: {reason}")


def validate_circuit(circuit: QuantumCircuit, partition: str | None, *, allow_parameters: bool) -> None:
    """All of the above, in the order a user would fix them."""
    check_cut_gates(circuit)
    check_instructions(circuit)
    check_runnable(circuit)
    if not allow_parameters:
        check_bound(circuit)
    if partition is not None and len(partition) == circuit.num_qubits:
        check_partition_crossings(circuit, partition)
