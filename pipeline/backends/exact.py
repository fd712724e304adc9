"""The ``exact`` backend: each subexperiment's exact outcome distribution, with no shot noise.

Why: a reconstruction checked only against numbers its own authors chose can be wrong with
confident error bars. With exact distributions the reconstruction must equal, to rounding,
qiskit-addon-cutting's own ``reconstruct_expectation_values`` fed by its ``ExactSampler``, and
the uncut circuit's statevector value: an oracle qubelet did not write. It is never chosen by a
policy; a run uses it only when asked (``--backends exact``), and then alone.

Like the library's ``ExactSampler`` it returns the probability of every classical outcome of a
circuit with mid-circuit measurements and resets. The path depends on the circuit:

- measurements only (gate cuts): deferred measurement, one Aer statevector pass per batch;
- resets too (wire cuts' ``Move``): the same deferral on Aer's density matrix, where a reset is
  a deterministic channel, while the deferred circuit fits
  :data:`~pipeline.backends.simulators.DENSITY_MATRIX_MAX_QUBITS`;
- wider than that: the library's branch-by-branch statevector simulation.

The probabilities are stored as they are (``Counts.exact``); reconstruction gives them zero
variance, so every standard error of an exact run is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qiskit import QuantumCircuit

from pipeline.backends.base import Counts
from pipeline.backends.runnable import aer_runnable
from pipeline.backends.simulators import density_matrix_distribution, exact_distributions
from policy.interface import BackendKind, BackendState

#: the backend's name in ``--backends`` and in every record it writes
EXACT = "exact"


class ExactBackend:
    """Exact outcome distributions of subexperiments (stderr 0), for checking answers."""

    def __init__(self, workers: int = 1) -> None:
        self.name: str = EXACT
        #: planned and scheduled as a CPU simulator (which it is); recorded under its own name
        self.kind: BackendKind = "cpu"
        self.workers = workers

    def state(self) -> BackendState:
        """A healthy CPU simulator of its own model, for the policy that must pick it."""
        return BackendState(name=self.name, kind=self.kind, workers=self.workers, healthy=True, model="exact")

    def run_batch(self, circuits: Sequence[QuantumCircuit], shots: int, seeds: Sequence[int]) -> list[Counts]:
        """The exact distribution of each circuit (``shots`` and ``seeds`` change nothing)."""
        from qiskit_aer import AerSimulator

        runnable = [aer_runnable(circuit) for circuit in circuits]
        simulator = AerSimulator(method="statevector", max_parallel_threads=1)
        distributions = exact_distributions(runnable, simulator)
        results = []
        for circuit, distribution in zip(runnable, distributions, strict=True):
            if distribution is None:  # resets: not a pure state's measurement
                distribution = non_unitary_distribution(circuit)
            outcomes, probabilities = distribution
            results.append(Counts.from_distribution(outcomes, probabilities, circuit.num_clbits))
        return results


def non_unitary_distribution(circuit: QuantumCircuit) -> tuple[np.ndarray, np.ndarray]:
    """Exact outcome distribution of a circuit with resets (density matrix, else branching)."""
    distribution = density_matrix_distribution(circuit)
    if distribution is not None:
        return distribution
    from qiskit_addon_cutting.utils.simulation import simulate_statevector_outcomes

    table = simulate_statevector_outcomes(circuit)
    outcomes = np.array(list(table), dtype=np.int64)
    return outcomes, np.array([table[k] for k in table], dtype=float)
