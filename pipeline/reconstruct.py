"""Reconstruction of expectation values from subexperiment counts, with standard errors.

The reconstructed value is qiskit-addon-cutting's estimator (``reconstruct_expectation_values``
on quasi-distributions), evaluated here on per-subexperiment means: the library walks every
outcome of every quasi-distribution in Python, which dominated a 20-qubit run. Asked for
``with_library=True``, the library's own values are computed too, and the tests check both
agree to 1e-10. The standard error comes from first-order error propagation: the reconstructed
value is a polynomial in the per-subexperiment estimates ê_k (means of ±1 outcomes), so

    Var(E) ≈ Σ_k g_kᵀ Σ_k g_k,   g_k = ∂E/∂ê_k,   Σ_k = Cov(ê_k) = (⟨v vᵀ⟩ − ê ê ᵀ) / shots,

summed over *distinct* subexperiments (identical ones share one estimate, hence one noise term).
Estimates are keyed by (partition, subexperiment, group): the same circuit in two partitions is
sampled twice (see :meth:`pipeline.store.ArtifactStore.put_circuit`), so no product of one term
ever multiplies two copies of the same noise. A weighted sum Σ_p w_p ⟨P_p⟩ adds the gradients
(with their weights) before the quadratic form, so the covariances between its terms — they share
subexperiments — are part of its standard error. When the QPD was sampled (``num_samples``), the
variance of that Monte-Carlo draw is added (see :meth:`Reconstruction.sampling_variance`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from pipeline.mitigation import MitigationConfig, quasi_distribution, subexperiment_moments
from pipeline.mitigation.moments import RAW


@dataclass(frozen=True)
class PauliEstimate:
    """One Pauli's reconstructed expectation value with its standard error."""

    value: float
    stderr: float


MomentKey = tuple[str, str, int]  # (partition label, subexperiment key, observable group)


@dataclass(frozen=True)
class Reconstruction:
    """Per-Pauli estimates plus what is needed for the error of sums of Paulis."""

    paulis: list[PauliEstimate]
    gradients: list[dict[MomentKey, np.ndarray]]
    moments: dict[MomentKey, tuple[np.ndarray, np.ndarray]]
    #: per coefficient term and Pauli: the product of the partitions' factors (no coefficient)
    term_products: np.ndarray | None = None
    coefficients: np.ndarray | None = None
    sampled: np.ndarray | None = None  #: per term: drawn from the QPD (True) or exact weight
    kappa: float = 1.0
    num_samples: int | None = None
    #: qiskit-addon-cutting's values for the same data (only when asked for: it is slow)
    library_values: list[float] | None = None

    def value_of(self, terms: Sequence[int], weights: Sequence[float] | None = None) -> float:
        """Σ_p w_p ⟨P_p⟩ over ``terms`` (indices into the Paulis; unit weights by default)."""
        weights = [1.0] * len(terms) if weights is None else weights
        return float(sum(w * self.paulis[p].value for p, w in zip(terms, weights, strict=True)))

    def stderr_of(self, terms: Sequence[int], weights: Sequence[float] | None = None) -> float:
        """Standard error of Σ_p w_p ⟨P_p⟩, covariances between the terms included."""
        weights = [1.0] * len(terms) if weights is None else weights
        total: dict[MomentKey, np.ndarray] = {}
        for p, w in zip(terms, weights, strict=True):
            for kg, g in self.gradients[p].items():
                total[kg] = total[kg] + w * g if kg in total else w * g
        variance = sum(float(g @ self.moments[kg][1] @ g) for kg, g in total.items())
        variance += self.sampling_variance(terms, weights)
        return float(np.sqrt(max(variance, 0.0)))

    def sampling_variance(self, terms: Sequence[int], weights: Sequence[float]) -> float:
        """Variance of the QPD Monte-Carlo draw (zero when every term has its exact weight).

        Sampled terms carry ``c_i = (n_i / N) κ sign_i``: the estimate is a mean over the draws
        of Y = κ_s sign_i f_i with term i drawn with probability |c_i| / κ_s, κ_s = Σ|c_i| over
        sampled terms, from N_s = N κ_s / κ draws. Var = (E[Y²] − E[Y]²) / N_s, with f_i the
        term's reconstructed product — shot noise in f_i is already in the first part.
        """
        if self.num_samples is None or self.sampled is None or not self.sampled.any():
            return 0.0
        assert self.term_products is not None and self.coefficients is not None
        f = self.term_products[:, list(terms)] @ np.asarray(weights, dtype=float)
        c = self.coefficients[self.sampled]
        f = f[self.sampled]
        kappa_s = float(np.abs(c).sum())
        draws = self.num_samples * kappa_s / self.kappa
        if kappa_s == 0 or draws <= 0:
            return 0.0
        p = np.abs(c) / kappa_s
        y = kappa_s * np.sign(c) * f
        return float((p @ y**2 - (p @ y) ** 2) / draws)


