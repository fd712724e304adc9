"""A discrete-event simulator of a heterogeneous cluster that runs the pipeline's own loop.

The scheduling is not simulated: it is :class:`policy.loop.SchedulingLoop`, the loop the
pipeline's executor runs. Only the backends are simulated, on a virtual clock: whenever workers
are free the loop re-plans and dispatches batches; a worker runs its batch's subexperiments one
after another, and a job that would start while other tenants hold the backend (a busy window, a
cloud queue) starts when they leave. Run times are the scenario's true cost × any sharing
slowdown × mean-one lognormal noise; a batch fails with the backend's per-job failure probability
(as a real batch does: all or nothing), and so does one running when its backend goes down (a
``down_windows`` span: the backend is then offered as unhealthy and serves nothing); the loop
re-plans their subexperiments. A task's
realised error is the analytic error at its *start* time's true calibration × the backend's true
error scale.

The policy sees only what the pipeline can see (:meth:`_Backend.state` and the rows written when
a batch ends, the same :class:`~policy.interface.BackendState` and
:class:`~policy.interface.TelemetryRow` types):

* the inventory and the *published* calibration (never the drifted truth), stamped with the
  calibration's time;
* our own in-flight work (the loop counts it) and other tenants' jobs from a queue-depth scrape
  ``metrics_lag_seconds`` old, whose jobs have random lengths, so depth does not encode the wait;
* per batch, the wait before it started and an equal share of its run time per subexperiment
  (the pipeline times batches, not subexperiments);
* a measured error once per QPU batch, as the pipeline's probes measure it: the exact probe
  where the batch has subexperiments of at most
  :data:`~policy.interface.OBSERVED_ERROR_MAX_WIDTH` qubits plus clbits (their true mean error,
  5 % measurement noise); else the mirror probe (:mod:`policy.probe`): the job ends with a
  mirror circuit of its subexperiment with the most two-qubit gates, which takes QPU time like
  any circuit (twice the depth, the job's shots), whose ``0…0`` reads are drawn binomially from
  its *true* error at its start time (the same truth model applied to the mirror circuit), and
  which :func:`policy.probe.mirror_error` converts, with the published calibration, as the
  pipeline does.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from policy.interface import (
    OBSERVED_ERROR_MAX_WIDTH,
    BackendState,
    CircuitFeatures,
    SelectionPolicy,
    TelemetryRow,
)
from policy.loop import Dispatch, LoopSettings, SchedulingLoop
from policy.models import analytic_error
from policy.probe import (
    EXACT_PROBE,
    MIRROR_PROBE,
    mirror_error,
    mirror_features,
    mirrored_index,
)
from policy.scenarios import BackendSpec, Scenario


@dataclass
class SimResult:
    """What a simulated run produced."""

    makespan: float
    errors: np.ndarray  #: realised error per task (input order)
    backend_of: list[str]  #: backend that finally ran each task
    attempts: int
    rows: list[TelemetryRow] = field(default_factory=list)
    replans: int = 0
    refits: int = 0

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

    def __init__(self, spec: BackendSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.free = max(spec.workers, 1)
        self.drained = 0.0
        self._rng = rng
        self._scrapes: dict[int, int] = {}

    def external_depth(self, t: float) -> int:
        """Other tenants' jobs ahead at ``t`` as a queue metric shows them.

        Their jobs have random lengths (exponential around ``external_job_seconds``), so the
        depth says roughly, never exactly, how long the wait is.
        """
        wait = self.spec.busy_until(t) - t
        if wait <= 0:
            return 0
        bucket = int(t // 15.0)  # one draw per scrape interval
        if bucket not in self._scrapes:
            mean = wait / self.spec.external_job_seconds
            self._scrapes[bucket] = max(1, int(self._rng.poisson(mean)))
        return self._scrapes[bucket]

    def state(self, now: float, lag: float, epoch: float) -> BackendState:
        """What the pipeline can know at ``now``: inventory, published calibration, others' queue."""
        return BackendState(
            name=self.spec.name,
            kind=self.spec.kind,
            workers=self.spec.workers,
            healthy=self.spec.healthy and not self.spec.down_at(max(now - lag, 0.0)),
            max_qubits=self.spec.max_qubits,
            model=self.spec.model,
            fidelity_2q=self.spec.fidelity_2q,
            readout_fidelity=self.spec.readout_fidelity,
            external_queue_depth=self.external_depth(max(now - lag, 0.0)),
            calibration_time=epoch if self.spec.kind == "qpu" else None,
        )


