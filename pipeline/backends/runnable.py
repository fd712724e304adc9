"""What Aer can run: its instruction set, and the translation of everything else into it.

Why: the validator admits any standard gate and anything defined in terms of standard gates
(``iswap``, ``dcx``, ``xx_plus_yy``, ``cs``, ``ch``, ``PauliEvolutionGate``, ``QFTGate``, ...),
but Aer's statevector method executes only its own basis and fails the whole batch with
"unknown instruction" on the rest. A circuit with such a gate is translated (``transpile`` at
optimisation level 0, no coupling map: same qubits, same clbits, same order) into Aer's basis
before it runs; a circuit without one runs as it is, untouched and with no transpile cost.
:func:`unrunnable_reason` lets the validator refuse, before any work starts, what no
translation makes runnable.
"""

from __future__ import annotations

from collections.abc import Iterable

from qiskit import QuantumCircuit
from qiskit.circuit import Instruction

from qubelet.errors import QubeletError

#: Instructions Aer's statevector method executes as they are (its basis gates, checked against
#: the installed Aer by tests/test_oracle_backends.py, plus the non-gate instructions it reads).
AER_STATEVECTOR_BASIS = frozenset(
    {
        "ccx", "ccz", "cp", "crx", "cry", "crz", "cswap", "csx", "cu", "cu1", "cu2", "cu3", "cx", "cy",
        "cz", "delay", "diagonal", "ecr", "h", "id", "initialize", "mcp", "mcphase", "mcr", "mcrx",
        "mcry", "mcrz", "mcswap", "mcsx", "mcu", "mcu1", "mcu2", "mcu3", "mcx", "mcx_gray", "mcy",
        "mcz", "multiplexer", "p", "pauli", "r", "reset", "rx", "rxx", "ry", "ryy", "rz", "rzx", "rzz",
        "s", "sdg", "swap", "sx", "sxdg", "t", "tdg", "u", "u1", "u2", "u3", "unitary", "x", "y", "z",
        "measure", "barrier", "save_probabilities", "save_statevector", "save_density_matrix",
    }
)  # fmt: skip
#: Aer's density-matrix method has a smaller gate set (no controlled rotations, no initialize).
AER_DENSITY_MATRIX_BASIS = frozenset(
    {
        "ccx", "cp", "cx", "cy", "cz", "delay", "diagonal", "ecr", "h", "id", "p", "pauli", "r",
        "reset", "rx", "rxx", "ry", "ryy", "rz", "rzx", "rzz", "s", "sdg", "swap", "sx", "sxdg", "t",
        "tdg", "u", "u1", "u2", "u3", "unitary", "x", "y", "z", "kraus", "superop",
        "measure", "barrier", "save_probabilities", "save_density_matrix",
    }
)  # fmt: skip


#: levels of definitions unrolled before a foreign instruction is declared unrunnable
_MAX_DEPTH = 12


class UnrunnableError(QubeletError, ValueError):
    """A circuit holds an instruction that no translation turns into Aer's instruction set."""


def foreign_instructions(circuit: QuantumCircuit, basis: Iterable[str] = AER_STATEVECTOR_BASIS) -> set[str]:
    """Names of the circuit's instructions that ``basis`` lacks (empty: it runs as it is)."""
    allowed = frozenset(basis)
    return {inst.operation.name for inst in circuit.data if inst.operation.name not in allowed}


def aer_runnable(circuit: QuantumCircuit, basis: Iterable[str] = AER_STATEVECTOR_BASIS) -> QuantumCircuit:
    """``circuit`` in Aer's instruction set: itself when it already is, else translated.

    Each foreign instruction is replaced by its definition, level by level (what ``transpile``'s
    basis translation would do, but without refusing Aer's own non-gate instructions such as
    ``kraus``); same qubits, same clbits, same order.

    Raises:
        UnrunnableError: an instruction has no definition in terms of ``basis``.
    """
    allowed = frozenset(basis)
    foreign = foreign_instructions(circuit, allowed)
    for _ in range(_MAX_DEPTH):
        if not foreign:
            return circuit
        stuck = sorted(
            inst.operation.name
            for inst in circuit.data
            if inst.operation.name in foreign and inst.operation.definition is None
        )
        if stuck:
            raise UnrunnableError(f"instruction {stuck[0]!r} has no definition in the simulator's gates")
        circuit = circuit.decompose(gates_to_decompose=sorted(foreign))
        foreign = foreign_instructions(circuit, allowed)
    raise UnrunnableError(
        f"instructions {', '.join(sorted(foreign))} still not in the simulator's gates after "
        f"{_MAX_DEPTH} levels of definitions"
    )


def unrunnable_reason(operation: Instruction) -> str | None:
    """Why ``operation`` cannot run on Aer even after translation, or None when it can."""
    if operation.name in AER_STATEVECTOR_BASIS:
        return None
    probe = QuantumCircuit(operation.num_qubits, operation.num_clbits)
    probe.append(operation, probe.qubits, probe.clbits)
    try:
        aer_runnable(probe)
    except UnrunnableError as exc:
        return str(exc)
    return None
