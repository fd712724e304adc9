"""``--policy telemetry``: predictive backend selection from run history and metrics.

For every (subexperiment, backend) pair the :class:`~policy.models.PolicyModel` predicts run
time (inflated by ``1 / (1 − failure ratio)`` for expected retries) and error; the backend's
queue wait comes from its state or, for a cloud QPU, recent telemetry. :func:`policy.decide.list_schedule`
then minimises expected completion time within the per-subexperiment error budget.

A QPU whose measured errors are rising (drift between calibrations) is judged at the time each
task would start there, not now: the batch is scheduled once with errors as of now; if any
backend's errors rise before that plan's work ends, each task's last start within budget on each
backend is found on a grid of moments up to then, and the batch is scheduled again with no task
starting on a backend after its moment, so a queue is never filled past the moment the QPU is
predicted to leave the budget, and fills up to it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policy import metrics
from policy.admin import PolicyConfig
from policy.decide import Assignment, UnschedulableTaskError, list_schedule
from policy.features import backend_features, circuit_vector
from policy.interface import (
    BackendState,
    CircuitFeatures,
    Decision,
    NoUsableBackendError,
    TelemetryRow,
)
from policy.models import PolicyModel
from policy.telemetry_sources import TelemetrySource

DEFAULT_ERROR_BUDGET = 0.35
DEFAULT_EPSILON = 0.02
#: moments between now and the end of a plan's work at which rising QPU errors are checked
DRIFT_GRID = 8
#: a QPU kept idle by its predicted error alone gets a probe-only job (``error_probe``) when its
#: least predicted error is within this many budgets: published calibrations are seen off by up
#: to ~2x (simultaneous vs isolated benchmarking); beyond that a probe is not worth its job
PROBE_WITHIN_BUDGETS = 2.0


class TelemetryPolicy:
    """Minimise expected completion time subject to an error budget, learning as it goes."""

    name = "telemetry"

    def __init__(
        self,
        model: PolicyModel | None = None,
        *,
        seed: int = 0,
        error_budget: float = DEFAULT_ERROR_BUDGET,
        epsilon: float = DEFAULT_EPSILON,
        record_metrics: bool = True,
        clock: Callable[[], float] = time.time,
        admin: PolicyConfig | None = None,
    ) -> None:
        if not 0.0 <= error_budget <= 1.0:
            raise ValueError(f"error budget must be in [0, 1], got {error_budget}")
        self.model = model or PolicyModel()
        self.seed = seed
        self.error_budget = error_budget
        #: the admin's knobs (``policy.admin``): ε, per-backend weights, prior overrides, cadence
        self.admin = admin or PolicyConfig()
        self.epsilon = epsilon if self.admin.epsilon is None else self.admin.epsilon
        self.model.priors.update(self.admin.priors())
        self.record_metrics = record_metrics
        #: the time telemetry ``ts`` is measured in (wall clock; the simulator sets its own)
        self.clock = clock
        self._rng = np.random.default_rng(seed)
        #: predictions of decided tasks, (key, backend) -> seconds, for the prediction-error metric
        self._predicted: dict[tuple[str, str], float] = {}
        #: the last select's inputs: task and backend positions, predicted finish, error, fits
        self._last_inputs: tuple[dict[str, int], dict[str, int], np.ndarray, np.ndarray, np.ndarray] | None
        self._last_inputs = None

    @classmethod
    def load_or_prior(cls, model_path: Path | None, seed: int, **kwargs: Any) -> TelemetryPolicy:
        """The fitted model at ``model_path``; priors only when it is ``None`` or absent.

        A file that exists but is not a valid model raises a one-line ``ValueError`` naming it.
        """
        if model_path is None or not Path(model_path).exists():
            return cls(PolicyModel(), seed=seed, **kwargs)
        return cls(PolicyModel.load(Path(model_path)), seed=seed, **kwargs)

    @classmethod
    def from_sources(
        cls, sources: Sequence[TelemetrySource], seed: int = 0, **kwargs: Any
    ) -> TelemetryPolicy:
        """Fit on whatever the sources give (a dead source contributes nothing)."""
        rows: list[TelemetryRow] = []
        snapshots = {}
        for source in sources:
            rows.extend(source.rows())
            snapshots.update(source.snapshots())
        return cls(PolicyModel(rows, snapshots), seed=seed, **kwargs)

    # -- predictions ------------------------------------------------------------------------
    def _matrices(
        self,
        tasks: Sequence[CircuitFeatures],
        backends: Sequence[BackendState],
        ahead: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Predicted seconds, errors, fit mask, start and workers; errors ``ahead[b]`` s from now."""
        n, m = len(tasks), len(backends)
        seconds = np.zeros((n, m))
        errors = np.zeros((n, m))
        fits = np.zeros((n, m), dtype=bool)
        widths = np.array([t.num_qubits for t in tasks])
        for b, state in enumerate(backends):
            retry = 1.0 / (1.0 - self.model.failure_ratio(state))
            seconds[:, b] = self.model.predict_seconds(tasks, state) * retry * self.admin.weight(state)
            at = self.clock() + (0.0 if ahead is None else float(ahead[b]))
            errors[:, b] = self.model.predict_error(tasks, state, at=at)
            wide_enough = widths <= (state.max_qubits if state.max_qubits is not None else 10**9)
            fits[:, b] = wide_enough & self.model.is_up(state)
        # the run time of a job queued on a backend: the mean over the tasks it can run at all (a
        # task too wide for it has an astronomical predicted time that must not price its queue)
        typical = np.zeros(m)
        for b, state in enumerate(backends):
            can = widths <= (state.max_qubits if state.max_qubits is not None else 10**9)
            typical[b] = float(seconds[can, b].mean()) if can.any() else 0.0
        start = np.array(
            [
                self.model.queue_wait(s, float(typical[b])) + s.job_overhead_seconds
                for b, s in enumerate(backends)
            ]
        )
        workers = np.array([max(s.workers, 1) for s in backends])
        return seconds, errors, fits, start, workers

    def _min_fidelity(self, task: CircuitFeatures, state: BackendState) -> float | None:
        """The weakest two-qubit fidelity that keeps ``task`` within budget on this QPU."""
        if state.kind != "qpu" or task.num_2q_gates <= 0:
            return None
        _, fro = self.model.calibration(state)
        factor = self.model.error_factor(state)
        allowed = self.error_budget / max(factor, 1e-9)  # the largest prior within budget
        measured = task.num_clbits or task.num_qubits
        # The gate factor f2q^{n2q} the prior of the state's mitigation level needs (models.analytic_error).
        if state.mitigation == "zne":
            target = 1.0 - math.sqrt(min(allowed, 1.0))
        elif state.mitigation == "readout":
            target = 1.0 - allowed
        else:
            target = (1.0 - allowed) / fro**measured
        if target <= 0:
            return None
        need = target ** (1.0 / task.num_2q_gates)
        return round(need, 6) if need <= 1.0 else None

    def error_probe(self, tasks: Sequence[CircuitFeatures], state: BackendState) -> CircuitFeatures | None:
        """The subexperiment whose mirror is worth a probe-only job on ``state``, or None.

        A QPU that no plan gives work only because its predicted error is over budget would
        never be measured, so a calibration that is too pessimistic would never be found out.
        When it has no measured error in its current calibration, the least predicted error of a
        pending subexperiment it fits is over the budget but within ``PROBE_WITHIN_BUDGETS`` of
        it, and (per the last plan's predictions) the QPU would finish that subexperiment before
        every backend within budget, that subexperiment is returned: the loop sends its mirror
        circuit alone (no result at risk). Exploration: off with ε = 0.
        """
        if self.epsilon <= 0 or state.kind != "qpu" or not self.model.is_up(state):
            return None
        if self.model.has_probe(state) or self._last_inputs is None:
            return None
        rows, columns, finish, errors, fits = self._last_inputs
        b = columns.get(state.name)
        known = [t for t in tasks if t.key in rows]
        if b is None or not known:
            return None
        index = np.array([rows[t.key] for t in known])
        on_qpu = np.where(fits[index, b], errors[index, b], np.inf)
        best = int(np.argmin(on_qpu))
        if not self.error_budget < float(on_qpu[best]) <= PROBE_WITHIN_BUDGETS * self.error_budget:
            return None
        # worth a job only if, within budget, the QPU would finish that task first
        i = int(index[best])
        others = fits[i] & (errors[i] <= self.error_budget)
        others[b] = False
        if others.any() and float(finish[i, b]) >= float(finish[i][others].min()):
            return None
        return known[best]

    # -- the SelectionPolicy contract ---------------------------------------------------------
    def select(self, tasks: Sequence[CircuitFeatures], backends: Sequence[BackendState]) -> list[Decision]:
        """One decision per task, same order; deterministic for a seed and call sequence."""
        if not tasks:
            return []
        if not backends:
            raise NoUsableBackendError("no backends offered")
        seconds, errors, fits, start, workers = self._matrices(tasks, backends)
        self._last_inputs = (
            {t.key: i for i, t in enumerate(tasks)},
            {s.name: b for b, s in enumerate(backends)},
            seconds + start,
            errors,
            fits,
        )
        try:
            plan = self._schedule(seconds, errors, fits, start, workers)
            if any(s.kind == "qpu" for s in backends):
                latest = self._latest_starts(tasks, backends, plan)
                if latest is not None:
                    plan = self._schedule(seconds, errors, fits, start, workers, latest)
        except UnschedulableTaskError as exc:
            task = tasks[exc.index]
            raise NoUsableBackendError(
                f"subexperiment {task.key[:12]}: no healthy backend fits {task.num_qubits} qubits"
            ) from exc
        decisions: list[Decision | None] = [None] * len(tasks)
        for a in plan:
            decisions[a.task] = self._decision(tasks[a.task], backends, a, seconds, errors, fits, start)
        out = [d for d in decisions if d is not None]
        for d in out:
            self._predicted[(d.key, d.backend)] = float(d.predicted_seconds or 0.0)
            if self.record_metrics:
                metrics.record_decision(self.name, d.kind, d.backend)
        return out

    def _latest_starts(
        self, tasks: Sequence[CircuitFeatures], backends: Sequence[BackendState], plan: list[Assignment]
    ) -> np.ndarray | None:
        """Per task and backend, the last start (seconds from now) within the error budget.

        Errors rise with time on a drifting QPU; they are evaluated at ``DRIFT_GRID`` moments up
        to the end of the first plan's work, and a task may start on a backend up to the moment
        it leaves the budget there (interpolated between the two moments around it). None when
        no backend's errors rise over that span.
        """
        horizon = max((a.finish for a in plan), default=0.0)
        if horizon <= 0:
            return None
        n, m = len(tasks), len(backends)
        latest = np.full((n, m), np.inf)
        budget = self.error_budget
        first = previous = self._matrices(tasks, backends, np.zeros(m))[1]
        for step in range(1, DRIFT_GRID + 1):
            at = horizon * step / DRIFT_GRID
            errors = self._matrices(tasks, backends, np.full(m, at))[1]
            over = (errors > budget) & ~np.isfinite(latest) & (first <= budget)
            # where between the two moments the budget is crossed (linear: rising errors are
            # convex in time, so the chord crosses first and the estimate errs early)
            share = (budget - previous) / np.maximum(errors - previous, 1e-12)
            latest[over] = (horizon * (step - 1 + np.clip(share, 0.0, 1.0)) / DRIFT_GRID)[over]
            previous = errors
        return latest if not np.array_equal(previous, first) else None

    def _schedule(
        self,
        seconds: np.ndarray,
        errors: np.ndarray,
        fits: np.ndarray,
        start: np.ndarray,
        workers: np.ndarray,
        latest: np.ndarray | None = None,
    ) -> list[Assignment]:
        return list_schedule(
            seconds, errors, fits, start, workers,
            budget=self.error_budget, rng=self._rng, epsilon=self.epsilon, latest_start=latest,
        )  # fmt: skip

    def _decision(
        self,
        task: CircuitFeatures,
        backends: Sequence[BackendState],
        a: Assignment,
        seconds: np.ndarray,
        errors: np.ndarray,
        fits: np.ndarray,
        start: np.ndarray,
    ) -> Decision:
        i, b = a.task, a.backend
        state = backends[b]
        alternatives = {
            s.name: {"seconds": float(seconds[i, k]), "error": float(errors[i, k]), "wait": float(start[k])}
            for k, s in enumerate(backends)
            if fits[i, k]
        }
        if a.explored:
            reason = f"exploring {state.name} (finish {a.finish:.3g}s, within the makespan so far)"
        else:
            reason = f"earliest expected finish {a.finish:.3g}s"
        if not a.within_budget:
            reason += f"; no backend meets error budget {self.error_budget}, least-error one used"
        elif state.kind == "qpu":
            reason += f"; predicted error {errors[i, b]:.3f} <= budget {self.error_budget}"
        return Decision(
            key=task.key,
            backend=state.name,
            kind=state.kind,
            min_qubits=task.num_qubits if state.kind == "qpu" else None,
            min_fidelity_2q=self._min_fidelity(task, state),
            predicted_seconds=float(seconds[i, b]),
            predicted_error=float(errors[i, b]),
            reason=reason,
            alternatives=alternatives,
        )

    def explain(self, task: CircuitFeatures, backends: Sequence[BackendState]) -> dict[str, Any]:
        """Each backend's predictions for ``task`` alone, and why the winner won."""
        seconds, errors, fits, start, _ = self._matrices([task], backends)
        rows: list[dict[str, Any]] = []
        for b, state in enumerate(backends):
            source, n_rows = self.model.correction_source(state)
            why_not = []
            if not self.model.is_up(state):
                why_not.append("unhealthy")
            if state.max_qubits is not None and task.num_qubits > state.max_qubits:
                why_not.append(f"only {state.max_qubits} qubits")
            if errors[0, b] > self.error_budget:
                why_not.append(f"error {errors[0, b]:.3f} > budget {self.error_budget}")
            rows.append(
                {
                    "backend": state.name,
                    "kind": state.kind,
                    "eligible": bool(fits[0, b]) and errors[0, b] <= self.error_budget,
                    "run_seconds": float(seconds[0, b]),
                    "wait_seconds": float(start[b]),
                    "finish_seconds": float(start[b] + seconds[0, b]),
                    "error": float(errors[0, b]),
                    "failure_ratio": self.model.failure_ratio(state),
                    "model": source,
                    "training_rows": n_rows,
                    "excluded_because": why_not,
                    "backend_features": backend_features(state),
                }
            )
        eligible = [r for r in rows if r["eligible"]]
        chosen = min(eligible, key=lambda r: r["finish_seconds"]) if eligible else None
        if chosen is None:
            why = "no backend is eligible"
        else:
            others = sorted((r for r in eligible if r is not chosen), key=lambda r: r["finish_seconds"])
            why = f"{chosen['backend']} finishes first ({chosen['finish_seconds']:.3g}s)"
            if others:
                why += f"; next {others[0]['backend']} at {others[0]['finish_seconds']:.3g}s"
        return {
            "task": dict(zip(("num_qubits", "depth", "num_2q_gates", "shots", "num_clbits"),
                             (task.num_qubits, task.depth, task.num_2q_gates, task.shots, task.num_clbits),
                             strict=True)),
            "features": circuit_vector(task),
            "error_budget": self.error_budget,
            "backends": rows,
            "chosen": None if chosen is None else chosen["backend"],
            "why": why,
        }  # fmt: skip

    # -- learning -------------------------------------------------------------------------------
    def refit(self) -> None:
        """Refit the model on every row observed so far (the loop calls this at its cadence)."""
        self.model.fit()

    def observe(self, rows: Sequence[TelemetryRow], *, refit: bool = True) -> None:
        """Feed back executed tasks: records the prediction-error and budget metrics, refits the model."""
        for row in rows:
            predicted = self._predicted.pop((str(row.get("key", "")), row["backend"]), None)
            if predicted is not None and self.record_metrics and row.get("success", True):
                metrics.record_prediction_error(predicted, float(row["run_seconds"]))
            observed = row.get("observed_error")
            if self.record_metrics and observed is not None and observed > self.error_budget:
                metrics.record_budget_breach(row["backend"])
        self.model.add_rows(rows, refit=refit)
