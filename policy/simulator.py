"""A discrete-event simulator of a heterogeneous cluster, to evaluate policies at scale.

Tasks arrive in waves of ``scenario.wave_size`` (as the pipeline batches them); each wave is
decided by the policy at the moment the first busy backend drains, from the backends' state at
that moment (backlog as queue wait, current calibration, health). Each backend runs its tasks
longest-predicted-first on its earliest free worker; a QPU's first job waits its cloud queue.
Run times are the scenario's true cost × mean-one lognormal noise; an attempt fails with the
backend's failure probability and is retried there, then on the CPU after ``max_attempts``.
A task's realised error is the analytic error at its *start* time's calibration × the backend's
true error scale. Telemetry rows are delivered to a learning policy only once their task has
finished, so it never sees the future. Work per task is O(log workers): 10^5 tasks take seconds.
"""

from __future__ import annotations

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
        out: dict[str, int] = {}
        for name in self.backend_of:
            out[name] = out.get(name, 0) + 1
        return out

    def budget_violations(self, budget: float) -> int:
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
        self.free: list[float] | None = None  # worker free times, None until the first job

    def start_if_needed(self, now: float) -> None:
        if self.free is None:
            self.free = [now + self.spec.queue_wait_seconds] * max(self.spec.workers, 1)

    def state(self, now: float) -> BackendState:
        f2q, fro = self.spec.calibration_at(now)
        # The simulator knows the exact wait for a free worker, so it reports that and no queue
        # depth (a depth would make the policy add an estimated backlog on top).
        if self.free is None:
            wait = self.spec.queue_wait_seconds
        else:
            wait = max(min(self.free) - now, 0.0)
        return BackendState(
            name=self.spec.name,
            kind=self.spec.kind,
            workers=self.spec.workers,
            healthy=self.spec.healthy,
            max_qubits=self.spec.max_qubits,
            model=self.spec.model,
            fidelity_2q=f2q,
            readout_fidelity=fro,
            queue_wait_seconds=wait,
        )

    def drained_at(self) -> float:
        return max(self.free) if self.free else 0.0


def simulate(
    scenario: Scenario,
    policy: SelectionPolicy,
    *,
    seed: int = 0,
    tasks: Sequence[CircuitFeatures] | None = None,
    run_id: str = "sim",
) -> SimResult:
    """Run ``tasks`` (default: the scenario's) through ``policy`` on the simulated cluster."""
    rng = np.random.default_rng(seed + 7919)
    tasks = list(tasks) if tasks is not None else make_tasks(scenario, seed)
    backends = [_Backend(spec) for spec in scenario.backends]
    by_name = {b.spec.name: b for b in backends}
    fallback = next((b for b in backends if b.spec.kind == "cpu"), backends[0])
    observe: Any = getattr(policy, "observe", None)
    errors = np.zeros(len(tasks))
    backend_of = [""] * len(tasks)
    rows: list[TelemetryRow] = []
    pending: list[tuple[float, int, TelemetryRow]] = []  # (end time, seq, row) not yet delivered
    attempts, now, seq = 0, 0.0, 0

    def deliver(until: float) -> None:
        ready = []
        while pending and pending[0][0] <= until:
            ready.append(heapq.heappop(pending)[2])
        if ready and observe is not None:
            observe(ready)

    for lo in range(0, len(tasks), scenario.wave_size):
        wave = list(range(lo, min(lo + scenario.wave_size, len(tasks))))
        deliver(now)
        states = [b.state(now) for b in backends]
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
            for i, mean in zip(idx, means, strict=True):
                run_on = backend
                for attempt in range(1, scenario.max_attempts + 2):
                    if attempt > scenario.max_attempts:
                        run_on = fallback  # retried on another backend, assumed to succeed there
                        mean = float(true_seconds([tasks[i]], run_on.spec)[0])
                    run_on.start_if_needed(now)
                    assert run_on.free is not None
                    start = max(heapq.heappop(run_on.free), now)
                    sigma = run_on.spec.noise_sigma
                    actual = float(mean * rng.lognormal(-sigma * sigma / 2, sigma))
                    ok = attempt > scenario.max_attempts or rng.random() >= run_on.spec.failure_prob
                    heapq.heappush(run_on.free, start + actual)
                    attempts += 1
                    err = _scalar_error(tasks[i], run_on.spec, start)
                    f2q, fro = run_on.spec.calibration_at(start)
                    row: TelemetryRow = {
                        "ts": start,
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
                        "queue_wait_seconds": run_on.spec.queue_wait_seconds,
                        "run_seconds": actual,
                        "success": ok,
                        "error": None if ok else "simulated failure",
                        "attempt": attempt,
                        "fidelity_2q": f2q,
                        "readout_fidelity": fro,
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
