"""The circuits a run cuts, and the observables to estimate.

A run cuts a hardware-efficient ansatz with a known number of cut gates, or a user's QPY /
OpenQASM 3 file.

The ansatz is built so that exactly ``cuts`` two-qubit gates cross the A|B boundary: every other
entangler stays inside its half. Cutting those gates with qiskit-addon-cutting then yields
6^K coefficient terms (six QPD terms per CNOT), the paper's 216 for K=3.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qiskit import QuantumCircuit, qasm3, qpy
from qiskit.quantum_info import Pauli, PauliList

from pipeline.errors import PipelineError

#: Largest circuit for which the exact statevector reference is computed.
EXACT_REFERENCE_MAX_QUBITS = 24


@dataclass(frozen=True)
class CutTarget:
    """A circuit, its partition labels (one letter per qubit) and named observables."""

    circuit: QuantumCircuit
    partition: str | None
    observable_names: tuple[str, ...]
    observables: PauliList  # one Pauli per entry of ``pauli_names``, qiskit order
    pauli_names: tuple[str, ...]
    #: each named observable is a sum of these Paulis (indices into ``observables``)
    observable_terms: dict[str, tuple[int, ...]]
    #: the real coefficient of each of those Paulis (same order; all 1 for plain forms)
    observable_weights: dict[str, tuple[float, ...]] = field(default_factory=dict)


def split_halves(num_qubits: int) -> tuple[int, int]:
    """Sizes of halves A and B (A gets the smaller half when ``num_qubits`` is odd)."""
    size_a = num_qubits // 2
    return size_a, num_qubits - size_a


def hardware_efficient_ansatz(num_qubits: int, cuts: int, seed: int) -> tuple[QuantumCircuit, str]:
    """An HEA on ``num_qubits`` qubits in which exactly ``cuts`` CNOTs cross the A|B boundary.

    Layers of seeded RY·RZ rotations alternate with CNOT ladders inside each half; the ``k``-th
    crossing CNOT joins A-qubit ``a_k`` and B-qubit ``b_k`` (distinct pairs, so every cut gate
    touches fresh boundary qubits). Returns the circuit and its partition labels.
    """
    if cuts < 1:
        raise PipelineError(f"cuts must be at least 1, got {cuts}")
    size_a, size_b = split_halves(num_qubits)
    if size_a < cuts or size_b < cuts:
        raise PipelineError(
            f"{num_qubits} qubits are too few for {cuts} cuts: each half needs at least "
            f"{cuts} qubits, so use --qubits {2 * cuts} or more"
        )
    rng = np.random.default_rng(seed)
    circuit = QuantumCircuit(num_qubits, name=f"hea_{num_qubits}q_{cuts}cuts")
    qubits_a = list(range(size_a))
    qubits_b = list(range(size_a, num_qubits))

    def rotations() -> None:
        for qubit in range(num_qubits):
            circuit.ry(float(rng.uniform(0, 2 * np.pi)), qubit)
            circuit.rz(float(rng.uniform(0, 2 * np.pi)), qubit)

    for layer in range(cuts):
        rotations()
        for half in (qubits_a, qubits_b):
            for left, right in itertools.pairwise(half):
                circuit.cx(left, right)
        # Boundary pair for this layer: walk outwards from the middle.
        circuit.cx(qubits_a[-1 - layer], qubits_b[layer])
    rotations()
    partition = "A" * size_a + "B" * size_b
    return circuit, partition


_INDEXED_TERM = re.compile(r"([XYZ])(\d+)")
#: one term of a weighted sum: optional sign, optional ``coefficient*``, then a Pauli form
_SUM_TERM = re.compile(
    r"\s*(?P<sign>[+-])?\s*(?:(?P<coeff>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*\*\s*)?"
    r"(?P<atom>[A-Za-z][A-Za-z0-9]*)\s*"
)


def parse_observable(name: str, num_qubits: int) -> list[Pauli]:
    """Turn an observable name into the Paulis whose sum it is (unit weights).

    Accepted: a full Pauli label (``ZIIIIIIIIZ``, leftmost = highest qubit as in qiskit),
    an indexed product (``Z0Z9``, ``X3Y4``), or ``sumZ`` / ``sumX`` (sum over all qubits).
    """
    spec = name.strip()
    if spec in ("sumZ", "sumX", "sumY"):
        letter = spec[-1]
        return [
            Pauli("".join(letter if q == i else "I" for q in reversed(range(num_qubits))))
            for i in range(num_qubits)
        ]
    if len(spec) == num_qubits and set(spec) <= set("IXYZ"):
        return [Pauli(spec)]
    terms = _INDEXED_TERM.findall(spec)
    if terms and "".join(f"{p}{q}" for p, q in terms) == spec:
        letters = ["I"] * num_qubits
        for letter, index_text in terms:
            index = int(index_text)
            if index >= num_qubits or letters[index] != "I":
                raise PipelineError(
                    f"observable {name!r}: qubit {index} is out of range or repeated "
                    f"(circuit has {num_qubits} qubits)"
                )
            letters[index] = letter
        return [Pauli("".join(reversed(letters)))]
    raise PipelineError(
        f"unknown observable {name!r}: use a Pauli label of length {num_qubits} "
        "(e.g. ZIZ...), an indexed product like Z0Z9, or sumZ"
    )


def split_named(spec: str) -> tuple[str, str]:
    """``"energy=ZZ+0.5*XX"`` → (``energy``, ``ZZ+0.5*XX``); an unnamed spec names itself."""
    if "=" in spec:
        name, _, expression = spec.partition("=")
        if not name.strip():
            raise PipelineError(f"observable {spec!r}: empty name before '='")
        return name.strip(), expression.strip()
    return spec.strip(), spec.strip()


def parse_weighted_observable(spec: str, num_qubits: int) -> list[tuple[Pauli, float]]:
    """A real-weighted sum of Pauli forms (a SparsePauliOp with real coefficients).

    ``ZZII+IZZI-IIZZ+0.5*XIXI``: each term is ``[sign][coefficient*]form`` where form is any
    :func:`parse_observable` form (so ``0.5*sumZ`` and ``-Z0Z3`` work too). A plain form is a
    sum with unit weights.
    """
    _, expression = split_named(spec)
    position = 0
    terms: list[tuple[Pauli, float]] = []
    while position < len(expression):
        match = _SUM_TERM.match(expression, position)
        if match is None or match.end() == position or (terms and not match.group("sign")):
            raise PipelineError(
                f"observable {spec!r}: cannot read a term at character {position + 1} "
                "(write sums like ZZII+IZZI-0.5*XIXI)"
            )
        weight = float(match.group("coeff") or 1.0)
        if match.group("sign") == "-":
            weight = -weight
        terms.extend((pauli, weight) for pauli in parse_observable(match.group("atom"), num_qubits))
        position = match.end()
    if not terms:
        raise PipelineError(f"observable {spec!r} is empty")
    return terms


def observables_from_json(data: object, source: str) -> tuple[str, ...]:
    """Observable specs from an ``--observables-file``: a JSON list of named SparsePauliOps.

    Each entry is ``{"name": "energy", "terms": [["ZZII", 1.0], ["XIXI", -0.5]]}`` (``terms``
    may also be a ``{label: coefficient}`` object, and labels any :func:`parse_observable`
    form), or a plain string spec. Coefficients must be real: expectation values of Hermitian
    observables are what the pipeline estimates.
    """
    if not isinstance(data, list) or not data:
        raise PipelineError(f"{source}: expected a non-empty JSON list of observables")
    specs = []
    for index, entry in enumerate(data):
        where = f"{source}: entry {index}"
        if isinstance(entry, str):
            specs.append(entry)
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or "terms" not in entry:
            raise PipelineError(f"{where}: expected {{'name': str, 'terms': [[label, coefficient], ...]}}")
        raw = entry["terms"]
        pairs = list(raw.items()) if isinstance(raw, dict) else raw
        if not isinstance(pairs, list) or not pairs:
            raise PipelineError(f"{where}: 'terms' must be a non-empty list or object")
        parts = []
        for pair in pairs:
            if not (isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], str)):
                raise PipelineError(f"{where}: term {pair!r} is not [label, coefficient]")
            coefficient = pair[1]
            if isinstance(coefficient, list):  # [real, imag], as SparsePauliOp.to_list() gives
                if len(coefficient) != 2 or coefficient[1] != 0:
                    raise PipelineError(f"{where}: coefficient {coefficient!r} of {pair[0]} is not real")
                coefficient = coefficient[0]
            if isinstance(coefficient, bool) or not isinstance(coefficient, int | float):
                raise PipelineError(f"{where}: coefficient {coefficient!r} of {pair[0]} is not a real number")
            parts.append(f"{'-' if coefficient < 0 else '+'}{abs(float(coefficient))!r}*{pair[0].strip()}")
        name = entry["name"].strip()
        if not name or "," in name or "=" in name:
            raise PipelineError(f"{where}: name {name!r} must be non-empty without ',' or '='")
        specs.append(f"{name}={''.join(parts).lstrip('+')}")
    return tuple(specs)


def default_observables(num_qubits: int, partition: str) -> tuple[str, ...]:
    """A few Pauli strings spanning the cut, plus the sum of Z (all Z-type: one measurement group)."""
    boundary = partition.index("B")
    return (
        "Z" * num_qubits,
        f"Z0Z{num_qubits - 1}",
        f"Z{boundary - 1}Z{boundary}",
        "sumZ",
    )


def build_target(
    circuit: QuantumCircuit, partition: str | None, observable_names: Sequence[str]
) -> CutTarget:
    """Validate circuit + partition + observables and flatten the observables into Paulis.

    ``partition`` may be None when the cut follows the circuit's own markers (``CutWire``,
    cut gates) or the automatic cut finder; :mod:`pipeline.cutting` checks it against the
    circuit after wire cuts have added their qubits.
    """
    if partition is not None and not any(inst.operation.name == "cut_wire" for inst in circuit.data):
        if len(partition) != circuit.num_qubits:
            raise PipelineError(
                f"partition {partition!r} has {len(partition)} labels but the circuit has "
                f"{circuit.num_qubits} qubits"
            )
        if len(set(partition)) < 2:
            raise PipelineError(f"partition {partition!r} must name at least two parts (e.g. AAABBB)")
    if circuit.num_clbits or any(inst.operation.name == "measure" for inst in circuit.data):
        circuit = circuit.remove_final_measurements(inplace=False)
        if any(inst.operation.name == "measure" for inst in circuit.data):
            raise PipelineError("the circuit has mid-circuit measurements; give it without them")
    paulis: list[Pauli] = []
    pauli_names: list[str] = []
    terms: dict[str, tuple[int, ...]] = {}
    weights: dict[str, tuple[float, ...]] = {}
    names: list[str] = []
    for spec in observable_names:
        name, _ = split_named(spec)
        if name in terms:
            raise PipelineError(f"observable {name!r} is given twice")
        indices = []
        for pauli, weight in parse_weighted_observable(spec, circuit.num_qubits):
            label = pauli.to_label()
            if label not in pauli_names:
                pauli_names.append(label)
                paulis.append(pauli)
            indices.append(pauli_names.index(label))
            weights.setdefault(name, ())
            weights[name] = (*weights[name], weight)
        terms[name] = tuple(indices)
        names.append(name)
    return CutTarget(
        circuit=circuit,
        partition=partition,
        observable_names=tuple(names),
        observables=PauliList(paulis),
        pauli_names=tuple(pauli_names),
        observable_terms=terms,
        observable_weights=weights,
    )


#: the first bytes of every QPY file (qiskit.qpy's file header)
_QPY_MAGIC = b"QISKIT"


def load_circuit_file(path: Path) -> QuantumCircuit:
    """Read one circuit from a ``.qpy`` or OpenQASM 2 / 3 (``.qasm``) file, with a one-line error."""
    try:
        if path.suffix == ".qpy":
            with path.open("rb") as handle:
                if handle.read(len(_QPY_MAGIC)) != _QPY_MAGIC:
                    raise PipelineError(f"{path}: not a QPY file (no QPY header; written by qpy.dump?)")
                handle.seek(0)
                circuits = qpy.load(handle)
            if len(circuits) != 1:
                raise PipelineError(f"{path}: expected one circuit, found {len(circuits)}")
            loaded = circuits[0]
            if not isinstance(loaded, QuantumCircuit):
                raise PipelineError(f"{path}: not a QuantumCircuit")
            return loaded
        text = path.read_text()
        if not text.strip():
            raise PipelineError(f"{path}: empty file, expected an OpenQASM 3 circuit")
        if _is_qasm2(text):
            # OpenQASM 2 (what most tools still export), read with qiskit's own qasm2 reader and
            # the legacy gate set qelib1.inc had in qiskit's old importer.
            from qiskit import qasm2

            return qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
        return qasm3.loads(text)
    except PipelineError:
        raise
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such circuit file") from None
    except Exception as exc:
        kind = "QPY" if path.suffix == ".qpy" else "OpenQASM 2" if _is_qasm2(_head(path)) else "OpenQASM 3"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"{path}: not a valid {kind} circuit: {detail}") from None


_QASM_VERSION = re.compile(r"^\s*(?://[^\n]*\n\s*)*OPENQASM\s+2(?:\.0)?\s*;", re.MULTILINE)


def _is_qasm2(text: str) -> bool:
    """Whether ``text`` declares ``OPENQASM 2.0;`` (after any leading comments)."""
    return _QASM_VERSION.match(text) is not None


def _head(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.read(4096)
    except OSError:
        return ""


@dataclass(frozen=True)
class ExactReference:
    """Exact ⟨P⟩ per Pauli of a target, or None and the reason it was not computed."""

    values: list[float] | None
    reason: str | None = None


def exact_reference(target: CutTarget) -> ExactReference:
    """The noiseless values a run is checked against, when they mean something.

    Unitary circuits: one statevector. Others (a reset, ``initialize``, ``Move``, cut gates): a
    statevector would pick one branch of a reset at random, so they get a density matrix
    (:mod:`pipeline.reference`) while it fits, else no value and the reason.
    ``CutWire`` markers are identities and are dropped first.
    """
    from pipeline.validate import non_unitary_reason

    circuit = target.circuit
    if circuit.parameters:
        return ExactReference(None, "the circuit has unbound parameters")
    if circuit.num_qubits > EXACT_REFERENCE_MAX_QUBITS:
        return ExactReference(
            None,
            f"{circuit.num_qubits} qubits exceed the {EXACT_REFERENCE_MAX_QUBITS}-qubit statevector limit",
        )
    reason = non_unitary_reason(circuit)
    if reason is not None:
        return _mixed_state_reference(target, reason)
    unitary = circuit.copy_empty_like()
    for inst in circuit.data:
        if inst.operation.name not in ("cut_wire", "barrier"):
            unitary.append(inst)
    return ExactReference(_statevector_expectations(unitary, target.observables))


def _mixed_state_reference(target: CutTarget, reason: str) -> ExactReference:
    """A non-unitary circuit's reference by density matrix (resets, Move, cut gates), if it fits."""
    from pipeline.reference import DENSITY_MATRIX_MAX_QUBITS, density_matrix_expectations

    circuit = target.circuit
    if any(inst.operation.name == "qpd_1q" for inst in circuit.data):
        return ExactReference(None, f"{reason}; single-qubit QPD halves have no channel of their own")
    if circuit.num_qubits > DENSITY_MATRIX_MAX_QUBITS:
        return ExactReference(
            None,
            f"{reason}, and its {circuit.num_qubits} qubits exceed the "
            f"{DENSITY_MATRIX_MAX_QUBITS}-qubit density-matrix limit",
        )
    try:
        return ExactReference(density_matrix_expectations(circuit, target.observables))
    except Exception as exc:  # an instruction the density-matrix path cannot take
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ExactReference(None, f"{reason}; density matrix failed: {detail}")


