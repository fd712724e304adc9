"""Gate and wire cutting with qiskit-addon-cutting, and the manifest entry that records it.

A run is cut in three steps, each the library's own:

1. **Where to cut.** The partition the user gave (one label per qubit), or the cut markers in
   the circuit (``CutWire``, cut gates), or — with a maximum subcircuit width — the places
   ``find_cuts`` chooses under ``DeviceConstraints``. ``CutWire`` markers become ``Move``
   instructions on fresh qubits (``cut_wires``) and the observables follow (``expand_observables``),
   so users give observables on their circuit's own qubits.
2. **The problem.** ``partition_problem`` replaces every gate or ``Move`` that crosses partitions
   by its quasi-probability decomposition (QPD). Its cost is known before anything is generated:
   the number of coefficient terms is the product of the cut bases' term counts (6 per CNOT, so
   K cuts give 6^K), and the sampling overhead the product of their overheads.
3. **Subexperiments.** ``generate_cutting_experiments`` expands the QPD — all terms, or
   ``num_samples`` draws from it — into subexperiments, one per term, partition and commuting
   observable group. Identical ones within a partition are stored once.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.quantum_info import PauliList

from pipeline.circuits import CutTarget
from pipeline.cutgates import fresh_cut_gates
from pipeline.errors import PipelineError
from pipeline.store import ArtifactStore, circuit_key
from policy.interface import CircuitFeatures
from qubelet import serde


@dataclass(frozen=True)
class CutResult:
    """What reconstruction needs: per partition the ordered subexperiment keys and observables."""

    keys: dict[str, list[str]]  #: partition label → key of every subexperiment, in order
    subobservables: dict[str, list[str]]  #: partition label → Pauli labels
    coefficients: list[tuple[float, str]]  #: (coefficient, WeightType name)
    gate_cuts: int = 0
    wire_cuts: int = 0
    #: product of the cut bases' sampling overheads (the factor on shots for equal precision)
    sampling_overhead: float = 1.0
    #: product of the cut bases' absolute coefficient sums (kappa), for QPD sampling variance
    kappa: float = 1.0
    #: draws from the QPD when it was sampled (``--num-samples``), None when every term is exact
    num_samples: int | None = None
    #: partition label of every qubit of the cut circuit (wire cuts add qubits), "" if idle
    qubit_labels: list[str] = field(default_factory=list)
    #: per partition and observable group, the width of the subexperiments'
    #: ``observable_measurements`` register: the bits below it are observable outcomes, those
    #: above it QPD signs. Not the group's Pauli count: a group of identities gets a placeholder bit.
    observable_bits: dict[str, list[int]] = field(default_factory=dict)

    def observable_bits_of(self, label: str, group: int, pauli_count: int) -> int:
        """Bits of observable outcomes in group ``group`` of partition ``label``.

        Manifests written before the field existed fall back to the library's rule (one
        placeholder bit for a group with no Pauli to measure).
        """
        recorded = self.observable_bits.get(label)
        if recorded:
            return recorded[group]
        return observable_register_size(pauli_count)

    def to_json(self) -> dict[str, Any]:
        """The cut as stored in ``manifest.json``."""
        data: dict[str, Any] = serde.to_json(self)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CutResult:
        """Read :meth:`to_json` output back."""
        return serde.from_json(cls, data)

    @property
    def cuts(self) -> int:
        """Gate cuts plus wire cuts: what the summary reports as ``cuts``."""
        return self.gate_cuts + self.wire_cuts

    def unique_keys(self) -> list[str]:
        """Distinct keys in first-seen order (the work to do)."""
        seen: dict[str, None] = {}
        for label in sorted(self.keys):
            for key in self.keys[label]:
                seen.setdefault(key, None)
        return list(seen)

    def counts_per_partition(self) -> dict[str, int]:
        """Subexperiments per partition label (duplicates counted)."""
        return {label: len(keys) for label, keys in sorted(self.keys.items())}

    def distinct_per_partition(self) -> dict[str, int]:
        """Distinct subexperiments per partition label."""
        return {label: len(set(keys)) for label, keys in sorted(self.keys.items())}


@dataclass
class CutProblem:
    """A partitioned problem and its cost, before any subexperiment is generated."""

    subcircuits: dict[str, QuantumCircuit]
    subobservables: dict[str, PauliList]
    bases: list[Any]  #: the library's QPDBasis per cut
    gate_cuts: int
    wire_cuts: int
    qubit_labels: list[str]
    #: groups of qubit-wise commuting observables per partition (one subexperiment each per term)
    groups: dict[str, int]

    @property
    def terms(self) -> int:
        """Coefficient terms of the full QPD (6 per cut CNOT, multiplied over cuts)."""
        return math.prod(len(basis.coeffs) for basis in self.bases)

    @property
    def sampling_overhead(self) -> float:
        """Product of the bases' overheads: the factor on shots for the precision of no cut."""
        return float(math.prod(float(basis.overhead) for basis in self.bases))

    @property
    def kappa(self) -> float:
        """Product of the bases' 1-norms (sqrt of the overhead), for QPD sampling variance."""
        return float(math.prod(float(basis.kappa) for basis in self.bases))

    def subexperiments(self, num_samples: int | None = None) -> int:
        """Subexperiments to run: terms (at most ``num_samples`` of them) times groups."""
        terms = self.terms if num_samples is None else min(self.terms, num_samples)
        return terms * sum(self.groups.values())

    def widths(self) -> dict[str, int]:
        """Qubits per subcircuit, by partition label."""
        return {label: circuit.num_qubits for label, circuit in sorted(self.subcircuits.items())}


