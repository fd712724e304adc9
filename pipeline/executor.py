"""The embedded local executor: the run's DAG on this machine, one worker pool per backend.

generate → execute → reconstruct. Execution is the policy's scheduling loop
(:class:`policy.loop.SchedulingLoop`, the loop ``qubelet policy eval`` simulates): whenever
workers are free the loop re-plans every subexperiment not yet dispatched from the backends'
current state and what this run has learned so far, and hands each free worker a batch; as
batches finish their telemetry feeds the policy, refit at the loop's cadence. A failed batch's
subexperiments are re-planned; once a backend has failed twice in a row it is offered as
unhealthy and the work moves elsewhere. Every result is stored as it arrives, so a killed run
loses at most the batches in flight, and re-running with the same run directory does only what
is missing.
"""

from __future__ import annotations

import sys
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
from pipeline.planning import Batch, Plan, batch_decisions, decision_record, loop_settings_for
from pipeline.report import BUILD_EVENT
from pipeline.runlock import run_dir_lock
from pipeline.stages import (
    BatchOutcome,
    CostEstimate,
    CutTemplate,
    Manifest,
    budget_of,
    execute_batch,
    execute_probe,
    policy_for,
    prepare,
    reconstruct,
    results_to_compute,
)
from pipeline.store import ArtifactStore, write_json
from pipeline.termination import terminate_on_sigterm
from pipeline.timing import StageClock
from policy import metrics as policy_metrics
from policy.interface import BackendState, NoUsableBackendError, TelemetryRow
from policy.loop import UNHEALTHY_AFTER, Dispatch, LoopSettings, SchedulingLoop
from qubelet import klog

log = klog.get_logger("qubelet.pipeline")

#: seconds between rewrites of plan.json while the loop dispatches (and once at the end)
PLAN_WRITE_INTERVAL = 1.0


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
    """One batch attempt (or a backend's build, ``pipeline.report.BUILD_EVENT``), for the Gantt chart."""

    batch: str
    backend: str
    kind: str
    start: float
    end: float
    tasks: int
    success: bool


@dataclass
class ExecutionReport:
    """What the executor did: per backend the tasks and seconds, and what failed or was skipped."""

    events: list[TimelineEvent] = field(default_factory=list)
    retried: int = 0
    moved: int = 0


class StateSignal(Protocol):
    """A live source of what the backends' own states cannot know (the cluster's view)."""

    def apply(self, states: Sequence[BackendState]) -> list[BackendState]:
        """``states`` with this source's word on their health and queues."""
        ...


