"""Gate cutting with qiskit-addon-cutting, and the manifest that records its output.

``partition_problem`` replaces every gate that crosses partitions by its quasi-probability
decomposition (QPD); ``generate_cutting_experiments`` expands the QPD into subexperiments, one
per coefficient term, partition and commuting observable group. A CNOT decomposes into 6 terms,
so K cut CNOTs give 6^K coefficients (216 for K=3). Subexperiments that come out identical (a
partition's circuit does not depend on the other partition's QPD choice) are stored once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.converters import circuit_to_dag
from qiskit_addon_cutting import generate_cutting_experiments, partition_problem

from pipeline.circuits import CutTarget
from pipeline.store import ArtifactStore
from policy.interface import CircuitFeatures


@dataclass(frozen=True)
class CutResult:
    """What reconstruction needs: per partition the ordered subexperiment keys and observables."""

    keys: dict[str, list[str]]  #: partition label → key of every subexperiment, in order
    subobservables: dict[str, list[str]]  #: partition label → Pauli labels
    coefficients: list[tuple[float, str]]  #: (coefficient, WeightType name)

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "subobservables": self.subobservables,
            "coefficients": [[c, w] for c, w in self.coefficients],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CutResult:
        return cls(
            keys={k: list(v) for k, v in data["keys"].items()},
            subobservables={k: list(v) for k, v in data["subobservables"].items()},
            coefficients=[(float(c), str(w)) for c, w in data["coefficients"]],
        )

    def unique_keys(self) -> list[str]:
        """Distinct keys in first-seen order (the work to do)."""
        seen: dict[str, None] = {}
        for label in sorted(self.keys):
            for key in self.keys[label]:
                seen.setdefault(key, None)
        return list(seen)

    def counts_per_partition(self) -> dict[str, int]:
        return {label: len(keys) for label, keys in sorted(self.keys.items())}

    def distinct_per_partition(self) -> dict[str, int]:
        return {label: len(set(keys)) for label, keys in sorted(self.keys.items())}


def cut_and_store(target: CutTarget, store: ArtifactStore) -> tuple[CutResult, dict[str, CircuitFeatures]]:
    """Cut ``target``, write every distinct subexperiment as QPY, and describe each for the policy."""
    problem = partition_problem(
        circuit=target.circuit, partition_labels=target.partition, observables=target.observables
    )
    subexperiments, coefficients = generate_cutting_experiments(
        circuits=problem.subcircuits, observables=problem.subobservables, num_samples=np.inf
    )
    assert isinstance(subexperiments, dict)
    keys: dict[str, list[str]] = {}
    features: dict[str, CircuitFeatures] = {}
    multiplicity: dict[str, int] = {}
    for label, circuits in subexperiments.items():
        label_keys = []
        for circuit in circuits:
            key = store.put_circuit(circuit)
            label_keys.append(key)
            multiplicity[key] = multiplicity.get(key, 0) + 1
            if key not in features:
                features[key] = describe(circuit, key, str(label))
        keys[str(label)] = label_keys
    features = {
        key: CircuitFeatures(**{**f.__dict__, "multiplicity": multiplicity[key]})
        for key, f in features.items()
    }
    subobservables = {str(k): [p.to_label() for p in v] for k, v in problem.subobservables.items()}
    result = CutResult(
        keys=keys,
        subobservables=subobservables,
        coefficients=[(float(c), w.name) for c, w in coefficients],
    )
    return result, features


def describe(circuit: QuantumCircuit, key: str, partition: str, shots: int = 0) -> CircuitFeatures:
    """Width, depth and two-qubit gate count: the circuit features the policy learns from."""
    dag = circuit_to_dag(circuit)
    two_qubit = sum(1 for node in dag.op_nodes() if len(node.qargs) == 2)
    return CircuitFeatures(
        key=key,
        num_qubits=circuit.num_qubits,
        depth=circuit.depth(),
        num_2q_gates=two_qubit,
        num_clbits=circuit.num_clbits,
        shots=shots,
        partition=partition,
    )
