"""A discrete-event simulator of a heterogeneous cluster, to evaluate policies at scale.

Tasks arrive in waves of ``scenario.wave_size`` (as the pipeline batches them); each wave is
decided by the policy at the moment the first busy backend drains. Each backend runs its tasks
longest-predicted-first on its earliest free worker; a job that would start while other tenants
hold the backend (a busy window, a cloud queue) starts when they leave. Run times are the
scenario's true cost × any sharing slowdown × mean-one lognormal noise; an attempt fails with the
backend's failure probability and is retried there, then on the CPU after ``max_attempts``.
A task's realised error is the analytic error at its *start* time's true calibration × the
backend's true error scale.

The policy sees only what a cluster would give it (:meth:`_Backend.state`): the inventory, the
*published* calibration (never the drifted truth), and the jobs queued ahead (its own, which the
submitter knows, plus other tenants', from a scrape ``metrics_lag_seconds`` old) — never the
true wait. Telemetry rows reach a learning policy only once their task has finished; they carry
what a pipeline records (the wait it saw, the jobs ahead when it submitted, the published
calibration, the measured error). Work per task is O(log n): 10^5 tasks take seconds.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policy.interface import BackendState, CircuitFeatures, SelectionPolicy, TelemetryRow
from policy.models import analytic_error
from policy.scenarios import BackendSpec, Scenario


@dataclass
class SimResult:
    """What a simulated run produced."""

    makespan: float
    errors: np.ndarray  #: realised error per task (input order)
    backend_of: list[str]  #: backend that finally ran each task
    attempts: int
    rows: list[TelemetryRow] = field(default_factory=list)

    def tasks_per_backend(self) -> dict[str, int]:
        """How many tasks each backend finally ran."""
        out: dict[str, int] = {}
        for name in self.backend_of:
            out[name] = out.get(name, 0) + 1
        return out

    def budget_violations(self, budget: float) -> int:
        """Tasks whose realised error exceeds ``budget``."""
        return int(np.sum(self.errors > budget + 1e-12))


def make_tasks(scenario: Scenario, seed: int) -> list[CircuitFeatures]:
    """The scenario's subexperiments, with seeded per-subexperiment jitter of depth and 2q gates."""
    rng = np.random.default_rng(seed)
    tasks = []
    for part in scenario.partitions:
        d = rng.integers(-part.jitter, part.jitter + 1, size=part.count)
        g = rng.integers(-part.jitter, part.jitter + 1, size=part.count)
        for j in range(part.count):
            tasks.append(
                CircuitFeatures(
                    key=f"{scenario.name}-{part.label}-{j}",
                    num_qubits=part.num_qubits,
                    depth=max(1, part.depth + int(d[j])),
                    num_2q_gates=max(0, part.num_2q_gates + int(g[j])),
                    num_clbits=part.num_clbits,
                    shots=part.shots,
                    partition=part.label,
                )
            )
    return tasks


def true_seconds(tasks: Sequence[CircuitFeatures], spec: BackendSpec) -> np.ndarray:
    """Mean true run time of each task on ``spec`` (the cost model without noise)."""
    n = np.array([t.num_qubits for t in tasks], dtype=float)
    depth = np.array([t.depth for t in tasks], dtype=float)
    shots = np.array([t.shots for t in tasks], dtype=float)
    return spec.cost.seconds(n, depth, shots)


def true_error(tasks: Sequence[CircuitFeatures], spec: BackendSpec, t: float) -> np.ndarray:
    """Realised error of each task if it started on ``spec`` at time ``t``."""
    if spec.kind != "qpu":
        return np.zeros(len(tasks))
    f2q, fro = spec.calibration_at(t)
    return np.clip(analytic_error(tasks, "qpu", f2q or 1.0, fro or 1.0) * spec.error_scale, 0.0, 1.0)


def _scalar_error(task: CircuitFeatures, spec: BackendSpec, t: float) -> float:
    """:func:`true_error` for one task without numpy overhead (the simulator's inner loop)."""
    if spec.kind != "qpu":
        return 0.0
    f2q, fro = spec.calibration_at(t)
    measured = task.num_clbits or task.num_qubits
    prior = 1.0 - (f2q or 1.0) ** task.num_2q_gates * (fro or 1.0) ** measured
    return min(max(prior * spec.error_scale, 0.0), 1.0)


