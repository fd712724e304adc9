"""Readout mitigation with per-qubit (tensored) confusion matrices, exact and matrix-free.

Each clbit ``b`` is read through a 2x2 confusion matrix of the physical qubit measured into it,
``A_b[recorded][true]`` with ``a_b = P(read 1 | 0)`` and ``c_b = P(read 0 | 1)``. The tensored
model inverts as ``A^{-1} = ⊗_b A_b^{-1}``, so for every observable the pipeline reconstructs (a
parity ``Π z_b`` over a set of clbits, ``z = +1`` for 0 and ``-1`` for 1) the mitigated
expectation is

    E_mit[Π_{b∈S} z_b] = Σ_x p̂(x) Π_{b∈S} w_b(x_b),   w_b = zᵀ A_b^{-1}
                       = ( (1 + a_b − c_b), −(1 − a_b + c_b) ) / (1 − a_b − c_b),

because the columns of each ``A_b^{-1}`` sum to one, which removes every bit outside ``S``. This
is the full tensored inverse, not an approximation on the observed subspace (which is what
mthree solves iteratively for general observables); the tests check the two agree. It is also
*linear in the shots*: each shot contributes the product of its per-bit weights, so the usual
sample-covariance of those per-shot values is the honest standard error, with the inverse
confusion's amplification (``|w_b| ≥ 1``) included and negative quasi-probabilities allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: An ideal readout: read 0 as +1, 1 as -1.
IDEAL_WEIGHTS = (1.0, -1.0)


@dataclass(frozen=True)
class ReadoutError:
    """One clbit's readout error: ``p1_given_0 = P(read 1 | 0)``, ``p0_given_1 = P(read 0 | 1)``."""

    p1_given_0: float
    p0_given_1: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.p1_given_0 < 1.0 and 0.0 <= self.p0_given_1 < 1.0):
            raise ValueError(f"readout error probabilities out of range: {self}")
        if self.p1_given_0 + self.p0_given_1 >= 1.0:
            raise ValueError(f"readout error {self} is not invertible (P(1|0) + P(0|1) >= 1)")

    def weights(self) -> tuple[float, float]:
        """``zᵀ A^{-1}``: the mitigated ±1 value of reading 0 and of reading 1."""
        a, c = self.p1_given_0, self.p0_given_1
        det = 1.0 - a - c
        return (1.0 + a - c) / det, -(1.0 - a + c) / det

    def inverse(self) -> np.ndarray:
        """``A^{-1}`` indexed ``[true][recorded]`` (the layout ``_apply_confusion`` pushes through)."""
        a, c = self.p1_given_0, self.p0_given_1
        confusion = np.array([[1.0 - a, a], [c, 1.0 - c]])  # [true][recorded]
        return np.linalg.inv(confusion)


def bit_weights(errors: Sequence[ReadoutError | None] | None, num_clbits: int) -> np.ndarray:
    """Per clbit, the (read 0, read 1) values: mitigated where an error is known, else ±1."""
    table = np.tile(np.asarray(IDEAL_WEIGHTS), (num_clbits, 1))
    for bit, error in enumerate(errors or ()):
        if error is not None and bit < num_clbits:
            table[bit] = error.weights()
    return table


def per_bit_values(outcomes: np.ndarray, bits: int, table: np.ndarray) -> np.ndarray:
    """Per clbit and outcome, that bit's value from ``table`` (shape ``(bits, len(outcomes))``).

    The value of a parity over a set of bits is the product of these rows, so callers form any
    subset's parity without re-reading the outcomes.
    """
    out = np.empty((bits, len(outcomes)))
    for j in range(bits):
        set_bit = ((outcomes >> j) & 1).astype(bool)
        out[j] = np.where(set_bit, table[j, 1], table[j, 0])
    return out


def apply_confusion(probabilities: np.ndarray, matrices: Sequence[np.ndarray | None]) -> np.ndarray:
    """Push a dense distribution over m bits (bit j = index bit j) through per-bit 2x2 matrices.

    ``matrices[j]`` is indexed ``[from][to]``: a confusion ``P[true][recorded]`` adds readout
    error, its inverse removes it. One tensor contraction per bit: O(m·2^m), never a 2^m x 2^m
    matrix.
    """
    m = len(matrices)
    tensor = probabilities.reshape([2] * m) if m else probabilities
    for bit, matrix in enumerate(matrices):
        if matrix is None:
            continue
        axis = m - 1 - bit  # C order: the last axis is bit 0
        tensor = np.moveaxis(np.tensordot(tensor, matrix, axes=([axis], [0])), -1, axis)
    return tensor.reshape(-1)
