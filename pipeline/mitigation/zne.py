"""Zero-noise extrapolation: fold gates, then extrapolate linearly in the data.

Folding replaces every gate ``G`` of a device-transpiled circuit (``--zne-fold all``, the
default) or only its two-qubit gates (``2q``) by ``G (G† G)^((λ−1)/2)`` for an odd scale factor
``λ``: the same unitary, ``λ`` times the gate noise. Barriers around each fold keep a later
optimisation pass from cancelling it. Only device-level circuits are folded, so the fold is what
runs.

Extrapolation to ``λ = 0`` is mitiq's linear (least-squares line) or Richardson (polynomial
through every point) factory's. Both are linear maps of the measured values,
``E_0 = Σ_s γ_s E_s``, so the variance of the extrapolated value is ``Σ_s γ_s² Var(E_s)`` (the
scale factors are independent samples): 1.46x for a line through (1, 3, 5), 2.5x through (1, 3),
5.2x for Richardson on (1, 3, 5). That variance is only the statistical part: whether the model
fits how the noise grows is a systematic question, answered by
:mod:`pipeline.mitigation.systematic`. Exponential extrapolation is not linear in the data and has
no such per-shot form, so it is not offered.

The default, a line through (1, 3, 5), is chosen from measurements (bench/mitigation.py,
docs/benchmarks.md): on IQMFakeApollo it left the smallest error on the tutorial circuits, and its
three points let the model be checked against Richardson, which on this device overshoots by many
standard errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # run configs import the defaults below; they must not pay for qiskit
    from qiskit import QuantumCircuit

EXTRAPOLATIONS = ("linear", "richardson")
DEFAULT_SCALES: tuple[int, ...] = (1, 3, 5)
DEFAULT_EXTRAPOLATION = "linear"


def validate_scales(scales: Sequence[int]) -> tuple[int, ...]:
    """Odd, distinct scale factors starting at 1 (the unfolded circuit is one of them)."""
    out = tuple(int(s) for s in scales)
    if len(out) < 2 or out[0] != 1 or len(set(out)) != len(out) or any(s < 1 or s % 2 == 0 for s in out):
        raise ValueError(f"ZNE scale factors must be distinct odd integers starting at 1, got {list(out)}")
    return out


FOLDS = ("2q", "all")
#: Folding every gate, not just the two-qubit ones: on IQMFakeApollo it leaves 40 % of the raw
#: bias on the demo circuit at (1, 3) linear, against 49 % for two-qubit folding (bench/mitigation.py).
DEFAULT_FOLD = "all"
_NOT_FOLDABLE = frozenset({"barrier", "measure", "reset", "delay"})


def fold_two_qubit_gates(circuit: QuantumCircuit, scale: int, which: str = "2q") -> QuantumCircuit:
    """``circuit`` with each two-qubit gate ``G`` replaced by ``G (G† G)^((scale−1)/2)``.

    ``which="all"`` folds the single-qubit gates too, which also scales their noise (on IQM
    devices, relaxation during the ``prx`` gates biases single-qubit ``Z`` towards +1).
    """
    if scale == 1:
        return circuit
    if scale < 1 or scale % 2 == 0:
        raise ValueError(f"scale factor must be an odd integer >= 1, got {scale}")
    folds = (scale - 1) // 2
    out = circuit.copy_empty_like(name=f"{circuit.name}_fold{scale}")
    for inst in circuit.data:
        out.append(inst)
        op = inst.operation
        foldable = op.name not in _NOT_FOLDABLE and not inst.clbits
        if foldable and (op.num_qubits == 2 or which == "all"):
            inverse = op.inverse()
            for _ in range(folds):
                out.barrier(inst.qubits)
                out.append(inverse, inst.qubits)
                out.append(op, inst.qubits)
            out.barrier(inst.qubits)
    return out


@lru_cache(maxsize=32)
def extrapolation_weights(scales: tuple[int, ...], method: str) -> tuple[float, ...]:
    """``γ_s`` with ``E_0 = Σ_s γ_s E_s`` for mitiq's linear or Richardson extrapolation.

    Closed forms, not mitiq itself: importing mitiq imports cirq, seconds of start-up for two
    small formulas. Linear is the least-squares line's intercept (the first row of
    ``(XᵀX)⁻¹Xᵀ`` with ``X = [1, λ]``); Richardson the Lagrange polynomial through every point,
    evaluated at 0. ``tests/test_mitigation.py`` checks both against mitiq's factories.
    """
    if method not in EXTRAPOLATIONS:
        raise ValueError(f"unknown extrapolation {method!r}: choose one of {', '.join(EXTRAPOLATIONS)}")
    xs = np.array([float(s) for s in scales])
    if method == "linear":
        design = np.column_stack([np.ones_like(xs), xs])
        return tuple(float(w) for w in np.linalg.pinv(design)[0])
    return tuple(
        float(np.prod([xm / (xm - xj) for m, xm in enumerate(xs) if m != j])) for j, xj in enumerate(xs)
    )


def combine(
    moments: Sequence[tuple[np.ndarray, np.ndarray]], weights: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``Σ_s γ_s ê_s`` for independent per-scale estimates ``ê_s``."""
    mean = sum(w * m for w, (m, _c) in zip(weights, moments, strict=True))
    cov = sum(w * w * c for w, (_m, c) in zip(weights, moments, strict=True))
    return np.asarray(mean, dtype=float), np.asarray(cov, dtype=float)
