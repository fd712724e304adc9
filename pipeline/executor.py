"""The embedded local executor: the run's DAG on this machine, one worker pool per backend.

generate → execute (batches in parallel, per backend pool) → reconstruct. A failed batch is
retried; once its backend has failed twice in a row it is marked unhealthy and the batch moves
to another backend that fits. Every result is stored as it arrives, so a killed run loses at most
the batches in flight, and re-running with the same run directory does only what is missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from qiskit import QuantumCircuit

from pipeline import metrics
from pipeline.backends.base import Backend
from pipeline.backends.factory import available_backends
from pipeline.config import RunConfig
from pipeline.errors import PipelineError, RunTerminated, StorageError
from pipeline.planning import Batch
from pipeline.runlock import run_dir_lock
from pipeline.stages import (
    BatchOutcome,
    CostEstimate,
    CutTemplate,
    Manifest,
    execute_batch,
    plan_pending,
    policy_for,
    prepare,
    reconstruct,
)
from pipeline.store import ArtifactStore, write_json
from pipeline.termination import terminate_on_sigterm
from pipeline.timing import StageClock
from policy import metrics as policy_metrics
from qubelet import klog

log = klog.get_logger("qubelet.pipeline")

#: consecutive failures after which a backend is considered unhealthy for the rest of the run
UNHEALTHY_AFTER = 2


class ProgressSink(Protocol):
    """Where progress goes (a tqdm bar in the CLI, nothing in tests)."""

    def start(self, total: int) -> None:
        """Start showing progress for ``total`` subexperiments."""

    def advance(self, done: int) -> None:
        """Report ``done`` finished subexperiments."""

    def close(self) -> None:
        """Stop showing progress."""


class NoProgress:
    """Progress that shows nothing (no terminal, tests)."""

    def start(self, total: int) -> None:
        """Ignore the total."""
        pass

    def advance(self, done: int) -> None:
        """Ignore progress."""
        pass

    def close(self) -> None:
        """Nothing to close."""
        pass


@dataclass
class TimelineEvent:
    """One batch attempt, for the Gantt chart and the summary."""

    batch: str
    backend: str
    kind: str
    start: float
    end: float
    tasks: int
    success: bool


@dataclass
class _BackendHealth:
    consecutive_failures: int = 0
    healthy: bool = True


@dataclass
class ExecutionReport:
    """What the executor did: per backend the tasks and seconds, and what failed or was skipped."""

    events: list[TimelineEvent] = field(default_factory=list)
    retried: int = 0
    moved: int = 0


class LocalExecutor:
    """Runs a :class:`RunConfig` end to end on in-process backends."""

    def __init__(
        self,
        config: RunConfig,
        backends: Sequence[Backend] | None = None,
        progress: ProgressSink | None = None,
        lock_wait: float = 0.0,
        *,
        circuit: QuantumCircuit | None = None,
        template: CutTemplate | None = None,
        parameter_values: dict[str, float] | None = None,
        announce: Callable[[CostEstimate], None] | None = None,
    ) -> None:
        self.config = config
        self.lock_wait = lock_wait
        self._prepare_args: dict[str, Any] = {
            "circuit": circuit,
            "template": template,
            "parameter_values": parameter_values,
            "announce": announce,
        }
        self.store = ArtifactStore(config.run_dir)
        if backends is None:
            built, self.unavailable = available_backends(
                config.backends,
                qpu_spec=config.qpu_backend,
                cpu_workers=config.cpu_workers,
                mitigation=config.mitigation_config(),
            )
            self.backends: dict[str, Backend] = {b.name: b for b in built}
        else:
            self.backends = {b.name: b for b in backends}
            self.unavailable = {}
        self.health = {name: _BackendHealth() for name in self.backends}
        # Every series exists (at zero) from here on, before the run waits for its lock:
        # a scrape in between gives rate()/increase() the zero they count from.
        for name, backend in self.backends.items():
            metrics.DEFAULT.init_backend(name, backend.kind)
        metrics.DEFAULT.init_run()
        policy_metrics.init_decisions(config.policy, {(b.kind, name) for name, b in self.backends.items()})
        self.progress: ProgressSink = progress or NoProgress()
        self._lock = threading.Lock()
        #: keys whose stored result was invalid and is recomputed by this run -> why
        self.invalid: dict[str, str] = {}

    @property
    def manifest(self) -> Manifest:
        """The run's manifest, once :meth:`run` has prepared it."""
        return self._manifest

    # --- planning -------------------------------------------------------------------------
    def plan(self, manifest: Manifest) -> list[Batch]:
        """Decide a backend for each subexperiment and group the decisions into batches."""
        states = [backend.state() for backend in self.backends.values()]
        for name in self.backends:
            metrics.BACKEND_UP.labels(name).set(1)
        self._policy = policy_for(self.config)
        plan = plan_pending(manifest, states, self.unavailable, self._policy)
        self.invalid = plan.invalid
        return plan.batches

    def _fallback_for(self, batch: Batch, failed_backend: str) -> Backend | None:
        """A healthy backend that fits the batch: its own first, then simulators, then QPUs."""
        own = self.backends.get(failed_backend)
        if own is not None and self.health[failed_backend].healthy:
            return own
        width = 0
        for key in batch.keys:
            width = max(width, self._manifest.features[key].num_qubits)
        order = {"cpu": 0, "gpu": 1, "qpu": 2}
        candidates = sorted(
            (b for name, b in self.backends.items() if self.health[name].healthy),
            key=lambda b: order.get(b.kind, 3),
        )
        for backend in candidates:
            max_qubits = backend.state().max_qubits
            if max_qubits is None or width <= max_qubits:
                return backend
        return None

    # --- execution ------------------------------------------------------------------------
    def _run_one(self, batch: Batch, backend: Backend, queued_at: float, attempt: int) -> BatchOutcome:
        metrics.QUEUE_WAIT.labels(backend.name).observe(max(0.0, time.time() - queued_at))
        return execute_batch(
            self.config.run_dir, batch, backend, queued_at=queued_at, attempt=attempt, manifest=self._manifest
        )

    def execute(self, batches: Sequence[Batch]) -> ExecutionReport:
        """Run ``batches`` on their backends' worker pools, retrying failed ones elsewhere."""
        report = ExecutionReport()
        pools = {
            name: ThreadPoolExecutor(max_workers=max(1, b.state().workers), thread_name_prefix=name)
            for name, b in self.backends.items()
        }
        attempts: dict[str, int] = {}
        in_flight: dict[Future[BatchOutcome], tuple[Batch, Backend, float]] = {}
        failed: list[tuple[Batch, str]] = []

        def submit(batch: Batch, backend: Backend) -> None:
            attempts[batch.id] = attempts.get(batch.id, 0) + 1
            queued_at = time.time()
            metrics.QUEUE_DEPTH.labels(backend.name).inc()
            future = pools[backend.name].submit(self._run_one, batch, backend, queued_at, attempts[batch.id])
            in_flight[future] = (batch, backend, queued_at)

        try:
            for batch in batches:
                backend = self.backends.get(batch.backend)
                if backend is None:
                    raise PipelineError(f"plan names backend {batch.backend!r}, which this run does not have")
                submit(batch, backend)
            while in_flight:
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for future in done:
                    batch, backend, _queued = in_flight.pop(future)
                    metrics.QUEUE_DEPTH.labels(backend.name).dec()
                    error = future.exception()
                    if error is None:
                        outcome = future.result()
                        self._record_success(batch, backend, outcome, report)
                        continue
                    if isinstance(error, StorageError):
                        # The run directory, not the backend, failed: no retry can help.
                        raise error
                    self._record_failure(batch, backend, error, report)
                    if attempts[batch.id] >= self.config.max_attempts:
                        failed.append((batch, f"{type(error).__name__}: {error}"))
                        continue
                    target = self._fallback_for(batch, backend.name)
                    if target is None:
                        failed.append((batch, "no healthy backend left that fits it"))
                        continue
                    report.retried += 1
                    if target.name != backend.name:
                        report.moved += 1
                        log.warning("moving batch", batch=batch.id, src=backend.name, dst=target.name)
                    metrics.TASKS.labels(backend.name, "retried").inc(len(batch.keys))
                    submit(batch, target)
        except RunTerminated as stop:
            stop.cancelled = self._cancel_in_flight()
            raise
        finally:
            for pool in pools.values():
                pool.shutdown(wait=True, cancel_futures=True)
        if failed:
            lost = sum(len(b.keys) for b, _ in failed)
            first_batch, reason = failed[0]
            raise PipelineError(
                f"{lost} subexperiments in {len(failed)} batches failed after retries "
                f"(first: {first_batch.id}: {reason}); results so far are kept, rerun with "
                f"--run-dir {self.config.run_dir} to resume"
            )
        return report

    def _cancel_in_flight(self) -> list[str]:
        """Ask every backend that runs jobs on a server to cancel the ones in flight."""
        cancelled: list[str] = []
        for backend in self.backends.values():
            cancel = getattr(backend, "cancel_in_flight", None)
            if cancel is not None:
                cancelled.extend(cancel())
        return cancelled

    def _record_success(
        self, batch: Batch, backend: Backend, outcome: BatchOutcome, report: ExecutionReport
    ) -> None:
        with self._lock:
            health = self.health[backend.name]
            health.consecutive_failures = 0
        executed = len(outcome.executed)
        report.events.append(
            TimelineEvent(
                batch.id, backend.name, backend.kind, outcome.started, outcome.finished, executed, True
            )
        )
        metrics.record_batch(
            backend.name, backend.kind, outcome.finished - outcome.started, executed, len(outcome.skipped)
        )
        self.progress.advance(executed + len(outcome.skipped))
        # A learning policy sees what its predictions turned into (prediction-error metric).
        observe = getattr(self._policy, "observe", None)
        if observe is not None and outcome.telemetry:
            with self._lock:
                observe(outcome.telemetry, refit=False)

    def _record_failure(
        self, batch: Batch, backend: Backend, error: BaseException, report: ExecutionReport
    ) -> None:
        now = time.time()
        with self._lock:
            health = self.health[backend.name]
            health.consecutive_failures += 1
            if health.consecutive_failures >= UNHEALTHY_AFTER and health.healthy:
                health.healthy = False
                metrics.BACKEND_UP.labels(backend.name).set(0)
                log.warning("backend marked unhealthy", backend=backend.name)
        log.warning(
            "batch failed", batch=batch.id, backend=backend.name, err=f"{type(error).__name__}: {error}"
        )
        metrics.TASKS.labels(backend.name, "failed").inc(len(batch.keys))
        report.events.append(
            TimelineEvent(batch.id, backend.name, backend.kind, now, now, len(batch.keys), False)
        )
        self.store.append_telemetry(
            [
                {
                    "ts": now,
                    "run_id": self._manifest.run_id,
                    "task_id": f"{batch.id}/{key[:12]}",
                    "key": key,
                    "backend": backend.name,
                    "backend_kind": backend.kind,
                    "num_qubits": self._manifest.features[key].num_qubits,
                    "depth": self._manifest.features[key].depth,
                    "num_2q_gates": self._manifest.features[key].num_2q_gates,
                    "shots": self.config.shots,
                    "batch_size": len(batch.keys),
                    "queue_wait_seconds": 0.0,
                    "run_seconds": 0.0,
                    "success": False,
                    "error": type(error).__name__,
                    "attempt": 0,
                }
                for key in batch.keys
            ]
        )

    # --- the whole DAG --------------------------------------------------------------------
    def run(self, clock: StageClock | None = None) -> tuple[dict[str, Any], ExecutionReport]:
        """Cut, plan, execute and reconstruct, holding the run directory's lock throughout.

        ``clock`` carries the stages already timed by the caller (the CLI's start-up, the API's
        cut) and its origin, when the user's wait began; the run adds its own stages to it and
        the summary's wall time counts from that origin. Without it, from this call.

        Raises:
            RunDirBusyError: another run holds the run directory (after ``lock_wait`` seconds).
            StorageError: the run directory cannot be written.
            PipelineError: bad input, or batches that failed on every attempt.
        """
        clock = clock or StageClock()
        if not self.backends:
            raise PipelineError("no usable backend: " + "; ".join(self.unavailable.values()))
        with run_dir_lock(self.config.run_dir, wait_seconds=self.lock_wait), terminate_on_sigterm():
            return self._run_locked(clock)

    def _run_locked(self, clock: StageClock) -> tuple[dict[str, Any], ExecutionReport]:
        with clock.stage("cut"):
            self._manifest = prepare(self.config, **self._prepare_args)
        with clock.stage("plan"):
            batches = self.plan(self._manifest)
        self.progress.start(sum(len(b.keys) for b in batches))
        try:
            with clock.stage("execute"):
                report = self.execute(batches)
        finally:
            self.progress.close()
        with clock.stage("reconstruct"):
            summary = reconstruct(self.config.run_dir, wall_seconds=clock.wall_seconds())
        summary["unavailable_backends"] = self.unavailable
        summary["retried_batches"] = report.retried
        summary["moved_batches"] = report.moved
        summary["resumed_subexperiments"] = len(self._manifest.cut.unique_keys()) - sum(
            len(b.keys) for b in batches
        )
        summary["recomputed_invalid"] = dict(self.invalid)
        summary["backend_names"] = sorted(self.backends)
        wall = clock.wall_seconds()
        summary["wall_seconds"] = round(wall, 4)
        summary["timing"] = clock.to_json()
        write_json(self.store.summary_path, summary)
        write_json(
            self.config.run_dir / "timeline.json",
            [event.__dict__ for event in report.events],
        )
        metrics.RUNS.labels("succeeded").inc()
        metrics.RUN_DURATION.set(wall)
        return summary, report
