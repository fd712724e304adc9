"""A subexperiment's mean and covariance, and its quasi-distribution, under a mitigation level.

The reconstruction's error propagation needs, per subexperiment and observable group, the mean
``ê`` of the per-shot values of each commuting observable (QPD sign times the parity of its
measured bits) and the covariance of that mean. Mitigation changes the per-shot values (readout:
each bit's ±1 becomes its tensored-inverse weight) and, for ZNE, combines independent
per-scale means linearly. Both keep the estimator linear in the samples, so the covariance
below is exact for the mitigated estimator, not an approximation bolted on afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from pipeline.mitigation.levels import MitigationConfig
from pipeline.mitigation.readout import apply_confusion, bit_weights, per_bit_values
from pipeline.mitigation.zne import combine, extrapolation_weights

if TYPE_CHECKING:
    from pipeline.backends.base import Counts

#: Largest number of clbits whose dense quasi-distribution is formed for qiskit-addon-cutting.
MAX_DENSE_CLBITS = 20

RAW = MitigationConfig(level="none")


def _single_moments(
    counts: Counts, num_obs_bits: int, masks: Sequence[int], readout: bool
) -> tuple[np.ndarray, np.ndarray]:
    table = bit_weights(counts.readout if readout else None, counts.num_clbits)
    per_bit = per_bit_values(counts.outcomes, counts.num_clbits, table)  # (bits, outcomes)
    qpd = np.prod(per_bit[num_obs_bits:], axis=0) if counts.num_clbits > num_obs_bits else 1.0
    rows = []
    for mask in masks:
        selected = [j for j in range(num_obs_bits) if (mask >> j) & 1]
        rows.append(qpd * (np.prod(per_bit[selected], axis=0) if selected else 1.0))
    values = np.array(rows, dtype=float).reshape(len(masks), len(counts.outcomes))
    weights = counts.counts / counts.shots
    mean = values @ weights
    second = (values * weights) @ values.T
    cov = (second - np.outer(mean, mean)) / counts.shots
    return mean, cov


def _scaled(counts: Counts) -> list[tuple[int, Counts]]:
    return [(1, counts), *counts.folded]


def scale_moments(
    counts: Counts, num_obs_bits: int, masks: Sequence[int], readout: bool
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per scale factor (1 for the unfolded circuit): mean and covariance, before extrapolation."""
    return {scale: _single_moments(c, num_obs_bits, masks, readout) for scale, c in _scaled(counts)}


def subexperiment_moments(
    counts: Counts, num_obs_bits: int, masks: Sequence[int], mitigation: MitigationConfig = RAW
) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector and covariance (of the mean) of the observables of one subexperiment.

    Bits ``0 .. num_obs_bits-1`` are the observable measurements, the rest the QPD measurements;
    ``masks[j]`` selects the bits whose parity is observable ``j``.
    """
    if mitigation.zne and counts.folded:
        parts = _scaled(counts)
        weights = extrapolation_weights(tuple(s for s, _ in parts), mitigation.extrapolation)
        return combine(
            [_single_moments(c, num_obs_bits, masks, mitigation.readout) for _, c in parts], weights
        )
    return _single_moments(counts, num_obs_bits, masks, mitigation.readout)


def _dense_quasi(counts: Counts, readout: bool) -> np.ndarray:
    dense = np.zeros(1 << counts.num_clbits)
    dense[counts.outcomes] = counts.counts / counts.shots
    if readout and counts.readout:
        inverses = [e.inverse() if e is not None else None for e in counts.readout]
        inverses += [None] * (counts.num_clbits - len(inverses))
        dense = apply_confusion(dense, inverses)
    return dense


def quasi_distribution(counts: Counts, mitigation: MitigationConfig = RAW) -> dict[int, float]:
    """Outcome → (quasi-)probability: raw frequencies, or their mitigated, possibly negative, image.

    Expectation values of parities under this quasi-distribution equal the means of
    :func:`subexperiment_moments`, so qiskit-addon-cutting reconstructs the same values.
    """
    needs_dense = (mitigation.readout and counts.readout) or (mitigation.zne and counts.folded)
    if not needs_dense:
        return dict(zip(counts.outcomes.tolist(), (counts.counts / counts.shots).tolist(), strict=True))
    if counts.num_clbits > MAX_DENSE_CLBITS:
        raise ValueError(
            f"{counts.num_clbits} clbits: too many for a dense mitigated quasi-distribution "
            f"(at most {MAX_DENSE_CLBITS})"
        )
    if mitigation.zne and counts.folded:
        parts = _scaled(counts)
        weights = extrapolation_weights(tuple(s for s, _ in parts), mitigation.extrapolation)
        dense = sum(
            w * _dense_quasi(c, mitigation.readout) for w, (_s, c) in zip(weights, parts, strict=True)
        )
    else:
        dense = _dense_quasi(counts, mitigation.readout)
    dense = np.asarray(dense, dtype=float)
    nonzero = np.flatnonzero(np.abs(dense) > 1e-15)
    return dict(zip(nonzero.tolist(), dense[nonzero].tolist(), strict=True))