def reconstruct(
    cut: CutResult,
    get_counts: Callable[[str], Counts],
    *,
    with_library: bool = False,
    mitigation: MitigationConfig = RAW,
) -> Reconstruction:
    """Per global Pauli (in manifest order): value and stderr (and qiskit-addon-cutting's values).

    ``mitigation`` applies to results that carry mitigation data (QPU results); the values and
    standard errors are then those of the mitigated estimator (:mod:`pipeline.mitigation`).
    """
    labels = sorted(cut.keys)
    sub_paulis = {label: PauliList(cut.subobservables[label]) for label in labels}
    collections = {label: ObservableCollection(sub_paulis[label]) for label in labels}
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
            if (label, key, group) not in moments:
                cog = groups[group]
                bits = cut.observable_bits_of(label, group, len(cog.pauli_indices))
                counts = counts_for(key)
                mean, cov = subexperiment_moments(counts, bits, cog.pauli_bitmasks, mitigation)
                if counts.exact:  # an exact distribution: its mean has no sampling noise
                    cov = np.zeros_like(cov)
                moments[(label, key, group)] = (mean, cov)

    # Where each global Pauli's factor sits in each partition's groups: (group, position) pairs.
    lookups = {
        label: [collections[label].lookup[sub_paulis[label][p]] for p in range(num_paulis)]
        for label in labels
    }
    values = np.zeros(num_paulis)
    products = np.zeros((len(cut.coefficients), num_paulis))
    gradients: list[dict[MomentKey, np.ndarray]] = [{} for _ in range(num_paulis)]
    for term, (coefficient, _weight) in enumerate(cut.coefficients):
        for p in range(num_paulis):
            factors = []
            for label in labels:
                so = collections[label]
                entries = lookups[label][p]
                factor = 0.0
                for group, position in entries:
                    key = cut.keys[label][term * len(so.groups) + group]
                    factor += moments[(label, key, group)][0][position]
                factors.append((label, entries, factor / len(entries)))
            product = float(np.prod([f for _, _, f in factors]))
            products[term, p] = product
            values[p] += coefficient * product
            for i, (label, entries, _f) in enumerate(factors):
                others = float(np.prod([f for j, (_, _, f) in enumerate(factors) if j != i]))
                so = collections[label]
                for group, position in entries:
                    key = cut.keys[label][term * len(so.groups) + group]
                    size = len(so.groups[group].commuting_observables)
                    grad = gradients[p].setdefault((label, key, group), np.zeros(size))
                    grad[position] += coefficient * others / len(entries)

    recon = Reconstruction(
        paulis=[],
        library_values=_library_values(cut, counts_for, mitigation) if with_library else None,
        gradients=gradients,
        moments=moments,
        term_products=products,
        coefficients=np.array([c for c, _ in cut.coefficients], dtype=float),
        sampled=np.array([w == "SAMPLED" for _, w in cut.coefficients], dtype=bool),
        kappa=cut.kappa,
        num_samples=cut.num_samples,
    )
    recon.paulis.extend(
        PauliEstimate(value=float(values[p]), stderr=recon.stderr_of([p])) for p in range(num_paulis)
    )
    return recon


def _library_values(
    cut: CutResult, counts_for: Callable[[str], Counts], mitigation: MitigationConfig
) -> list[float]:
    """qiskit-addon-cutting's reconstruction of the same data (quasi-distribution path)."""
    results = {}
    for label in sorted(cut.keys):
        quasi = [QuasiDistribution(quasi_distribution(counts_for(k), mitigation)) for k in cut.keys[label]]
        results[label] = SamplerResult(quasi_dists=quasi, metadata=[{} for _ in quasi])
    coefficients = [(c, WeightType[w]) for c, w in cut.coefficients]
    observables = {label: PauliList(cut.subobservables[label]) for label in sorted(cut.keys)}
    return [float(v) for v in reconstruct_expectation_values(results, coefficients, observables)]
