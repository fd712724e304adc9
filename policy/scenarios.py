"""Simulated clusters and workloads, as data.

Each :class:`Scenario` is a workload (partitions of cutting subexperiments) and a cluster
(backends with a *true* cost model, noise, failures, cloud queue, calibration and its drift). The
true costs deliberately differ from the policy's priors in :mod:`policy.models`, so the telemetry
policy must learn them from simulated history rather than being handed them.

Numbers are plausible for a laptop-class node: 5-qubit subexperiments at 4096 shots take a few
ms on a CPU statevector simulator and ~0.1 s on a (fake, noisy-simulated) QPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from policy.interface import BackendKind
from policy.models import CostCoefficients


@dataclass(frozen=True)
class PartitionSpec:
    """``count`` subexperiments of one cut partition (depth and 2q gates jitter per subexperiment)."""

    label: str
    count: int
    num_qubits: int
    depth: int
    num_2q_gates: int
    num_clbits: int
    shots: int = 4096
    jitter: int = 2


@dataclass(frozen=True)
class BackendSpec:
    """One simulated backend and the truth about it."""

    name: str
    kind: BackendKind
    cost: CostCoefficients
    workers: int = 1
    max_qubits: int | None = None
    model: str = ""
    noise_sigma: float = 0.2  #: lognormal spread of run time around the cost model (mean-preserving)
    failure_prob: float = 0.0
    queue_wait_seconds: float = 0.0  #: cloud queue before the first job of a run starts
    fidelity_2q: float | None = None
    readout_fidelity: float | None = None
    error_scale: float = 1.0  #: true error = analytic error × this (unknown to the policy)
    drift_at_seconds: float | None = None
    drifted_fidelity_2q: float | None = None
    drifted_readout_fidelity: float | None = None
    healthy: bool = True

    def calibration_at(self, t: float) -> tuple[float | None, float | None]:
        """(f2q, readout fidelity) at simulated time ``t``."""
        if self.drift_at_seconds is not None and t >= self.drift_at_seconds:
            return (
                self.drifted_fidelity_2q if self.drifted_fidelity_2q is not None else self.fidelity_2q,
                self.drifted_readout_fidelity
                if self.drifted_readout_fidelity is not None
                else self.readout_fidelity,
            )
        return self.fidelity_2q, self.readout_fidelity


@dataclass(frozen=True)
class Scenario:
    """A workload on a cluster; ``wave_size`` tasks are decided at a time (as the pipeline batches)."""

    name: str
    description: str
    partitions: tuple[PartitionSpec, ...]
    backends: tuple[BackendSpec, ...]
    wave_size: int = 54
    error_budget: float = 0.35
    max_attempts: int = 3

    @property
    def num_tasks(self) -> int:
        return sum(p.count for p in self.partitions)

    def scaled(self, tasks: int) -> Scenario:
        """The same scenario with about ``tasks`` subexperiments (partitions scaled evenly)."""
        factor = tasks / max(self.num_tasks, 1)
        parts = tuple(replace(p, count=max(1, round(p.count * factor))) for p in self.partitions)
        wave = max(self.wave_size, round(self.wave_size * factor / 8))
        return replace(self, partitions=parts, wave_size=wave)


CPU_TRUTH = CostCoefficients(base=3e-3, per_shot=3e-7, per_amp_layer=6e-9)
GPU_TRUTH = CostCoefficients(base=3e-2, per_shot=1.5e-7, per_amp_layer=3e-10)
QPU_TRUTH = CostCoefficients(base=4e-2, per_shot=1.8e-5, per_shot_layer=1e-8)

_CPU = BackendSpec(name="cpu", kind="cpu", cost=CPU_TRUTH, workers=3, failure_prob=0.001)
_GPU = BackendSpec(name="gpu", kind="gpu", cost=GPU_TRUTH, noise_sigma=0.1, failure_prob=0.001)
_QPU = BackendSpec(
    name="qpu:apollo-onprem",
    kind="qpu",
    cost=QPU_TRUTH,
    max_qubits=20,
    model="Apollo",
    failure_prob=0.02,
    fidelity_2q=0.995,
    readout_fidelity=0.98,
    error_scale=1.1,
)
#: The paper's cut: a 10-qubit HEA, 3 gate cuts → 6^3 = 216 subexperiments per 5-qubit partition.
_PAPER_PARTS = (
    PartitionSpec("A", 216, num_qubits=5, depth=22, num_2q_gates=8, num_clbits=6),
    PartitionSpec("B", 216, num_qubits=5, depth=22, num_2q_gates=8, num_clbits=6),
)

SCENARIOS: dict[str, Scenario] = {
    "paper": Scenario(
        name="paper",
        description="paper's cutting run: 2 partitions x 216 = 432 tasks; 3 CPU workers + 1 GPU + 1 QPU",
        partitions=_PAPER_PARTS,
        backends=(_CPU, _GPU, _QPU),
    ),
    "cloud_queue": Scenario(
        name="cloud_queue",
        description="as paper, but the QPU is a cloud QPU with a 15-minute queue",
        partitions=_PAPER_PARTS,
        backends=(_CPU, _GPU, replace(_QPU, name="qpu:apollo-cloud", queue_wait_seconds=900.0)),
    ),
    "drift": Scenario(
        name="drift",
        description="4 cut circuits (1728 tasks); QPU 2q fidelity drops 0.995 -> 0.95 at t=1 s",
        partitions=tuple(replace(p, count=4 * p.count) for p in _PAPER_PARTS),
        backends=(
            _CPU,
            _GPU,
            replace(_QPU, drift_at_seconds=1.0, drifted_fidelity_2q=0.95, drifted_readout_fidelity=0.93),
        ),
        wave_size=108,
    ),
    "wide": Scenario(
        name="wide",
        description="26-qubit partitions: simulators saturate, a good 54-qubit QPU wins",
        partitions=(
            PartitionSpec("A", 216, num_qubits=26, depth=30, num_2q_gates=40, num_clbits=27),
            PartitionSpec("B", 216, num_qubits=26, depth=30, num_2q_gates=40, num_clbits=27),
        ),
        backends=(
            _CPU,
            _GPU,
            replace(
                _QPU,
                name="qpu:aphrodite-onprem",
                model="Aphrodite",
                max_qubits=54,
                fidelity_2q=0.9985,
                readout_fidelity=0.992,
            ),
        ),
    ),
}
