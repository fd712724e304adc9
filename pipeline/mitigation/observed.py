"""How wrong a QPU batch was, measured: the telemetry the policy learns mitigated errors from.

Subexperiments are small by construction (that is what cutting is for), so their ideal outcome
distribution is a cheap exact statevector computation. For each subexperiment of a QPU batch the
probe compares the (mitigated) estimate of one fixed observable, the parity of every measured
bit (observable bits times QPD sign), with its ideal value. Shot noise is taken out:
``E[Δ²] = bias² + σ²``, so the batch's observed error is ``sqrt(mean Δ² − mean σ²)``, floored at
a tenth of the typical σ (a batch cannot resolve less). The batch's first row carries that
number as ``observed_error`` (one measurement per probe), with its mitigation level and
``probe: exact``, and ``qubelet policy fit`` learns one correction per backend and level from it.

A batch with no subexperiment that narrow is measured by the mirror probe instead
(:mod:`pipeline.mitigation.mirror`): one mirror circuit in the same job, ``probe: mirror``.
:func:`observe_batch` picks whichever applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.mitigation.levels import MitigationConfig
from pipeline.mitigation.mirror import MirrorProbe, mirror_observed_error
from pipeline.mitigation.moments import subexperiment_moments
from policy.interface import EXACT_PROBE, MIRROR_PROBE, BackendState, CircuitFeatures

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

    from pipeline.backends.base import Counts

#: Widest subexperiment (qubits plus deferred measurements) the probe simulates exactly (a run's
#: ``RunConfig.exact_probe_max_width``, this by default).
MAX_PROBE_QUBITS = 20
_OBSERVABLE_REGISTER = "observable_measurements"


def _observable_bits(circuit: QuantumCircuit) -> int:
    for register in circuit.cregs:
        if register.name == _OBSERVABLE_REGISTER:
            return register.size
    return circuit.num_clbits


def _parity_signs(outcomes: np.ndarray) -> np.ndarray:
    bits = np.zeros_like(outcomes)
    remaining = outcomes.copy()
    while np.any(remaining):
        bits ^= remaining & 1
        remaining >>= 1
    return 1.0 - 2.0 * bits


@dataclass(frozen=True)
class BatchObservation:
    """A QPU batch's one measured error, which probe measured it, and whose row carries it."""

    error: float
    probe: str  #: ``policy.interface.PROBES``
    index: int  #: position in the batch of the result whose telemetry row carries it


def observe_batch(
    circuits: Sequence[QuantumCircuit],
    results: Sequence[Counts],
    mitigation: MitigationConfig,
    *,
    max_width: int = MAX_PROBE_QUBITS,
    mirror: MirrorProbe | None = None,
    mirror_counts: Counts | None = None,
    features: Sequence[CircuitFeatures] = (),
    state: BackendState | None = None,
) -> BatchObservation | None:
    """The batch's measured error: the mirror probe's when the job ran one, else the exact probe's.

    The exact probe's value goes on the batch's first row; the mirror's on the mirrored
    subexperiment's row (the estimate is for that subexperiment's width and gates).
    """
    if mirror is not None and mirror_counts is not None and state is not None:
        error = mirror_observed_error(mirror, mirror_counts, features[mirror.index], state)
        return None if error is None else BatchObservation(error, MIRROR_PROBE, mirror.index)
    error = batch_observed_error(circuits, results, mitigation, max_width)
    return None if error is None else BatchObservation(error, EXACT_PROBE, 0)


def batch_observed_error(
    circuits: Sequence[QuantumCircuit],
    results: Sequence[Counts],
    mitigation: MitigationConfig,
    max_width: int = MAX_PROBE_QUBITS,
) -> float | None:
    """The batch's shot-noise-corrected error against ideal values, or None if none is cheap.

    Only subexperiments of at most ``max_width`` qubits plus clbits are simulated.
    """
    from qiskit_aer import AerSimulator

    from pipeline.backends.simulators import exact_distributions

    probe = [i for i, c in enumerate(circuits) if c.num_clbits and c.num_qubits + c.num_clbits <= max_width]
    if not probe:
        return None
    exact = exact_distributions([circuits[i] for i in probe], AerSimulator(method="statevector"))
    squared, variances = [], []
    for index, distribution in zip(probe, exact, strict=True):
        if distribution is None:
            continue
        outcomes, probabilities = distribution
        ideal = float(_parity_signs(outcomes) @ probabilities)
        bits = _observable_bits(circuits[index])
        mean, cov = subexperiment_moments(results[index], bits, [(1 << bits) - 1], mitigation)
        squared.append((float(mean[0]) - ideal) ** 2)
        variances.append(float(cov[0, 0]))
    if not squared:
        return None
    noise = float(np.mean(variances))
    return float(np.sqrt(max(float(np.mean(squared)) - noise, 0.01 * noise, 1e-12)))