def simulate(
    scenario: Scenario,
    policy: SelectionPolicy,
    *,
    seed: int = 0,
    tasks: Sequence[CircuitFeatures] | None = None,
    run_id: str = "sim",
    start_time: float = 0.0,
    settings: LoopSettings | None = None,
) -> SimResult:
    """Run ``tasks`` (default: the scenario's) through ``policy``'s scheduling loop on the cluster.

    The run starts at ``start_time`` (rows' ``ts`` are offset by it), right after the QPUs were
    calibrated: their published calibration is the scenario's, stamped ``start_time``.
    ``settings`` default to the scenario's batch size and attempts and the loop's cadence.
    """
    rng = np.random.default_rng(seed + 7919)
    tasks = list(tasks) if tasks is not None else make_tasks(scenario, seed)
    index = {t.key: i for i, t in enumerate(tasks)}
    backends = [
        _Backend(spec, np.random.default_rng(seed + 31 * k)) for k, spec in enumerate(scenario.backends)
    ]
    by_name = {b.spec.name: b for b in backends}
    lag = scenario.metrics_lag_seconds
    now = 0.0
    if hasattr(policy, "clock"):
        policy.clock = lambda: start_time + now  # telemetry ts are simulated time
    settings = settings or LoopSettings(batch_size=scenario.wave_size, max_attempts=10**6)
    loop = SchedulingLoop(policy, tasks, settings)
    errors = np.zeros(len(tasks))
    backend_of = [""] * len(tasks)
    rows: list[TelemetryRow] = []
    events: list[tuple[float, int, Dispatch, bool, list[TelemetryRow]]] = []
    attempts = 0

    def run(dispatch: Dispatch, seen: BackendState) -> None:
        nonlocal attempts
        backend = by_name[dispatch.backend]
        spec = backend.spec
        backend.free -= 1
        idx = [index[k] for k in dispatch.keys]
        means = true_seconds([tasks[i] for i in idx], spec)
        t = started = spec.available_at(now)
        failed_at = None
        starts = []
        sigma = spec.noise_sigma
        for mean in means:
            t = spec.busy_until(t)
            starts.append(t)
            t += float(mean * spec.slowdown_at(t) * rng.lognormal(-sigma * sigma / 2, sigma))
        probe = [
            j
            for j, i in enumerate(idx)
            if tasks[i].num_qubits + tasks[i].num_clbits <= OBSERVED_ERROR_MAX_WIDTH
        ]
        # Too wide for the exact probe: the job ends with a mirror circuit (policy.probe), run
        # and paid for whatever the policy. A probe-only job (the loop's error probe) is that
        # mirror alone, of the subexperiment it names.
        mirrored = mirror = target = None
        if spec.kind == "qpu" and not probe:
            mirrored = mirrored_index([tasks[i] for i in idx]) if idx else 0
            target = dispatch.probe if dispatch.probe is not None else tasks[idx[mirrored]]
            mirror = mirror_features(target)
            mirror_start = t = spec.busy_until(t)
            mirror_mean = float(true_seconds([mirror], spec)[0])
            t += mirror_mean * spec.slowdown_at(t) * float(rng.lognormal(-sigma * sigma / 2, sigma))
        if rng.random() < spec.failure_prob:  # the job fails part-way: nothing of it is kept
            failed_at = started + (t - started) * float(rng.random())
        # the backend goes down while the job runs: the job fails then (all or nothing)
        went_down = min((a for a, _ in spec.down_windows if started < a < t), default=None)
        if went_down is not None and (failed_at is None or went_down < failed_at):
            failed_at = went_down
        end = t if failed_at is None else failed_at
        attempts += len(idx)
        ok = failed_at is None
        share = (end - started) / max(len(idx), 1)
        observed, observed_at, probe_kind = None, 0, EXACT_PROBE
        if ok and probe and spec.kind == "qpu":
            true = float(np.mean([_scalar_error(tasks[idx[j]], spec, starts[j]) for j in probe]))
            observed = true * float(rng.lognormal(0.0, 0.05))
        elif ok and mirror is not None and mirrored is not None and target is not None:
            # the mirror's true error at its start, then binomial shot noise on its 0…0 reads
            survival = 1.0 - _scalar_error(mirror, spec, mirror_start)
            reads = int(rng.binomial(mirror.shots, survival)) / max(mirror.shots, 1)
            observed = mirror_error(
                reads,
                mirror.num_qubits,
                target,
                spec.fidelity_2q or 1.0,  # published, as the pipeline knows it
                spec.readout_fidelity or 1.0,
                seen.mitigation,
            )
            observed_at, probe_kind = mirrored, MIRROR_PROBE
        batch_rows: list[TelemetryRow] = []
        for j, i in enumerate(idx):
            row: TelemetryRow = {
                "ts": start_time + started,
                "run_id": run_id,
                "task_id": f"{run_id}-{dispatch.seq}/{i}",
                "key": tasks[i].key,
                "partition": tasks[i].partition,
                "backend": spec.name,
                "backend_kind": spec.kind,
                "model": spec.model,
                "num_qubits": tasks[i].num_qubits,
                "depth": tasks[i].depth,
                "num_2q_gates": tasks[i].num_2q_gates,
                "num_clbits": tasks[i].num_clbits,
                "shots": tasks[i].shots,
                "batch_size": len(idx),
                "queue_wait_seconds": started - now,
                "queue_depth": seen.queue_depth,
                "external_queue_depth": seen.external_queue_depth,
                "run_seconds": share if ok else 0.0,
                "success": ok,
                "error": None if ok else "simulated failure",
                "attempt": loop.attempts.get(tasks[i].key, 1),
                "fidelity_2q": spec.fidelity_2q,  # published, not the truth
                "readout_fidelity": spec.readout_fidelity,
                "calibration_time": seen.calibration_time,
                # one measurement per probe: one row carries it (the mirrored subexperiment's)
                "observed_error": observed if j == observed_at else None,
            }
            if observed is not None and j == observed_at:
                row["probe"] = probe_kind
            batch_rows.append(row)
            if ok:
                errors[i] = _scalar_error(tasks[i], spec, starts[j])
                backend_of[i] = spec.name
        if dispatch.probe is not None:  # the probe-only job's one row: no subexperiment ran
            task = dispatch.probe
            row = {
                "ts": start_time + started, "run_id": run_id,
                "task_id": f"{run_id}-{dispatch.seq}/probe", "key": task.key,
                "partition": task.partition, "backend": spec.name, "backend_kind": spec.kind,
                "model": spec.model, "num_qubits": task.num_qubits, "depth": task.depth,
                "num_2q_gates": task.num_2q_gates, "num_clbits": task.num_clbits,
                "shots": task.shots, "batch_size": 0, "queue_wait_seconds": started - now,
                "queue_depth": seen.queue_depth, "external_queue_depth": seen.external_queue_depth,
                "run_seconds": end - started, "success": ok,
                "error": None if ok else "simulated failure", "attempt": 1,
                "fidelity_2q": spec.fidelity_2q, "readout_fidelity": spec.readout_fidelity,
                "calibration_time": seen.calibration_time, "observed_error": observed,
                "probe_only": True,
            }  # fmt: skip
            if observed is not None:
                row["probe"] = MIRROR_PROBE
            batch_rows.append(row)  # type: ignore[arg-type]
        rows.extend(batch_rows)
        heapq.heappush(events, (end, dispatch.seq, dispatch, ok, batch_rows))

    while not loop.done:
        states = [b.state(now, lag, start_time) for b in backends]
        free = {b.spec.name: b.free for b in backends}
        dispatched = loop.dispatch(states, free)
        if dispatched:
            seen = {s.name: s for s in loop.observed_states(states)}
            for dispatch in dispatched:
                run(dispatch, seen[dispatch.backend])
        if not events:
            break
        now = max(now, events[0][0])
        # everything that ends at this instant is delivered before the next re-plan
        while events and events[0][0] <= now:
            end, _, dispatch, ok, batch_rows = heapq.heappop(events)
            backend = by_name[dispatch.backend]
            backend.free += 1
            backend.drained = max(backend.drained, end)
            if ok:
                loop.complete(dispatch.seq, batch_rows)
            else:
                loop.fail(dispatch.seq, "simulated failure", batch_rows)
    makespan = max((b.drained for b in backends), default=0.0)
    return SimResult(
        makespan=makespan,
        errors=errors,
        backend_of=backend_of,
        attempts=attempts,
        rows=rows,
        replans=loop.replans,
        refits=loop.refits,
    )
