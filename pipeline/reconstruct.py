"""Reconstruction of expectation values from subexperiment counts, with standard errors.

Values come from qiskit-addon-cutting's ``reconstruct_expectation_values``, fed quasi-
distributions (one per subexperiment, in the order the cutting produced them). The standard
error comes from first-order error propagation: the reconstructed value is a polynomial in the
per-subexperiment estimates ê_k (means of ±1 outcomes), so

    Var(E) ≈ Σ_k g_kᵀ Σ_k g_k,   g_k = ∂E/∂ê_k,   Σ_k = Cov(ê_k) = (⟨v vᵀ⟩ − ê ê ᵀ) / shots,

summed over *distinct* subexperiments (identical ones share one estimate, hence one noise term).
The same code evaluates E itself, which the tests check against qiskit-addon-cutting's value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from qiskit.primitives import SamplerResult
from qiskit.quantum_info import PauliList
from qiskit.result import QuasiDistribution
from qiskit_addon_cutting import reconstruct_expectation_values
from qiskit_addon_cutting.qpd import WeightType
from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection

from pipeline.backends.base import Counts
from pipeline.cutting import CutResult


@dataclass(frozen=True)
class PauliEstimate:
    value: float
    stderr: float


MomentKey = tuple[str, int]  # (subexperiment key, observable group)


@dataclass(frozen=True)
class Reconstruction:
    """Per-Pauli estimates plus what is needed for the error of sums of Paulis."""

    paulis: list[PauliEstimate]
    library_values: list[float]  #: qiskit-addon-cutting's values for the same data
    gradients: list[dict[MomentKey, np.ndarray]]
    moments: dict[MomentKey, tuple[np.ndarray, np.ndarray]]

    def value_of(self, terms: Sequence[int]) -> float:
        return float(sum(self.library_values[p] for p in terms))

    def stderr_of(self, terms: Sequence[int]) -> float:
        """Standard error of a sum of Paulis, covariances between them included."""
        total: dict[MomentKey, np.ndarray] = {}
        for p in terms:
            for kg, g in self.gradients[p].items():
                total[kg] = total[kg] + g if kg in total else g.copy()
        variance = sum(float(g @ self.moments[kg][1] @ g) for kg, g in total.items())
        return float(np.sqrt(max(variance, 0.0)))


def _parity(values: np.ndarray) -> np.ndarray:
    """(-1)^popcount for an int64 array."""
    bits = np.zeros_like(values)
    v = values.copy()
    while np.any(v):
        bits ^= v & 1
        v >>= 1
    return 1 - 2 * bits


def _moments(counts: Counts, num_obs_bits: int, masks: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector and covariance (of the mean) of the ±1 observables of one subexperiment."""
    obs = counts.outcomes & ((1 << num_obs_bits) - 1)
    qpd = counts.outcomes >> num_obs_bits
    qpd_sign = _parity(qpd)
    values = np.stack([qpd_sign * _parity(obs & mask) for mask in masks]).astype(float)  # (j, o)
    weights = counts.counts / counts.shots
    mean = values @ weights
    second = (values * weights) @ values.T
    cov = (second - np.outer(mean, mean)) / counts.shots
    return mean, cov


def reconstruct(cut: CutResult, get_counts: Callable[[str], Counts]) -> Reconstruction:
    """Per global Pauli (in manifest order): value and stderr, and qiskit-addon-cutting's values."""
    labels = sorted(cut.keys)
    collections = {label: ObservableCollection(PauliList(cut.subobservables[label])) for label in labels}
    num_paulis = len(cut.subobservables[labels[0]])
    counts_cache: dict[str, Counts] = {}

    def counts_for(key: str) -> Counts:
        if key not in counts_cache:
            counts_cache[key] = get_counts(key)
        return counts_cache[key]

    # Per distinct key and group: means and covariances.
    moments: dict[MomentKey, tuple[np.ndarray, np.ndarray]] = {}
    for label in labels:
        groups = collections[label].groups
        for index, key in enumerate(cut.keys[label]):
            group = index % len(groups)
            if (key, group) not in moments:
                cog = groups[group]
                moments[(key, group)] = _moments(counts_for(key), len(cog.pauli_indices), cog.pauli_bitmasks)

    values = np.zeros(num_paulis)
    gradients: list[dict[MomentKey, np.ndarray]] = [{} for _ in range(num_paulis)]
    for term, (coefficient, _weight) in enumerate(cut.coefficients):
        for p in range(num_paulis):
            factors = []
            for label in labels:
                so = collections[label]
                pauli = PauliList(cut.subobservables[label])[p]
                entries = so.lookup[pauli]
                factor = 0.0
                for group, position in entries:
                    key = cut.keys[label][term * len(so.groups) + group]
                    factor += moments[(key, group)][0][position]
                factors.append((label, entries, factor / len(entries)))
            product = float(np.prod([f for _, _, f in factors]))
            values[p] += coefficient * product
            for i, (label, entries, _f) in enumerate(factors):
                others = float(np.prod([f for j, (_, _, f) in enumerate(factors) if j != i]))
                so = collections[label]
                for group, position in entries:
                    key = cut.keys[label][term * len(so.groups) + group]
                    size = len(so.groups[group].commuting_observables)
                    grad = gradients[p].setdefault((key, group), np.zeros(size))
                    grad[position] += coefficient * others / len(entries)

    estimates = []
    for p in range(num_paulis):
        variance = sum(float(g @ moments[kg][1] @ g) for kg, g in gradients[p].items())
        estimates.append(PauliEstimate(value=float(values[p]), stderr=float(np.sqrt(max(variance, 0.0)))))
    return Reconstruction(
        paulis=estimates,
        library_values=_library_values(cut, counts_for, collections),
        gradients=gradients,
        moments=moments,
    )


def _library_values(
    cut: CutResult,
    counts_for: Callable[[str], Counts],
    collections: Mapping[str, ObservableCollection],
) -> list[float]:
    """qiskit-addon-cutting's reconstruction of the same data (quasi-distribution path)."""
    results = {}
    for label in sorted(cut.keys):
        quasi = []
        for key in cut.keys[label]:
            counts = counts_for(key)
            quasi.append(
                QuasiDistribution(
                    dict(zip(counts.outcomes.tolist(), (counts.counts / counts.shots).tolist(), strict=True))
                )
            )
        results[label] = SamplerResult(quasi_dists=quasi, metadata=[{} for _ in quasi])
    coefficients = [(c, WeightType[w]) for c, w in cut.coefficients]
    observables = {label: PauliList(cut.subobservables[label]) for label in sorted(cut.keys)}
    return [float(v) for v in reconstruct_expectation_values(results, coefficients, observables)]