def _decompose_wide_gates(circuit: QuantumCircuit) -> QuantumCircuit:
    """Unroll gates on three or more qubits, which ``find_cuts`` does not accept."""
    for _ in range(8):
        wide = {inst.operation.name for inst in circuit.data if len(inst.qubits) > 2}
        wide.discard("barrier")
        if not wide:
            return circuit
        circuit = circuit.decompose(gates_to_decompose=sorted(wide))
    raise PipelineError("gates on 3+ qubits could not be decomposed into 1- and 2-qubit gates")


def _connectivity_labels(circuit: QuantumCircuit) -> list[str]:
    """Partition labels from connectivity, ignoring cut gates (as ``partition_problem`` does).

    Components are numbered by their lowest qubit; idle qubits get "" (no partition).
    """
    parent = list(range(circuit.num_qubits))

    def root(q: int) -> int:
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    used: set[int] = set()
    for inst in circuit.data:
        indices = [circuit.find_bit(q).index for q in inst.qubits]
        if inst.operation.name != "barrier":
            used.update(indices)
        if inst.operation.name in ("qpd_2q", "barrier"):
            continue
        for other in indices[1:]:
            parent[root(other)] = root(indices[0])
    numbering: dict[int, str] = {}
    labels = []
    for q in range(circuit.num_qubits):
        if q not in used:
            labels.append("")
            continue
        labels.append(numbering.setdefault(root(q), str(len(numbering))))
    return labels


def _count_cuts(circuit: QuantumCircuit, labels: Sequence[str]) -> tuple[int, int]:
    """(gate cuts, wire cuts): cut gates and crossing gates; ``Move`` ones are wire cuts."""
    gates = wires = 0
    for inst in circuit.data:
        operation = inst.operation
        if operation.name == "qpd_2q":
            is_wire = getattr(operation, "label", None) == "cut_move"
        elif len(inst.qubits) == 2 and operation.name != "barrier":
            a, b = (labels[circuit.find_bit(q).index] for q in inst.qubits)
            if a == b:
                continue
            is_wire = operation.name == "move"
        else:
            continue
        wires += is_wire
        gates += not is_wire
    return gates, wires


#: partition label of a qubit no gate touches (it belongs to no subcircuit)
IDLE_LABEL = "."
_LETTERS = string.ascii_uppercase + string.ascii_lowercase + string.digits


class ParametricCutError(PipelineError):
    """A gate to be cut has unbound parameters: its QPD coefficients depend on their values."""


def locate_cuts(target: CutTarget, *, max_width: int | None = None, seed: int = 0) -> CutTarget:
    """Where to cut, independent of parameter values, as a target the partition path can take.

    With ``max_width`` (and no partition or markers), ``find_cuts`` runs on a copy with
    placeholder parameter values — where it cuts depends only on the circuit's structure — and
    its choices come back as ``CutWire`` markers plus a partition of the wire-cut circuit. A
    parameter sweep therefore searches for cuts once, whatever its values.
    """
    from qiskit_addon_cutting import cut_wires
    from qiskit_addon_cutting.instructions import CutWire

    circuit = target.circuit
    has_markers = any(inst.operation.name in ("cut_wire", "qpd_2q") for inst in circuit.data)
    if target.partition is not None or has_markers:
        return target
    if max_width is None:
        raise PipelineError(
            "a user circuit needs --partition (e.g. AAABBB), --max-subcircuit-width W, "
            "or CutWire/cut-gate markers in the circuit"
        )
    if max_width >= circuit.num_qubits:  # a circuit that fits runs uncut: one partition
        labels = _connectivity_labels(circuit)
        return replace(target, partition="".join("A" if label else IDLE_LABEL for label in labels))
    circuit = _decompose_wide_gates(circuit)
    placeholder = circuit.assign_parameters({p: 0.1 + 0.01 * i for i, p in enumerate(circuit.parameters)})
    found = _find_cuts(placeholder, max_width, seed)
    marked = circuit.copy_empty_like()
    originals = iter(circuit.data)
    for inst in found.data:
        if inst.operation.name == "cut_wire":
            marked.append(CutWire(), [marked.qubits[found.find_bit(inst.qubits[0]).index]])
        else:
            marked.append(next(originals))
    labels = _connectivity_labels(cut_wires(found))
    numbering = sorted({label for label in labels if label}, key=int)
    if len(numbering) > len(_LETTERS):
        raise PipelineError(
            f"find_cuts made {len(numbering)} subcircuits; at most {len(_LETTERS)} are supported"
        )
    letter = {label: _LETTERS[i] for i, label in enumerate(numbering)}
    partition = "".join(letter[label] if label else IDLE_LABEL for label in labels)
    return replace(target, circuit=marked, partition=partition)