class _Backend:
    """Run-time state of one simulated backend."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.free = [0.0] * max(spec.workers, 1)  # worker free times (a heap)
        self.ends: list[float] = []  # sorted end times of every attempt submitted here

    def state(self, now: float, lag: float, epoch: float) -> BackendState:
        """What the policy may know at ``now``: inventory, published calibration, jobs ahead."""
        own = len(self.ends) - bisect.bisect_right(self.ends, now)
        return BackendState(
            name=self.spec.name,
            kind=self.spec.kind,
            workers=self.spec.workers,
            healthy=self.spec.healthy,
            max_qubits=self.spec.max_qubits,
            model=self.spec.model,
            fidelity_2q=self.spec.fidelity_2q,
            readout_fidelity=self.spec.readout_fidelity,
            queue_depth=own,
            external_queue_depth=self.spec.external_depth(max(now - lag, 0.0)),
            calibration_time=epoch if self.spec.kind == "qpu" else None,
        )

    def drained_at(self) -> float:
        return self.ends[-1] if self.ends else 0.0


def simulate(
    scenario: Scenario,
    policy: SelectionPolicy,
    *,
    seed: int = 0,
    tasks: Sequence[CircuitFeatures] | None = None,
    run_id: str = "sim",
    start_time: float = 0.0,
) -> SimResult:
    """Run ``tasks`` (default: the scenario's) through ``policy`` on the simulated cluster.

    The run starts at ``start_time`` (rows' ``ts`` are offset by it), right after the QPUs were
    calibrated: their published calibration is the scenario's, stamped ``start_time``.
    """
    rng = np.random.default_rng(seed + 7919)
    tasks = list(tasks) if tasks is not None else make_tasks(scenario, seed)
    backends = [_Backend(spec) for spec in scenario.backends]
    lag = scenario.metrics_lag_seconds
    by_name = {b.spec.name: b for b in backends}
    fallback = next((b for b in backends if b.spec.kind == "cpu"), backends[0])
    observe: Any = getattr(policy, "observe", None)
    now = 0.0
    if hasattr(policy, "clock"):
        policy.clock = lambda: start_time + now  # telemetry ts are simulated time
    errors = np.zeros(len(tasks))
    backend_of = [""] * len(tasks)
    rows: list[TelemetryRow] = []
    pending: list[tuple[float, int, TelemetryRow]] = []  # (end time, seq, row) not yet delivered
    attempts, seq = 0, 0

    def deliver(until: float) -> None:
        ready = []
        while pending and pending[0][0] <= until:
            ready.append(heapq.heappop(pending)[2])
        if ready and observe is not None:
            observe(ready)

    for lo in range(0, len(tasks), scenario.wave_size):
        wave = list(range(lo, min(lo + scenario.wave_size, len(tasks))))
        deliver(now)
        states = [b.state(now, lag, start_time) for b in backends]
        depth_seen = {s.name: s.queue_depth for s in states}
        others_seen = {s.name: s.external_queue_depth for s in states}
        decisions = policy.select([tasks[i] for i in wave], states)
        per_backend: dict[str, list[tuple[float, int, int]]] = {}
        for pos, (i, d) in enumerate(zip(wave, decisions, strict=True)):
            per_backend.setdefault(d.backend, []).append((-(d.predicted_seconds or 0.0), pos, i))
        used = []
        for name, items in per_backend.items():
            backend = by_name[name]
            items.sort()
            idx = [i for _, _, i in items]
            means = true_seconds([tasks[i] for i in idx], backend.spec)
            for ahead, (i, mean) in enumerate(zip(idx, means, strict=True), start=depth_seen[name]):
                run_on = backend
                for attempt in range(1, scenario.max_attempts + 2):
                    if attempt > scenario.max_attempts:
                        run_on = fallback  # retried on another backend, assumed to succeed there
                        mean = float(true_seconds([tasks[i]], run_on.spec)[0])
                    start = run_on.spec.busy_until(max(heapq.heappop(run_on.free), now))
                    sigma = run_on.spec.noise_sigma
                    slow = run_on.spec.slowdown_at(start)
                    actual = float(mean * slow * rng.lognormal(-sigma * sigma / 2, sigma))
                    ok = attempt > scenario.max_attempts or rng.random() >= run_on.spec.failure_prob
                    heapq.heappush(run_on.free, start + actual)
                    bisect.insort(run_on.ends, start + actual)
                    attempts += 1
                    err = _scalar_error(tasks[i], run_on.spec, start)
                    row: TelemetryRow = {
                        "ts": start_time + start,
                        "run_id": run_id,
                        "task_id": f"{run_id}-{i}-{attempt}",
                        "key": tasks[i].key,
                        "partition": tasks[i].partition,
                        "backend": run_on.spec.name,
                        "backend_kind": run_on.spec.kind,
                        "model": run_on.spec.model,
                        "num_qubits": tasks[i].num_qubits,
                        "depth": tasks[i].depth,
                        "num_2q_gates": tasks[i].num_2q_gates,
                        "num_clbits": tasks[i].num_clbits,
                        "shots": tasks[i].shots,
                        "batch_size": 1,
                        "queue_wait_seconds": start - now,
                        "queue_depth": ahead,
                        "external_queue_depth": others_seen[run_on.spec.name],
                        "run_seconds": actual,
                        "success": ok,
                        "error": None if ok else "simulated failure",
                        "attempt": attempt,
                        "fidelity_2q": run_on.spec.fidelity_2q,  # published, not the truth
                        "readout_fidelity": run_on.spec.readout_fidelity,
                        "calibration_time": start_time if run_on.spec.kind == "qpu" else None,
                        "observed_error": err * float(rng.lognormal(0.0, 0.05)) if ok else None,
                    }
                    rows.append(row)
                    heapq.heappush(pending, (start + actual, seq, row))
                    seq += 1
                    if ok:
                        errors[i] = err
                        backend_of[i] = run_on.spec.name
                        break
            used.append(backend)
        # the next wave is decided when the first backend that got work drains
        now = max(now, min(b.drained_at() for b in used))
    makespan = max((b.drained_at() for b in backends), default=0.0)
    deliver(float("inf"))
    return SimResult(makespan=makespan, errors=errors, backend_of=backend_of, attempts=attempts, rows=rows)
