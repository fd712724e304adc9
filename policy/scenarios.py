"""Simulated clusters and workloads, as data (the built-ins are files: ``policy.scenario_files``).

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
    #: ``(start, end)`` spans when the backend is down (reported not up): offered as unhealthy,
    #: it serves nothing until the span ends (a replayed Prometheus range fills these)
    down_windows: tuple[tuple[float, float], ...] = ()

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

    def down_at(self, t: float) -> bool:
        """Whether the backend is down at ``t`` (within one of ``down_windows``)."""
        return any(start <= t < end for start, end in self.down_windows)

    def available_at(self, t: float) -> float:
        """The earliest time at or after ``t`` when the backend is up and others have left it."""
        while True:
            later = self.busy_until(t)
            later = next((end for start, end in self.down_windows if start <= later < end), later)
            if later == t:
                return t
            t = later

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


def _builtins() -> dict[str, Scenario]:
    from policy.scenario_files import builtin_scenarios  # needs the classes above

    return builtin_scenarios()


#: The built-in scenarios, read from their files (``policy/builtin_scenarios/*.yaml``): the
#: paper's cut (``paper``), a cloud queue, a calibration step, wide partitions, four where
#: the choice matters and only learning reveals the truth (``qpu_only_wide``,
#: ``queue_comes_and_goes``, ``drift_gradual``, ``shared_gpu``), and two where the published
#: calibration misjudges the QPU's error (``calibration_optimistic``, ``calibration_pessimistic``).
SCENARIOS: dict[str, Scenario] = _builtins()
