"""Simulated clusters and workloads, as data.

Each :class:`Scenario` is a workload (partitions of cutting subexperiments) and a cluster
(backends with a *true* cost model, noise, failures, cloud queue, calibration and its drift). The
true costs deliberately differ from the policy's priors in :mod:`policy.models`, so the telemetry
policy must learn them from simulated history rather than being handed them.

Numbers are plausible for a laptop-class node: 5-qubit subexperiments at 4096 shots take a few
ms on a CPU statevector simulator and ~0.1 s on a (fake, noisy-simulated) QPU.

What a policy may see of a backend is only what a cluster shows (``policy/simulator.py``): the
*published* calibration (the last calibration run, not the drifted truth), the jobs queued ahead
(its own, known to the submitter, plus other tenants', from a Prometheus scrape
``metrics_lag_seconds`` old) and the telemetry of finished tasks. The truths here (cost, error
scale, drift, other tenants' busy windows, GPU sharing) are the simulator's alone.
"""

from __future__ import annotations

import math
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
    #: when set, calibration drifts linearly from ``drift_at_seconds`` to here (else it steps)
    drift_until_seconds: float | None = None
    drifted_fidelity_2q: float | None = None
    drifted_readout_fidelity: float | None = None
    healthy: bool = True
    #: ``(start, end)`` spans when other tenants' jobs hold the backend; ours start at ``end``
    busy_windows: tuple[tuple[float, float], ...] = ()
    #: how long one of the other tenants' jobs runs (turns a busy span into a queue depth)
    external_job_seconds: float = 30.0
    #: ``(start, end, factor)``: other tenants share the device, our run times × ``factor``
    slowdowns: tuple[tuple[float, float, float], ...] = ()

    def calibration_at(self, t: float) -> tuple[float | None, float | None]:
        """True (f2q, readout fidelity) at simulated time ``t`` (the policy never sees this)."""
        if self.drift_at_seconds is None or t < self.drift_at_seconds:
            return self.fidelity_2q, self.readout_fidelity
        share = 1.0
        if self.drift_until_seconds is not None and self.drift_until_seconds > self.drift_at_seconds:
            share = min((t - self.drift_at_seconds) / (self.drift_until_seconds - self.drift_at_seconds), 1.0)

        def mix(before: float | None, after: float | None) -> float | None:
            if before is None or after is None:
                return after if after is not None else before
            return before + share * (after - before)

        return (
            mix(self.fidelity_2q, self.drifted_fidelity_2q),
            mix(self.readout_fidelity, self.drifted_readout_fidelity),
        )

    def busy_until(self, t: float) -> float:
        """The earliest time at or after ``t`` when other tenants leave the backend to us."""
        windows = list(self.busy_windows)
        if self.queue_wait_seconds > 0:
            windows.append((0.0, self.queue_wait_seconds))
        for start, end in windows:
            if start <= t < end:
                return end
        return t

    def external_depth(self, t: float) -> int:
        """Other tenants' jobs queued ahead at time ``t`` (what the backend's queue metric shows)."""
        wait = self.busy_until(t) - t
        return math.ceil(wait / self.external_job_seconds) if wait > 0 else 0

    def slowdown_at(self, t: float) -> float:
        """Factor on our run times at ``t`` from other tenants sharing the device."""
        return next((factor for start, end, factor in self.slowdowns if start <= t < end), 1.0)


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
    #: age of the Prometheus scrape the policy reads other tenants' queues from (seconds)
    metrics_lag_seconds: float = 15.0

    @property
    def num_tasks(self) -> int:
        """Subexperiments in the workload."""
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

# -- scenarios where the choice matters and only learning reveals the truth ----------------------
#: Statevector memory caps width: 2^30 amplitudes x 16 B = 16 GiB of host RAM, 2^32 x 8 B = 32 GiB
#: on the GPU (complex64).
_CAPPED_CPU = replace(_CPU, max_qubits=30)
_CAPPED_GPU = replace(_GPU, max_qubits=32)
_APHRODITE = replace(
    _QPU,
    name="qpu:aphrodite-onprem",
    model="Aphrodite",
    max_qubits=54,
    fidelity_2q=0.9985,
    readout_fidelity=0.992,
)
_PARTS_26 = (
    PartitionSpec("A", 216, num_qubits=26, depth=30, num_2q_gates=40, num_clbits=27),
    PartitionSpec("B", 216, num_qubits=26, depth=30, num_2q_gates=40, num_clbits=27),
)

SCENARIOS.update(
    {
        "qpu_only_wide": Scenario(
            name="qpu_only_wide",
            description="34-qubit partitions fit only the QPU; 24-qubit ones fit every backend",
            partitions=(
                PartitionSpec("W", 120, num_qubits=34, depth=24, num_2q_gates=30, num_clbits=34),
                PartitionSpec("N", 360, num_qubits=24, depth=25, num_2q_gates=30, num_clbits=24),
            ),
            backends=(_CAPPED_CPU, _CAPPED_GPU, _APHRODITE),
        ),
        "queue_comes_and_goes": Scenario(
            name="queue_comes_and_goes",
            description="26-qubit partitions; other tenants hold the QPU for 60 s twice (20 s jobs)",
            partitions=_PARTS_26,
            backends=(
                _CPU,
                _GPU,
                replace(
                    _APHRODITE,
                    name="qpu:aphrodite-cloud",
                    busy_windows=((8.0, 68.0), (100.0, 160.0)),
                    external_job_seconds=20.0,
                ),
            ),
        ),
        "drift_gradual": Scenario(
            name="drift_gradual",
            description="26-qubit partitions x2; QPU fidelity decays from t=5 s to 65 s, calibration "
            "data is not refreshed (only observed errors show it)",
            partitions=tuple(replace(p, count=2 * p.count) for p in _PARTS_26),
            backends=(
                _CPU,
                _GPU,
                replace(
                    _APHRODITE,
                    drift_at_seconds=5.0,
                    drift_until_seconds=65.0,
                    drifted_fidelity_2q=0.99,
                    drifted_readout_fidelity=0.985,
                ),
            ),
        ),
        "shared_gpu": Scenario(
            name="shared_gpu",
            description="22-qubit deep partitions on 3 CPU workers + 1 GPU; from t=5 s another "
            "tenant shares the GPU and our jobs run 8x slower",
            partitions=(
                PartitionSpec("A", 300, num_qubits=22, depth=40, num_2q_gates=60, num_clbits=22),
                PartitionSpec("B", 300, num_qubits=22, depth=40, num_2q_gates=60, num_clbits=22),
            ),
            backends=(_CPU, replace(_GPU, slowdowns=((5.0, math.inf, 8.0),))),
        ),
    }
)
