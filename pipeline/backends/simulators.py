"""``cpu`` and ``gpu`` backends: qiskit-aer statevector simulation of deferred-measurement circuits.

Each batch is one Aer job (Aer spreads the experiments over its threads), and each circuit's
exact outcome distribution is sampled with a per-circuit seed. Circuits with resets (wire cuts)
get theirs from a density matrix while they fit; wider ones, and classical control, fall back
to Aer's ordinary shot-based run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from qiskit import QuantumCircuit

from pipeline.backends.base import Counts
from pipeline.backends.deferred import NotDeferrableError, add_save_probabilities, defer_measurements
from pipeline.backends.runnable import AER_DENSITY_MATRIX_BASIS, aer_runnable
from pipeline.errors import BackendUnavailableError
from policy.interface import BackendKind, BackendState

#: widest deferred circuit whose distribution comes from a density matrix (4^12 amplitudes:
#: 256 MiB); wider circuits with resets run shot by shot
DENSITY_MATRIX_MAX_QUBITS = 12


@lru_cache(maxsize=1)
def gpu_devices_available() -> bool:
    """True when the installed qiskit-aer was built with CUDA (qiskit-aer-gpu) and sees a GPU."""
    try:
        from qiskit_aer import AerSimulator

        return "GPU" in AerSimulator().available_devices()
    except Exception:
        return False


def scatter_outcomes(num_written: int, bit_positions: Sequence[int]) -> np.ndarray:
    """Map index j of a probability vector over written clbits to the full outcome integer."""
    index = np.arange(1 << num_written, dtype=np.int64)
    outcome = np.zeros_like(index)
    for source_bit, clbit in enumerate(bit_positions):
        outcome |= ((index >> source_bit) & 1) << clbit
    return outcome


class AerStatevectorBackend:
    """Exact-distribution sampling on qiskit-aer, on the CPU or (with qiskit-aer-gpu) a GPU."""

    def __init__(self, kind: BackendKind = "cpu", workers: int = 1) -> None:
        if kind not in ("cpu", "gpu"):
            raise ValueError(f"AerStatevectorBackend runs cpu or gpu, not {kind}")
        if kind == "gpu" and not gpu_devices_available():
            raise BackendUnavailableError(
                "no CUDA device visible to qiskit-aer "
                "(install the `gpu` extra, qiskit-aer-gpu, on a machine with an NVIDIA GPU)"
            )
        self.kind: BackendKind = kind
        self.name: str = kind
        self.workers = workers
        self._device = "GPU" if kind == "gpu" else "CPU"

    def state(self) -> BackendState:
        """What the policy sees of this simulator: qubits and workers."""
        return BackendState(
            name=self.name,
            kind=self.kind,
            workers=self.workers,
            healthy=True,
            model=f"aer-statevector-{self._device.lower()}",
        )

    def _simulator(self):  # type: ignore[no-untyped-def]
        from qiskit_aer import AerSimulator

        threads = os.cpu_count() or 1
        return AerSimulator(
            method="statevector",
            device=self._device,
            max_parallel_threads=threads,
            max_parallel_experiments=threads if self._device == "CPU" else 1,
        )

    def run_batch(self, circuits: Sequence[QuantumCircuit], shots: int, seeds: Sequence[int]) -> list[Counts]:
        """Sample ``shots`` outcomes of each circuit from its exact (deferred-measurement) distribution."""
        simulator = self._simulator()
        # Gates outside Aer's basis (iswap, dcx, xx_plus_yy, PauliEvolutionGate, ...) are
        # translated into it first; circuits already in it are passed through untouched.
        circuits = [aer_runnable(circuit) for circuit in circuits]
        # Seeded although the saved probabilities are exact: Aer may still draw random numbers
        # (e.g. for its single shot), and a run must be reproducible bit for bit.
        exact = exact_distributions(circuits, simulator, seed=int(seeds[0]) if seeds else 0)
        results: list[Counts] = []
        for position, circuit in enumerate(circuits):
            distribution = exact[position]
            if distribution is None:  # resets (wire cuts' Move): exact on a density matrix
                distribution = density_matrix_distribution(circuit)
            if distribution is None:  # too wide, or classical control: shot by shot
                run = simulator.run(circuit, shots=shots, seed_simulator=seeds[position]).result()
                results.append(Counts.from_qiskit(run.get_counts(0), circuit.num_clbits))
                continue
            outcomes, probabilities = distribution
            sampled = np.random.default_rng(seeds[position]).multinomial(shots, probabilities)
            histogram = np.zeros(1 << circuit.num_clbits, dtype=np.int64)
            np.add.at(histogram, outcomes, sampled)
            results.append(Counts.from_samples(histogram, circuit.num_clbits))
        return results


def exact_distributions(
    circuits: Sequence[QuantumCircuit], simulator: Any, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per circuit, its exact outcome distribution (outcome integers, probabilities), in one job.

    ``None`` for a circuit whose measurements cannot be deferred (resets, classical control).
    """
    deferred: list[QuantumCircuit] = []
    layouts: list[tuple[int, list[int]]] = []
    for position, circuit in enumerate(circuits):
        try:
            flat, sources = defer_measurements(circuit)
        except NotDeferrableError:
            continue
        written = [clbit for clbit, qubit in enumerate(sources) if qubit >= 0]
        add_save_probabilities(flat, [sources[c] for c in written])
        deferred.append(flat)
        layouts.append((position, written))
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(circuits)
    if deferred:
        result = simulator.run(deferred, shots=1, seed_simulator=seed).result()
        for experiment_index, (position, written) in enumerate(layouts):
            probabilities = np.asarray(result.data(experiment_index)["probabilities"], dtype=float)
            probabilities = np.clip(probabilities, 0.0, None)
            probabilities /= probabilities.sum()
            out[position] = (scatter_outcomes(len(written), written), probabilities)
    return out


def density_matrix_distribution(circuit: QuantumCircuit) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact outcome distribution of a circuit with resets, or None when it does not fit.

    Measurements are deferred onto ancillas as for pure states; resets stay, and Aer's
    density-matrix method applies each as the deterministic channel it is, so one pass gives
    the joint distribution that shot-by-shot simulation samples (a wire cut's subexperiments
    ran 10x slower shot by shot).
    """
    try:
        flat, sources = defer_measurements(aer_runnable(circuit, AER_DENSITY_MATRIX_BASIS), allow_resets=True)
    except NotDeferrableError:
        return None
    if flat.num_qubits > DENSITY_MATRIX_MAX_QUBITS:
        return None
    from qiskit_aer import AerSimulator

    written = [clbit for clbit, qubit in enumerate(sources) if qubit >= 0]
    add_save_probabilities(flat, [sources[c] for c in written])
    result = AerSimulator(method="density_matrix", max_parallel_threads=1).run(flat, shots=1).result()
    probabilities = np.clip(np.asarray(result.data(0)["probabilities"], dtype=float), 0.0, None)
    return scatter_outcomes(len(written), written), probabilities / probabilities.sum()