def plan_cuts(target: CutTarget, *, max_width: int | None = None, seed: int = 0) -> CutProblem:
    """Step 1 and 2: where to cut, and the library's partitioned problem (no subexperiments).

    Raises:
        ParametricCutError: a gate to be cut still has unbound parameters.
        PipelineError: the circuit cannot be cut as asked.
    """
    from qiskit_addon_cutting import cut_wires, expand_observables, partition_problem
    from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection

    target = locate_cuts(target, max_width=max_width, seed=seed)
    circuit = fresh_cut_gates(target.circuit)  # the library relabels cut gates: never the caller's
    observables = target.observables
    wire_markers = sum(1 for inst in circuit.data if inst.operation.name == "cut_wire")
    if wire_markers:
        original = circuit
        circuit = cut_wires(original)
        observables = expand_observables(observables, original, circuit)
    if target.partition is not None:
        if len(target.partition) != circuit.num_qubits:
            added = f" ({wire_markers} wire cuts add a qubit each)" if wire_markers else ""
            raise PipelineError(
                f"partition {target.partition!r} has {len(target.partition)} labels but the cut "
                f"circuit has {circuit.num_qubits} qubits{added}; give {circuit.num_qubits} labels "
                "or none (the partition then follows the connectivity)"
            )
        labels = ["" if label == IDLE_LABEL else label for label in target.partition]
    else:
        labels = _connectivity_labels(circuit)
    _check_cut_gates_bound(circuit, labels)
    gate_cuts, wire_cuts = _count_cuts(circuit, labels)
    try:
        problem = partition_problem(
            circuit=circuit, partition_labels=[label or None for label in labels], observables=observables
        )
    except Exception as exc:  # the library raises ValueError/QiskitError with a useful message
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"cannot cut the circuit: {detail}") from None
    subobservables = {str(k): v for k, v in (problem.subobservables or {}).items()}
    return CutProblem(
        subcircuits={str(k): v for k, v in problem.subcircuits.items()},
        subobservables=subobservables,
        bases=list(problem.bases),
        gate_cuts=gate_cuts,
        wire_cuts=wire_cuts,
        qubit_labels=labels,
        groups={label: len(ObservableCollection(so).groups) for label, so in subobservables.items()},
    )


def _check_cut_gates_bound(circuit: QuantumCircuit, labels: Sequence[str]) -> None:
    """A cut gate's QPD coefficients are functions of its angle: it must be bound to be cut."""
    for position, inst in enumerate(circuit.data):
        if len(inst.qubits) != 2 or not inst.operation.params:
            continue
        a, b = (labels[circuit.find_bit(q).index] for q in inst.qubits)
        free = any(getattr(p, "parameters", None) for p in inst.operation.params)
        if a != b and free:
            raise ParametricCutError(
                f"gate '{inst.operation.name}' (instruction {position}) is cut and has unbound "
                "parameters: its decomposition is expanded per parameter set"
            )


def _find_cuts(circuit: QuantumCircuit, max_width: int, seed: int) -> QuantumCircuit:
    """The library's cut finder: gate and wire cuts so every subcircuit has <= max_width qubits."""
    from qiskit_addon_cutting.automated_cut_finding import (
        DeviceConstraints,
        OptimizationParameters,
        find_cuts,
    )

    if max_width < 1:
        raise PipelineError(f"--max-subcircuit-width must be at least 1, got {max_width}")
    try:
        cut_circuit, _metadata = find_cuts(
            circuit, OptimizationParameters(seed=seed), DeviceConstraints(qubits_per_subcircuit=max_width)
        )
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"find_cuts found no cut for width {max_width}: {detail}") from None
    return cut_circuit