def live_signals(config: RunConfig) -> list[StateSignal]:
    """The cluster's signals the run asked for, applied to the backends' states at every re-plan.

    ``--prometheus URL``: health and Kueue queues from Prometheus (:mod:`policy.live`);
    ``--cluster-health``: QPU device taints from ResourceSlices (:mod:`policy.cluster_health`),
    through ``--kubeconfig`` or the pod's service account.

    Raises:
        UsageError: ``--cluster-health`` and no usable Kubernetes configuration (one line).
    """
    signals: list[StateSignal] = []
    if config.prometheus:
        from policy.live import LiveSignals
        from policy.telemetry_sources import PrometheusSource

        signals.append(LiveSignals(PrometheusSource(config.prometheus)))
    if config.cluster_health:
        from policy.cluster_health import ClusterHealth, SliceReader
        from qubelet.kube import load_kube_client

        kubeconfig = str(config.kubeconfig) if config.kubeconfig is not None else None
        signals.append(ClusterHealth(SliceReader(load_kube_client(kubeconfig, retries=False))))
    return signals


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
        #: subexperiments dispatched with a predicted error over the budget (no backend met it)
        self.over_budget: set[str] = set()
        self._warned_budget = False
        #: what the cluster says about the backends, applied at every re-plan
        self.signals = live_signals(config)

    @property
    def manifest(self) -> Manifest:
        """The run's manifest, once :meth:`run` has prepared it."""
        return self._manifest

    # --- planning ---------------------------------------------------------------------------
    def plan(self, manifest: Manifest) -> list[str]:
        """The subexperiments this run computes (invalid stored results set aside); the policy.

        Where each one runs is decided by the scheduling loop as execution goes (:meth:`execute`).
        """
        for name in self.backends:
            metrics.BACKEND_UP.labels(name).set(1)
        self._policy = policy_for(self.config)
        pending, self.invalid = results_to_compute(self.store, manifest, manifest.cut.unique_keys())
        return pending

    def loop_settings(self) -> LoopSettings:
        """The loop's cadence for this run.

        Batch size and attempts come from the run config, the rest from the admin's policy
        config when the policy has one.
        """
        return loop_settings_for(self.config, self._policy)

    def _write_plan(
        self,
        loop: SchedulingLoop,
        batches: Sequence[Batch],
        decided_under: dict[str, list[BackendState]],
    ) -> None:
        """plan.json: the batches dispatched so far and every decision with its alternatives.

        Each decision's candidates are described as the policy saw them when it made it
        (``decided_under``): a QPU unhealthy then says why it lost, even if it recovered later.
        """
        budget = budget_of(self._policy)
        plan = Plan(
            run_id=self._manifest.run_id,
            policy=self.config.policy,
            batches=list(batches),
            decisions={
                key: decision_record(d, decided_under.get(key, ()), budget)
                for key, d in loop.decisions.items()
            },
            unavailable=dict(self.unavailable),
            invalid=dict(self.invalid),
        )
        data = plan.to_json()
        data["error_budget"] = budget
        data["loop"] = {"replans": loop.replans, "refits": loop.refits, **loop.settings.__dict__}
        write_json(self.store.plan_path, data)

    def _check_budget(self, dispatched: Sequence[Dispatch]) -> None:
        """Warn (once) or, with ``--require-budget``, refuse when a decision breaks the budget.

        The policy takes the least-error backend when none is predicted within the budget (a run
        must not stall); the user hears of it on the console and in summary.json.
        """
        budget = budget_of(self._policy)
        if budget is None:
            return
        over = [
            d
            for dispatch in dispatched
            for d in dispatch.decisions
            if d.predicted_error is not None and d.predicted_error > budget + 1e-12
        ]
        if not over:
            return
        least = min(over, key=lambda d: d.predicted_error or 0.0)
        message = (
            f"error budget {budget} not met: no backend is predicted within it for {len(over)} "
            f"subexperiments (least error {least.predicted_error:.3g} on {least.backend})"
        )
        if self.config.require_budget:
            raise PipelineError(message + "; refused (--require-budget)")
        self.over_budget.update(d.key for d in over)
        if not self._warned_budget:
            self._warned_budget = True
            print(
                f"qubelet: warning: {message}; running on the least-error backend "
                "(--require-budget refuses instead)",
                file=sys.stderr,
            )

    def _batch_of(self, dispatch: Dispatch, states: dict[str, BackendState]) -> Batch:
        if dispatch.probe is not None:  # plan.json lists it as a batch of no subexperiment
            slug = dispatch.backend.replace(":", "-")
            return Batch(
                f"d{dispatch.seq:04d}-probe-{slug}", dispatch.backend, states[dispatch.backend].kind, []
            )
        (batch,) = batch_decisions(
            dispatch.decisions,
            len(dispatch.decisions),
            {dispatch.backend: 1},
            prefix=f"d{dispatch.seq:04d}-",
            states=list(states.values()),
        )
        return batch

    # --- execution ------------------------------------------------------------------------
    def _run_one(
        self, batch: Batch, backend: Backend, queued_at: float, attempt: int, seen: BackendState
    ) -> BatchOutcome:
        metrics.QUEUE_WAIT.labels(backend.name).observe(max(0.0, time.time() - queued_at))
        return execute_batch(
            self.config.run_dir,
            batch,
            backend,
            queued_at=queued_at,
            attempt=attempt,
            manifest=self._manifest,
            seen=seen,
        )

    def _run_probe(
        self, batch: Batch, backend: Backend, key: str, queued_at: float, seen: BackendState
    ) -> BatchOutcome:
        return execute_probe(
            self.config.run_dir, batch, backend, key, queued_at=queued_at, manifest=self._manifest, seen=seen
        )

    def execute(self, pending: Sequence[str]) -> ExecutionReport:
        """Run the scheduling loop over ``pending`` on the backends' worker pools."""
        report = ExecutionReport()
        #: backend name → the failure that made it unhealthy (named in the final error line)
        gave_up_on: dict[str, str] = {}
        loop = SchedulingLoop(
            self._policy, [self._manifest.features[k] for k in pending], self.loop_settings()
        )
        self.loop = loop
        pools = {
            name: ThreadPoolExecutor(max_workers=max(1, b.state().workers), thread_name_prefix=name)
            for name, b in self.backends.items()
        }
        free = {name: max(1, b.state().workers) for name, b in self.backends.items()}
        in_flight: dict[Future[BatchOutcome], tuple[Batch, Backend, Dispatch]] = {}
        batches: list[Batch] = []
        #: subexperiment -> the backend states its decision was made under (plan.json's reasons)
        decided_under: dict[str, list[BackendState]] = {}
        written = 0.0
        try:
            while True:
                states = [b.state() for b in self.backends.values()]
                for signal in self.signals:
                    states = signal.apply(states)
                try:
                    dispatched = loop.dispatch(states, free)
                except NoUsableBackendError as exc:
                    dispatched = []
                    if not in_flight:  # nothing left that could change the answer
                        why = str(exc) + "".join(
                            f"; {s.name} unhealthy: {s.unhealthy_reason}"
                            for s in states
                            if s.unhealthy_reason
                        )
                        loop.given_up.update({key: why for key in loop.pending})
                        loop.pending.clear()
                seen = {
                    s.name: (
                        s.marked_unhealthy(
                            f"this run: failed {UNHEALTHY_AFTER} batches in a row ({gave_up_on[s.name]})"
                        )
                        if s.name in gave_up_on and s.name in loop.unhealthy
                        else s
                    )
                    for s in loop.observed_states(states)
                }
                self._check_budget(dispatched)
                under = list(seen.values())
                for dispatch in dispatched:
                    decided_under.update((d.key, under) for d in dispatch.decisions)
                    batch = self._batch_of(dispatch, seen)
                    backend = self.backends[dispatch.backend]
                    batches.append(batch)
                    free[backend.name] -= 1
                    metrics.QUEUE_DEPTH.labels(backend.name).inc()
                    if dispatch.probe is not None:  # a probe-only job: the mirror alone
                        future = pools[backend.name].submit(
                            self._run_probe, batch, backend, dispatch.probe.key, time.time(),
                            seen[backend.name],
                        )  # fmt: skip
                        in_flight[future] = (batch, backend, dispatch)
                        continue
                    attempt = max(loop.attempts[k] for k in batch.keys)
                    future = pools[backend.name].submit(
                        self._run_one, batch, backend, time.time(), attempt, seen[backend.name]
                    )
                    in_flight[future] = (batch, backend, dispatch)
                if dispatched and time.monotonic() - written >= PLAN_WRITE_INTERVAL:
                    self._write_plan(loop, batches, decided_under)
                    written = time.monotonic()
                if not in_flight:
                    break
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for future in done:
                    batch, backend, dispatch = in_flight.pop(future)
                    free[backend.name] += 1
                    metrics.QUEUE_DEPTH.labels(backend.name).dec()
                    error = future.exception()
                    if error is None:
                        outcome = future.result()
                        self._record_success(batch, backend, outcome, report)
                        loop.complete(dispatch.seq, outcome.telemetry)
                        continue
                    if isinstance(error, StorageError):
                        # The run directory, not the backend, failed: no retry can help.
                        raise error
                    rows = self._record_failure(batch, backend, error, report)
                    if loop.fail(dispatch.seq, f"{type(error).__name__}: {error}", rows):
                        metrics.BACKEND_UP.labels(backend.name).set(0)
                        log.warning("backend marked unhealthy", backend=backend.name)
                        gave_up_on[backend.name] = f"{type(error).__name__}: {error}"
                    if any(key in loop.pending for key in batch.keys):
                        report.retried += 1
                        metrics.TASKS.labels(backend.name, "retried").inc(len(batch.keys))
        except RunTerminated as stop:
            stop.cancelled = self._cancel_in_flight()
            raise
        finally:
            for pool in pools.values():
                pool.shutdown(wait=True, cancel_futures=True)
            if batches:
                self._write_plan(loop, batches, decided_under)
        report.moved = loop.moved
        if loop.given_up:
            first, reason = next(iter(loop.given_up.items()))
            # the real cause (a job timeout, a refused token), not only "no healthy backend fits"
            causes = "".join(f"; {name} marked unhealthy after: {why}" for name, why in gave_up_on.items())
            raise PipelineError(
                f"{len(loop.given_up)} subexperiments failed after retries "
                f"(first: {first[:12]}: {reason}{causes}); results so far are kept, rerun with "
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
        executed = len(outcome.executed)
        if outcome.build_started is not None:
            report.events.append(
                TimelineEvent(
                    BUILD_EVENT, backend.name, backend.kind, outcome.build_started, outcome.started, 0, True
                )
            )
        report.events.append(
            TimelineEvent(
                batch.id, backend.name, backend.kind, outcome.started, outcome.finished, executed, True
            )
        )
        metrics.record_batch(
            backend.name, backend.kind, outcome.finished - outcome.started, executed, len(outcome.skipped)
        )
        self.progress.advance(executed + len(outcome.skipped))

    def _record_failure(
        self, batch: Batch, backend: Backend, error: BaseException, report: ExecutionReport
    ) -> list[TelemetryRow]:
        """Log and count a failed batch; its telemetry rows (written, and returned for the loop)."""
        now = time.time()
        log.warning(
            "batch failed", batch=batch.id, backend=backend.name, err=f"{type(error).__name__}: {error}"
        )
        metrics.TASKS.labels(backend.name, "failed").inc(len(batch.keys))
        report.events.append(
            TimelineEvent(batch.id, backend.name, backend.kind, now, now, len(batch.keys), False)
        )
        rows: list[TelemetryRow] = [
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
        self.store.append_telemetry([dict(r) for r in rows])
        return rows

    def budget_summary(self) -> dict[str, Any]:
        """summary.json's budget fields: the budget, whether every decision met it, and how many not.

        ``error_budget_met`` is None for a policy that predicts no errors (``size``, ``all_cpu``).
        """
        budget = budget_of(self._policy)
        predicted = [d.predicted_error for d in self.loop.decisions.values() if d.predicted_error is not None]
        return {
            "error_budget": budget,
            "error_budget_met": None if budget is None or not predicted else not self.over_budget,
            "error_budget_exceeded_subexperiments": len(self.over_budget),
            "max_predicted_error": round(max(predicted), 6) if predicted else None,
        }

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
        with clock.stage("store"):  # the cut's subexperiments and exact reference, written
            self._manifest = prepare(self.config, **self._prepare_args)
        with clock.stage("plan"):
            pending = self.plan(self._manifest)
        self.progress.start(len(pending))
        try:
            with clock.stage("execute"):
                report = self.execute(pending)
        finally:
            self.progress.close()
        with clock.stage("reconstruct"):
            summary = reconstruct(self.config.run_dir, wall_seconds=clock.wall_seconds())
        summary["unavailable_backends"] = self.unavailable
        summary["retried_batches"] = report.retried
        summary["moved_batches"] = report.moved
        summary["resumed_subexperiments"] = len(self._manifest.cut.unique_keys()) - len(pending)
        summary["recomputed_invalid"] = dict(self.invalid)
        summary.update(self.budget_summary())
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
