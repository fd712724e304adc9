"""Random cutting problems for the differential tests: circuits, cuts and observables.

A :class:`Case` is plain data (JSON in ``tests/corpus/``): gates by name, qubits and angles;
the cut (a partition, ``CutWire`` markers, ``Move`` to an ancilla, or ``find_cuts`` under a
width); observables as weighted Pauli sums. :func:`cases` is the hypothesis strategy that draws
them: gates from qiskit's standard library (every one Aer runs or a translation makes runnable,
``PauliEvolutionGate`` and ``QFTGate`` too), parametric rotations across cuts, barriers,
``measure_all``, and observables that are the identity on some partitions or live in only one.
Used by tests/test_oracle_properties.py and bench/oracle_calibration.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from qiskit import QuantumCircuit
from qiskit.circuit.library import PauliEvolutionGate, QFTGate, get_standard_gate_name_mapping
from qiskit.quantum_info import SparsePauliOp
from qiskit_addon_cutting.instructions import CutWire, Move

STANDARD = get_standard_gate_name_mapping()
CORPUS = Path(__file__).parent / "corpus"

ONE_QUBIT = sorted(
    n
    for n, g in STANDARD.items()
    if g.num_qubits == 1 and n not in ("measure", "reset", "delay", "global_phase")
)
TWO_QUBIT = sorted(n for n, g in STANDARD.items() if g.num_qubits == 2)
THREE_QUBIT = sorted(n for n, g in STANDARD.items() if g.num_qubits == 3)
FOUR_QUBIT = sorted(n for n, g in STANDARD.items() if g.num_qubits == 4)
#: gates the library cuts with a 6-term decomposition (swap, iswap and dcx take 58: too many here)
CUTTABLE = [
    "cx",
    "cy",
    "cz",
    "ch",
    "cs",
    "csdg",
    "csx",
    "ecr",
    "cp",
    "crx",
    "cry",
    "crz",
    "rxx",
    "ryy",
    "rzz",
]
MODES = ("partition", "cut_wire", "move", "find_cuts")


@dataclass
class Case:
    """One cutting problem: the circuit's gates, how it is cut, the observables."""

    mode: str
    num_qubits: int
    #: (name, qubits, angles); names: standard gates, "pauli_evolution", "qft", "barrier",
    #: "cut_wire", "move"
    gates: list[tuple[str, list[int], list[float]]]
    partition: str | None = None
    max_width: int | None = None
    measure_all: bool = False
    #: each observable: (Pauli label, weight) terms
    observables: list[list[tuple[str, float]]] = field(default_factory=list)
    seed: int = 0

    def circuit(self) -> QuantumCircuit:
        """The circuit the case describes."""
        circuit = QuantumCircuit(self.num_qubits)
        for name, qubits, angles in self.gates:
            if name == "barrier":
                circuit.barrier(qubits)
            elif name == "cut_wire":
                circuit.append(CutWire(), qubits)
            elif name == "move":
                circuit.append(Move(), qubits)
            elif name == "pauli_evolution":
                labels = ["XY" + "Z" * (len(qubits) - 2), "Z" * len(qubits)]
                operator = SparsePauliOp(labels, [angles[0], angles[1]])
                circuit.append(PauliEvolutionGate(operator, time=angles[2]), qubits)
            elif name == "qft":
                circuit.append(QFTGate(len(qubits)), qubits)
            else:
                gate = STANDARD[name]
                if gate.params:
                    gate = type(gate)(*angles)
                circuit.append(gate, qubits)
        if self.measure_all:
            circuit.measure_all()
        return circuit

    def specs(self) -> list[str]:
        """The observables as qubelet spec strings ("0.5*XIZI-1.25*ZZII")."""
        out = []
        for terms in self.observables:
            spec = "".join(f"{'+' if w >= 0 else '-'}{abs(w)!r}*{label}" for label, w in terms)
            out.append(spec.lstrip("+"))
        return list(dict.fromkeys(out))

    def options(self) -> dict[str, Any]:
        """The qubelet run options of the cut (partition or width)."""
        if self.mode == "find_cuts":
            return {"max_subcircuit_width": self.max_width, "seed": self.seed}
        return {}

    def to_json(self) -> dict[str, Any]:
        """Plain data for the corpus."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Case:
        """A corpus entry back as a case."""
        data = dict(data)
        data["gates"] = [(n, list(q), list(a)) for n, q, a in data["gates"]]
        data["observables"] = [[(label, float(w)) for label, w in terms] for terms in data["observables"]]
        return cls(**data)


def corpus_cases() -> list[tuple[str, Case]]:
    """Every case kept in tests/corpus/ (examples that once failed), by file name."""
    return [
        (path.stem, Case.from_json(json.loads(path.read_text()))) for path in sorted(CORPUS.glob("*.json"))
    ]


def save_to_corpus(name: str, case: Case) -> Path:
    """Keep a failing example: the corpus test replays it from then on."""
    CORPUS.mkdir(exist_ok=True)
    path = CORPUS / f"{name}.json"
    path.write_text(json.dumps(case.to_json(), indent=1) + "\n")
    return path


angles = st.floats(min_value=-3.2, max_value=3.2, allow_nan=False).map(lambda x: round(x, 3))


@st.composite
def _gate(
    draw: st.DrawFn, block: list[int], *, allow_wide: bool = True
) -> tuple[str, list[int], list[float]]:
    """One gate on qubits of ``block`` (any standard gate that fits, or an evolution / QFT)."""
    sizes = [1] + ([2] if len(block) >= 2 else []) + ([3] if len(block) >= 3 and allow_wide else [])
    size = draw(st.sampled_from(sizes))
    qubits = draw(st.permutations(block).map(lambda p: list(p[:size])))
    if size == 1:
        name = draw(st.sampled_from(ONE_QUBIT))
    elif size == 2:
        name = draw(st.sampled_from([*TWO_QUBIT, "pauli_evolution", "qft"]))
    else:
        name = draw(st.sampled_from([*THREE_QUBIT, "pauli_evolution", "qft"]))
    if name == "pauli_evolution":
        return name, qubits, [draw(angles), draw(angles), draw(angles)]
    if name == "qft":
        return name, qubits, []
    return name, qubits, [draw(angles) for _ in STANDARD[name].params]


@st.composite
def _layer(draw: st.DrawFn, blocks: list[list[int]], count: int) -> list[tuple[str, list[int], list[float]]]:
    gates = []
    for _ in range(count):
        block = draw(st.sampled_from([b for b in blocks if b]))
        gates.append(draw(_gate(block)))
    return gates


def _rotations(qubits: list[int], angles_: list[float]) -> list[tuple[str, list[int], list[float]]]:
    return [("ry", [q], [a]) for q, a in zip(qubits, angles_, strict=True)]


@st.composite
def _observables(draw: st.DrawFn, num_qubits: int, parts: list[list[int]]) -> list[list[tuple[str, float]]]:
    """1-3 weighted Pauli sums; sometimes all in one part, sometimes identity on some parts."""
    style = draw(st.sampled_from(["free", "one_part", "identity_on_some", "with_identity"]))
    if style == "one_part":
        support = [draw(st.sampled_from([p for p in parts if p]))] * 3
    elif style == "identity_on_some" and len(parts) > 2:
        kept = draw(st.lists(st.sampled_from([p for p in parts if p]), min_size=1, max_size=len(parts) - 1))
        support = [sorted({q for p in kept for q in p})] * 3
    else:
        support = [list(range(num_qubits))] * 3
    observables = []
    for index in range(draw(st.integers(1, 3))):
        terms = []
        for _ in range(draw(st.integers(1, 3))):
            letters = ["I"] * num_qubits
            for q in support[index]:
                letters[q] = draw(st.sampled_from("IIXYZZ"))
            label = "".join(reversed(letters))  # qiskit labels: qubit 0 rightmost
            if style == "with_identity" and draw(st.booleans()):
                label = "I" * num_qubits
            weight = draw(st.sampled_from([1.0, -1.0, 0.5, -0.25, 2.0, round(draw(angles), 2) or 0.3]))
            terms.append((label, weight))
        observables.append(terms)
    return observables


@st.composite
def cases(draw: st.DrawFn, modes: tuple[str, ...] = MODES) -> Case:
    """A random cutting problem small enough to run every QPD term exactly in a second or two."""
    mode = draw(st.sampled_from(modes))
    if mode == "partition":
        parts_count = draw(st.sampled_from([2, 2, 3]))
        num_qubits = draw(st.integers(parts_count + 1, 6))
        letters = "ABC"[:parts_count]
        labels = list(letters) + [draw(st.sampled_from(letters)) for _ in range(num_qubits - parts_count)]
        if draw(st.booleans()):
            labels.sort()  # contiguous blocks
        else:
            labels = draw(st.permutations(labels))
        partition = "".join(labels)
        blocks = [[q for q, label in enumerate(partition) if label == letter] for letter in letters]
        gates = _rotations(list(range(num_qubits)), [draw(angles) for _ in range(num_qubits)])
        gates += draw(_layer(blocks, draw(st.integers(1, 5))))
        for _ in range(draw(st.integers(1, 2))):  # the cuts: parametric or not
            a, b = draw(st.sampled_from([(x, y) for x in blocks for y in blocks if x is not y]))
            name = draw(st.sampled_from(CUTTABLE))
            gates.append(
                (
                    name,
                    [draw(st.sampled_from(a)), draw(st.sampled_from(b))],
                    [draw(angles) for _ in STANDARD[name].params],
                )
            )
            if draw(st.booleans()):
                gates.append(("barrier", list(range(num_qubits)), []))
            gates += draw(_layer(blocks, draw(st.integers(0, 3))))
        return Case(
            mode,
            num_qubits,
            gates,
            partition=partition,
            measure_all=draw(st.booleans()),
            observables=draw(_observables(num_qubits, blocks)),
        )
    if mode == "cut_wire":
        # qubit q works with block A, is cut, works with block B (and maybe is cut back to A)
        num_qubits = draw(st.integers(3, 5))
        q = 0
        size_a = draw(st.integers(1, num_qubits - 2))
        block_a, block_b = list(range(1, 1 + size_a)), list(range(1 + size_a, num_qubits))
        gates = _rotations(list(range(num_qubits)), [draw(angles) for _ in range(num_qubits)])
        gates += draw(_layer([block_a], draw(st.integers(0, 2))))
        gates.append((draw(st.sampled_from(TWO_QUBIT)), [q, draw(st.sampled_from(block_a))], []))
        gates[-1] = (gates[-1][0], gates[-1][1], [draw(angles) for _ in STANDARD[gates[-1][0]].params])
        gates.append(("cut_wire", [q], []))
        gates.append(("cx", [q, draw(st.sampled_from(block_b))], []))
        gates += draw(_layer([[q, *block_b]], draw(st.integers(0, 3))))
        if draw(st.booleans()):
            gates.append(("cut_wire", [q], []))
            gates.append(("crx", [draw(st.sampled_from(block_a)), q], [draw(angles)]))
        blocks = [[q, *block_a], block_b]
        return Case(
            mode,
            num_qubits,
            gates,
            measure_all=draw(st.booleans()),
            observables=draw(_observables(num_qubits, blocks)),
        )
    if mode == "move":
        # tutorial 3's shape: qubit q's state moves to ancilla `anc` in B, and back
        num_qubits = draw(st.integers(4, 5))
        q, anc = 0, num_qubits - 1
        size_a = draw(st.integers(1, num_qubits - 3))
        block_a, block_b = list(range(1, 1 + size_a)), list(range(1 + size_a, anc))
        gates = _rotations([q, *block_a, *block_b], [draw(angles) for _ in range(num_qubits - 1)])
        gates += draw(_layer([[q, *block_a]], draw(st.integers(1, 3))))
        gates.append(("move", [q, anc], []))
        gates.append(("cx", [anc, draw(st.sampled_from(block_b))], []))
        gates += draw(_layer([[anc, *block_b]], draw(st.integers(0, 3))))
        back = draw(st.booleans())
        if back:
            gates.append(("move", [anc, q], []))
            gates += draw(_layer([[q, *block_a]], draw(st.integers(0, 2))))
        partition = "".join("A" if i in (q, *block_a) else "B" for i in range(num_qubits))
        return Case(
            mode,
            num_qubits,
            gates,
            partition=partition,
            measure_all=draw(st.booleans()),
            observables=draw(_observables(num_qubits, [[q, *block_a], [anc, *block_b]])),
        )
    # find_cuts: a chain of cuttable two-qubit gates; the finder picks gate and wire cuts
    num_qubits = draw(st.integers(4, 6))
    gates = _rotations(list(range(num_qubits)), [draw(angles) for _ in range(num_qubits)])
    for i in range(num_qubits - 1):
        name = draw(st.sampled_from(CUTTABLE))
        gates.append((name, [i, i + 1], [draw(angles) for _ in STANDARD[name].params]))
        gates.append((draw(st.sampled_from(ONE_QUBIT)), [i], []))
        gates[-1] = (gates[-1][0], gates[-1][1], [draw(angles) for _ in STANDARD[gates[-1][0]].params])
    width = draw(st.integers(max(2, num_qubits // 2), num_qubits - 1))
    return Case(
        mode,
        num_qubits,
        gates,
        max_width=width,
        measure_all=draw(st.booleans()),
        observables=draw(_observables(num_qubits, [list(range(num_qubits))])),
        seed=draw(st.integers(0, 1000)),
    )