def cut_and_store(
    target: CutTarget,
    store: ArtifactStore | None,
    *,
    problem: CutProblem | None = None,
    num_samples: int | None = None,
    seed: int = 0,
) -> tuple[CutResult, dict[str, CircuitFeatures]]:
    """Cut ``target``, write every distinct subexperiment as QPY, and describe each for the policy.

    With ``store=None`` nothing is written: the keys and features are all that planning needs
    (``qubelet render`` plans a cluster run whose generate step cuts again on the cluster).
    """
    problem = problem or plan_cuts(target, seed=seed)
    subexperiments, coefficients = generate_subexperiments(problem, num_samples, seed)
    return store_subexperiments(problem, subexperiments, coefficients, store, num_samples)


def generate_subexperiments(
    problem: CutProblem, num_samples: int | None, seed: int
) -> tuple[dict[str, list[QuantumCircuit]], list[tuple[float, str]]]:
    """The library's subexperiments and coefficients (all terms, or ``num_samples`` draws)."""
    from qiskit_addon_cutting import generate_cutting_experiments

    state = np.random.get_state()
    np.random.seed(seed % (1 << 32))  # the library's QPD sampler draws from numpy's global state
    try:
        subexperiments, coefficients = generate_cutting_experiments(
            circuits=problem.subcircuits,
            observables=problem.subobservables,
            num_samples=np.inf if num_samples is None else num_samples,
        )
    finally:
        np.random.set_state(state)
    assert isinstance(subexperiments, dict)
    return (
        {str(k): list(v) for k, v in subexperiments.items()},
        [(float(c), w.name) for c, w in coefficients],
    )


def store_subexperiments(
    problem: CutProblem,
    subexperiments: dict[str, list[QuantumCircuit]],
    coefficients: list[tuple[float, str]],
    store: ArtifactStore | None,
    num_samples: int | None,
    *,
    circuits: dict[str, QuantumCircuit] | None = None,
) -> tuple[CutResult, dict[str, CircuitFeatures]]:
    """Write each partition's distinct subexperiments and record their keys in order.

    ``circuits``, when given, receives each distinct subexperiment under its key.
    """
    keys: dict[str, list[str]] = {}
    features: dict[str, CircuitFeatures] = {}
    multiplicity: dict[str, int] = {}
    for label, group in sorted(subexperiments.items()):
        label_keys = []
        for circuit in group:
            if store is None:
                key = circuit_key(circuit, label)[0]
            else:
                key = store.put_circuit(circuit, partition=label)
            label_keys.append(key)
            multiplicity[key] = multiplicity.get(key, 0) + 1
            if key not in features:
                features[key] = describe(circuit, key, label)
                if circuits is not None:
                    circuits[key] = circuit
        keys[label] = label_keys
    features = {
        key: CircuitFeatures(**{**f.__dict__, "multiplicity": multiplicity[key]})
        for key, f in features.items()
    }
    result = CutResult(
        keys=keys,
        subobservables={k: [p.to_label() for p in v] for k, v in problem.subobservables.items()},
        coefficients=coefficients,
        gate_cuts=problem.gate_cuts,
        wire_cuts=problem.wire_cuts,
        sampling_overhead=problem.sampling_overhead,
        kappa=problem.kappa,
        num_samples=num_samples,
        qubit_labels=problem.qubit_labels,
        observable_bits=observable_bits(subexperiments, problem.groups),
    )
    return result, features


def observable_register_size(pauli_count: int) -> int:
    """Width of the library's ``observable_measurements`` register for a group of that many qubits.

    The library measures one qubit into it even when a group measures nothing (all identities),
    because a sampler refuses a circuit without measurements (qiskit-addon-cutting issue 422);
    that bit is an observable outcome to ignore, never a QPD sign.
    """
    return max(1, pauli_count)


def _observable_register_width(circuit: QuantumCircuit) -> int:
    for register in circuit.cregs:
        if register.name == "observable_measurements":
            return register.size
    return 0


def observable_bits(
    subexperiments: dict[str, list[QuantumCircuit]], groups: dict[str, int]
) -> dict[str, list[int]]:
    """Per partition and group, the width of the generated circuits' observable register."""
    out: dict[str, list[int]] = {}
    for label, circuits in subexperiments.items():
        count = groups.get(label, 0)
        if count and len(circuits) >= count:
            out[label] = [_observable_register_width(circuits[g]) for g in range(count)]
    return out


def describe(circuit: QuantumCircuit, key: str, partition: str, shots: int = 0) -> CircuitFeatures:
    """Width, depth and two-qubit gate count: the circuit features the policy learns from."""
    two_qubit = sum(1 for instruction in circuit.data if len(instruction.qubits) == 2)
    return CircuitFeatures(
        key=key,
        num_qubits=circuit.num_qubits,
        depth=circuit.depth(),
        num_2q_gates=two_qubit,
        num_clbits=circuit.num_clbits,
        shots=shots,
        partition=partition,
    )
