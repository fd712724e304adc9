"""The systematic error of zero-noise extrapolation: how far the answer moves with the model.

The standard error of a ZNE value (:mod:`pipeline.mitigation.zne`) is the shot noise of a linear
map of the samples. It says nothing about whether the model — a line or a polynomial through the
scale factors — describes how the device's noise grows when gates are folded. On IQMFakeApollo it
does not: over many seeds, Richardson on (1, 3, 5) overshot the exact values by 2-17 standard
errors (bench/mitigation.py, docs/benchmarks.md). The data cannot say which model is right, so the
honest error bar includes the spread between the models the data supports.

For a run with scale factors ``S`` and extrapolation ``M``, the alternatives are

- the other model (linear or Richardson) on the same ``S``, when it differs (three or more factors);
- the same model without the largest factor; from two factors that leaves the unfolded circuit,
  the readout-mitigated value without any extrapolation.

Each alternative is a full reconstruction from the *same* samples, and the systematic term of an
observable is the largest ``|E_alternative − E|``. It is measured, not modelled: its own shot noise
is included (it is not subtracted), which makes the term conservative at low shot counts. The
combined uncertainty ``sqrt(stderr² + systematic²)`` is what the results table compares errors
with; ``tests/test_zne_calibration.py`` checks that value − exact lies within twice it in at least
95 % of seeded runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from pipeline.mitigation.levels import MitigationConfig
from pipeline.mitigation.moments import scale_moments
from pipeline.mitigation.zne import EXTRAPOLATIONS, extrapolation_weights

if TYPE_CHECKING:
    from pipeline.backends.base import Counts
    from pipeline.cutting import CutResult
    from pipeline.reconstruct import MomentKey, Reconstruction

#: an observable as the reconstruction sums it: Pauli indices and their weights
ObservableTerms = tuple[Sequence[int], Sequence[float]]


def alternatives(mitigation: MitigationConfig) -> list[MitigationConfig]:
    """The extrapolations ``mitigation``'s value is compared with (none unless it is ZNE)."""
    if not mitigation.zne:
        return []
    scales = mitigation.zne_scales
    out = []
    if len(scales) >= 3:
        other = next(m for m in EXTRAPOLATIONS if m != mitigation.extrapolation)
        out.append(replace(mitigation, extrapolation=other))
    fewer = scales[:-1]
    out.append(
        replace(mitigation, zne_scales=fewer) if len(fewer) >= 2 else MitigationConfig(level="readout")
    )
    return out


def describe(mitigation: MitigationConfig) -> str:
    """One phrase naming an extrapolation, for docs and logs: ``linear (1,3,5)``."""
    if not mitigation.zne:
        return "no extrapolation"
    return f"{mitigation.extrapolation} ({','.join(map(str, mitigation.zne_scales))})"


def restrict(counts: Counts, scales: Sequence[int]) -> Counts:
    """``counts`` with only the folded results of ``scales`` (the unfolded circuit always stays)."""
    keep = set(scales)
    if not counts.folded or all(scale in keep for scale, _ in counts.folded):
        return counts
    return counts.with_mitigation_data(counts.readout, [f for f in counts.folded if f[0] in keep])


@dataclass(frozen=True)
class Shift:
    """How far one alternative extrapolation moves an observable, and that shift's own noise."""

    delta: float  #: E_alternative − E, from the same samples
    noise: float  #: standard error of ``delta`` (first-order, like every stderr of the pipeline)

    @property
    def size(self) -> float:
        """``sqrt(delta² + noise²)``: a shift that is known only to ± noise is at least that big."""
        return math.hypot(self.delta, self.noise)


def _weights(mitigation: MitigationConfig) -> dict[int, float]:
    if not mitigation.zne:
        return {1: 1.0}
    gammas = extrapolation_weights(mitigation.zne_scales, mitigation.extrapolation)
    return dict(zip(mitigation.zne_scales, gammas, strict=True))


def _scale_covariances(
    cut: CutResult, counts: Mapping[str, Counts], readout: bool
) -> dict[MomentKey, dict[int, np.ndarray]]:
    """Per subexperiment and observable group: the covariance of each scale factor's estimate."""
    from qiskit.quantum_info import PauliList
    from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection

    out: dict[MomentKey, dict[int, np.ndarray]] = {}
    for label in sorted(cut.keys):
        groups = ObservableCollection(PauliList(cut.subobservables[label])).groups
        for index, key in enumerate(cut.keys[label]):
            moment_key = (label, key, index % len(groups))
            if moment_key in out:
                continue
            group = groups[moment_key[2]]
            per_scale = scale_moments(counts[key], len(group.pauli_indices), group.pauli_bitmasks, readout)
            out[moment_key] = {scale: cov for scale, (_mean, cov) in per_scale.items()}
    return out


def extrapolation_shifts(
    cut: CutResult,
    counts: Mapping[str, Counts],
    mitigation: MitigationConfig,
    primary: Reconstruction,
    observables: Sequence[ObservableTerms],
) -> list[list[Shift]]:
    """Per alternative extrapolation and observable: the shift of the value, with its noise.

    The noise is the first-order variance of ``E_alternative − E``: both are functions of the
    same per-scale estimates, so the difference's variance is ``Σ_k gᵀ (Σ_s (γ'_s − γ_s)² C_ks) g``
    with ``g`` the primary's gradients (the two reconstructions differ by a small shift).
    """
    from pipeline.reconstruct import reconstruct

    others = alternatives(mitigation)
    if not others or not any(c.folded for c in counts.values()):
        return []
    counts = {key: restrict(c, mitigation.zne_scales) for key, c in counts.items()}
    values = [primary.value_of(terms, weights) for terms, weights in observables]
    covariances = _scale_covariances(cut, counts, mitigation.readout)
    gammas = _weights(mitigation)
    out = []
    for other in others:
        scales = other.zne_scales if other.zne else (1,)
        restricted = {key: restrict(c, scales) for key, c in counts.items()}
        alternative = reconstruct(cut, restricted.__getitem__, mitigation=other)
        gammas_other = _weights(other)
        moments = {}
        for moment_key, per_scale in covariances.items():
            size = len(per_scale[1])
            cov = np.zeros((size, size))
            if len(per_scale) > 1:  # results without folded counts are not extrapolated
                for scale, c in per_scale.items():
                    cov += (gammas_other.get(scale, 0.0) - gammas.get(scale, 0.0)) ** 2 * c
            moments[moment_key] = (np.zeros(size), cov)
        difference = replace(primary, moments=moments, num_samples=None)
        out.append(
            [
                Shift(alternative.value_of(terms, weights) - value, difference.stderr_of(terms, weights))
                for (terms, weights), value in zip(observables, values, strict=True)
            ]
        )
    return out


def largest(shifts: Sequence[Sequence[Shift]], count: int) -> list[float]:
    """Per observable, the largest :attr:`Shift.size` over the alternatives (0 without any)."""
    return [max((alternative[i].size for alternative in shifts), default=0.0) for i in range(count)]


def extrapolation_systematics(
    cut: CutResult,
    counts: Mapping[str, Counts],
    mitigation: MitigationConfig,
    primary: Reconstruction,
    observables: Sequence[ObservableTerms],
) -> list[float]:
    """Per observable, the systematic term: the largest shift under the alternative extrapolations.

    Zero when nothing was extrapolated (no ZNE, or no result carries folded counts).
    """
    return largest(extrapolation_shifts(cut, counts, mitigation, primary, observables), len(observables))


def combined(stderr: float, systematic: float) -> float:
    """The uncertainty an error is compared with: statistical and systematic in quadrature."""
    return math.hypot(stderr, systematic)