def _statevector_expectations(circuit: QuantumCircuit, observables: PauliList) -> list[float]:
    """⟨P⟩ of each Pauli on the state ``circuit`` prepares from |0…0⟩.

    The state comes from one Aer statevector pass (qiskit's ``Statevector`` applies gate after
    gate in Python and took most of a 20-qubit run; it remains the fallback for instructions Aer
    does not know). Diagonal Paulis (I/Z only, the usual observables) are read off one
    Walsh–Hadamard transform of the probabilities, which gives ⟨Z_S⟩ for every qubit set S at
    once; others use qiskit's ``expectation_value`` on the same vector.
    """
    from qiskit.quantum_info import Statevector
    from qiskit_aer import AerSimulator

    prepared = circuit.copy()
    prepared.save_statevector()
    try:
        result = AerSimulator(method="statevector").run(prepared).result()
        vector = np.asarray(result.get_statevector(0), dtype=complex)
    except Exception:  # an instruction Aer does not know (a user's custom gate): qiskit's path
        vector = Statevector(circuit).data
    z_strings: np.ndarray | None = None
    values = []
    for pauli in observables:
        if pauli.x.any() or pauli.phase != 0:
            values.append(float(np.real(Statevector(vector).expectation_value(pauli))))
            continue
        if z_strings is None:
            z_strings = z_string_expectations(np.abs(vector) ** 2, circuit.num_qubits)
        mask = sum(1 << int(q) for q in np.flatnonzero(pauli.z))
        values.append(float(z_strings[mask]))
    return values


def z_string_expectations(probabilities: np.ndarray, num_qubits: int) -> np.ndarray:
    """``out[mask]`` = ⟨Z_S⟩ (S the set bits of ``mask``) under ``probabilities`` over 2^n outcomes.

    The fast Walsh–Hadamard transform, Σ_x p(x) (−1)^{popcount(x & mask)} for every mask in
    n passes over the vector.
    """
    tensor = np.asarray(probabilities, dtype=float).reshape([2] * num_qubits) if num_qubits else probabilities
    for axis in range(num_qubits):
        low, high = np.take(tensor, 0, axis=axis), np.take(tensor, 1, axis=axis)
        tensor = np.stack([low + high, low - high], axis=axis)
    return np.asarray(tensor, dtype=float).reshape(-1)


def exact_expectations(target: CutTarget) -> list[float] | None:
    """Exact ⟨P⟩ for every Pauli of the target, or None (see :func:`exact_reference`)."""
    return exact_reference(target).values
