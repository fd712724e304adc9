"""Run-time and error models: analytic priors corrected by ridge fits on telemetry.

Run time. Every backend class has a prior cost model of the same shape the hardware has::

    t = base + per_shot·shots + per_amp_layer·2^n·depth + per_shot_layer·shots·depth

(a statevector simulator pays per amplitude per layer, a QPU pays per shot per layer). Telemetry
corrects it multiplicatively: a ridge regression on ``log(t_observed) − log(t_prior)`` over the
circuit features, shrunk towards zero by ``n / (n + shrink_rows)`` so one noisy row cannot
swing the prediction. It is fitted per backend name, and pooled per ``kind:model`` and per kind,
so a new QPU of a known model starts from its siblings' data instead of the bare prior.

Conditions change under a fitted model (another tenant shares the GPU, a QPU drifts between
calibrations, a cloud queue fills and drains), so on top of that long-memory fit each backend
gets a *recent level*: the recency-weighted mean (half-life ``recent_half_life_rows`` rows, in
start-time order) of its residuals ``log(observed) − log(predicted)``. A steady backend's level
is ~0; a backend slowed 8x reaches ~log 8 within a few dozen rows.

Error. For a QPU the prior is ``1 − f2q^{n2q} · fro^{n_measured}`` from the calibration
(BackendState first, the latest telemetry second, a conservative default last); a simulator's is
0 (only shot noise, which every backend shares). Rows that carry ``observed_error`` correct the
prior by a shrunk per-backend factor ``exp(mean log(observed / prior))``. Measured errors come
one per probe (one per QPU batch: ``policy.probe``), so their windows count probes. Published
calibration goes stale as the device drifts between calibrations and only the measured errors
show it, so the factor is tracked per calibration epoch (``calibration_time``): the *fresh*
factor (each epoch's first probes, pooled over epochs: the model's systematic bias) is the
starting point, and the current epoch's recency-weighted level and, once significant, its trend
take over as its probes arrive. How fast the factor rose with age after earlier calibrations is
pooled over epochs and expected of the current one until its own probes show a trend. A
recalibration thus resets the level drift had reached, not the systematic bias or the drift
rate. Shrinkage towards the calibration is weaker for factors that say worse than for better.

Queue. Our own jobs ahead cost their predicted run time / workers each. Other tenants' jobs
(``external_queue_depth``, a possibly stale metric) are of unknown length: rows that saw some
teach the seconds one costs (recency-weighted ``Σ wait / Σ depth``); without such rows they are
assumed as long as ours.

The ridge regression is the closed form scikit-learn's ``Ridge`` solves (unpenalised intercept,
Cholesky on the centred normal equations), written out in numpy: five features need one 5×5
solve, and importing scikit-learn would cost every ``qubelet run`` seconds of start-up
(tests/test_policy_models.py checks both give the same fit).

Persistence is JSON: the (capped) training rows, the Prometheus snapshots and the
hyperparameters; loading refits. Nothing in a model file is ever executed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policy.features import circuit_matrix, task_from_row
from policy.interface import MIRROR_PROBE, BackendKind, BackendState, CircuitFeatures, TelemetryRow
from policy.telemetry_sources import BackendSnapshot, validate_row

#: How long each Prometheus input of a model stays valid (seconds): a backend's up/down and its
#: queue depth describe a moment, its latency and failure ratio a longer stretch. An expired or
#: unstamped input is ignored (``PolicyModel.snapshot_value``): a GPU down at fit time is not
#: down forever, and a queue of 40 then is not a permanent wait.
SNAPSHOT_TTL_SECONDS: dict[str, float] = {
    "up": 600.0,
    "queue_depth": 600.0,
    "mean_run_seconds": 7 * 86_400.0,
    "failure_ratio": 7 * 86_400.0,
}
MODEL_FORMAT = "qubelet-policy-model"
MODEL_VERSION = 1
DEFAULT_FIDELITY_2Q = 0.99
DEFAULT_READOUT_FIDELITY = 0.97
_MIN_SECONDS = 1e-6


@dataclass(frozen=True)
class CostCoefficients:
    """Coefficients of the run-time cost model (seconds)."""

    base: float = 0.0
    per_shot: float = 0.0
    per_amp_layer: float = 0.0
    per_shot_layer: float = 0.0

    def seconds(self, num_qubits: np.ndarray, depth: np.ndarray, shots: np.ndarray) -> np.ndarray:
        """Cost of circuits given as arrays (vectorised: the simulator calls this for 10^5 tasks)."""
        layers = np.maximum(depth, 1)
        amps = np.exp2(np.minimum(num_qubits, 60).astype(float))
        return (
            self.base
            + self.per_shot * shots
            + self.per_amp_layer * amps * layers
            + self.per_shot_layer * shots * layers
        )


#: Priors per backend class: deliberately rough (an order of magnitude is the point); data corrects.
PRIOR_COSTS: dict[BackendKind, CostCoefficients] = {
    "cpu": CostCoefficients(base=2e-3, per_shot=2e-7, per_amp_layer=4e-9),
    "gpu": CostCoefficients(base=2e-2, per_shot=1e-7, per_amp_layer=2e-10),
    "qpu": CostCoefficients(base=5e-2, per_shot=2e-5, per_shot_layer=1e-8),
}


def _arrays(tasks: Sequence[CircuitFeatures]) -> dict[str, np.ndarray]:
    return {
        "n": np.array([t.num_qubits for t in tasks], dtype=float),
        "depth": np.array([t.depth for t in tasks], dtype=float),
        "shots": np.array([t.shots for t in tasks], dtype=float),
        "n2q": np.array([t.num_2q_gates for t in tasks], dtype=float),
        "measured": np.array([t.num_clbits or t.num_qubits for t in tasks], dtype=float),
    }


def prior_seconds(tasks: Sequence[CircuitFeatures], kind: BackendKind) -> np.ndarray:
    """Prior run time of each task on a backend of class ``kind``."""
    a = _arrays(tasks)
    return np.maximum(PRIOR_COSTS[kind].seconds(a["n"], a["depth"], a["shots"]), _MIN_SECONDS)


def analytic_error(
    tasks: Sequence[CircuitFeatures],
    kind: BackendKind,
    fidelity_2q: float,
    readout_fidelity: float,
    mitigation: str = "none",
) -> np.ndarray:
    """The error prior: 0 for simulators; for QPUs by mitigation level.

    ``none``: ``1 − f2q^{n2q} · fro^{n_measured}``. ``readout``: the readout factor is inverted
    away, leaving ``1 − f2q^{n2q}``. ``zne``: the extrapolation cancels the first-order gate
    error as well, leaving the second order, ``(1 − f2q^{n2q})²``. Telemetry corrects each level
    separately (:meth:`PolicyModel.error_factor`).
    """
    if kind != "qpu":
        return np.zeros(len(tasks))
    a = _arrays(tasks)
    gates = np.power(fidelity_2q, a["n2q"])
    return error_from_survival(gates, np.power(readout_fidelity, a["measured"]), mitigation)


def error_from_survival(gates: Any, readout: Any, mitigation: str = "none") -> Any:
    """The error prior's shape from its two factors: gate survival and readout survival.

    ``gates`` is the probability that no gate error struck (``f2q^{n2q}`` from the calibration,
    or measured: :func:`policy.probe.mirror_error`), ``readout`` that no measured bit flipped.
    Scalars or arrays alike.
    """
    if mitigation == "zne":
        return (1.0 - gates) ** 2
    if mitigation == "readout":
        return 1.0 - gates
    return 1.0 - gates * readout


def error_key(backend: str, mitigation: str | None) -> str:
    """Errors are learned per backend *and* mitigation level: ``qpu:apollo+readout``."""
    return backend if mitigation in (None, "", "none") else f"{backend}+{mitigation}"


def unit_run_seconds(row: TelemetryRow) -> float:
    """A row's run time per unit of device work (ZNE rows ran each circuit at every scale)."""
    work = float(row.get("mitigation_work") or 1.0)
    return max(float(row["run_seconds"]) / max(work, 1e-9), _MIN_SECONDS)


@dataclass
class Hyperparameters:
    """Knobs of the fit (stored in the model file)."""

    ridge_alpha: float = 1.0
    shrink_rows: float = 3.0
    error_shrink_rows: float = 5.0
    #: the same for probes that say the device is *worse* than predicted: for a budget, bad
    #: news is believed faster than good news (shrinking it towards the calibration is the
    #: optimistic error, the one that breaks the budget)
    error_shrink_rows_worse: float = 1.0
    max_rows_per_backend: int = 2000
    recent_runs: int = 20  #: runs whose queue waits count for a QPU's learned queue wait
    recent_half_life_rows: float = 20.0  #: recency weighting of run-time levels and queue cost
    #: measured errors come one per probe, i.e. one per QPU batch (a row carrying
    #: ``observed_error``), so their windows count probes, not rows: recency weighting of the
    #: error factors, the probes right after a calibration that show the systematic bias, and
    #: the fewest probes a drift trend is fitted on
    error_half_life_probes: float = 4.0
    fresh_calibration_rows: int = 3
    drift_min_probes: int = 4


@dataclass
class BackendStats:
    """What the history says about one backend beyond run time."""

    rows: int = 0
    failures: int = 0
    #: jobs (batches) the rows came from and how many failed: each row counts 1/batch_size
    jobs: float = 0.0
    failed_jobs: float = 0.0
    #: per run id, the shortest queue wait a task of that run saw on this backend (insertion order)
    run_waits: dict[str, float] = field(default_factory=dict)
    fidelity_2q: float | None = None
    readout_fidelity: float | None = None
    mean_run_seconds: float | None = None
    #: recency-weighted mean log residual of run time against the long-memory fit
    recent_level: float = 0.0
    level_rows: int = 0
    #: learned seconds of wait per other tenant's job ahead (``None`` until rows saw some)
    seconds_per_external_job: float | None = None

    def failure_ratio(self) -> float:
        """Failed jobs per job, with a weak prior of 1 failure in 50 jobs' worth of doubt.

        Counted per job, not per row: a batch fails as a whole, so one failed batch of 30 is one
        event, not 30 (counted per row, one unlucky batch made a QPU that fails 2 % of its jobs
        look 7-15 % unreliable and pushed work off it). A failed job's subexperiments all run
        again, so the expected attempts per subexperiment are ``1 / (1 − this)``.
        """
        return (self.failed_jobs + 0.02) / (self.jobs + 1.0)

    def queue_wait(self, recent_runs: int = 20) -> float:
        """Median over recent runs of each run's shortest wait (0 when unknown).

        A recorded wait includes the backlog of the run's own earlier batches; the first batch of
        a run waits only for the service itself, so the per-run minimum is the service's queue.
        """
        waits = list(self.run_waits.values())[-recent_runs:]
        return float(np.median(waits)) if waits else 0.0


@dataclass(frozen=True)
class RidgeFit:
    """A fitted ridge regression ``y ≈ x·coef + intercept`` (the intercept is not penalised)."""

    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, alpha: float) -> RidgeFit:
        """Minimise ``|y − x·coef − intercept|² + alpha·|coef|²`` in closed form."""
        x_mean = x.mean(axis=0)
        y_mean = float(y.mean())
        centred = x - x_mean
        gram = centred.T @ centred + alpha * np.eye(x.shape[1])
        rhs = centred.T @ (y - y_mean)
        try:
            coef = np.linalg.solve(gram, rhs)
        except np.linalg.LinAlgError:  # alpha = 0 with collinear features: least-norm solution
            coef = np.linalg.lstsq(gram, rhs, rcond=None)[0]
        return cls(coef=coef, intercept=y_mean - float(x_mean @ coef))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted ``y`` for each row of ``x``."""
        return x @ self.coef + self.intercept


@dataclass
class _Correction:
    ridge: RidgeFit
    rows: int


def measured_at(row: TelemetryRow) -> float:
    """When a row's ``observed_error`` was measured (its ``ts`` is when its batch started).

    The mirror probe is the job's last circuit (``policy.probe``): it measures the device as it
    is when the batch ends, ``ts + run_seconds × batch_size`` (a row's ``run_seconds`` is its
    share of the batch; a probe-only job's row holds the job's whole time). Dated at the
    batch's start, a drifting QPU's measurements would look a batch older than they are and
    be extrapolated a second time over the batch they already include. The exact probe
    averages the probed subexperiments at their own starts: its row's ``ts``.
    """
    ts = float(row.get("ts", 0.0) or 0.0)
    if row.get("probe") != MIRROR_PROBE:
        return ts
    return ts + float(row.get("run_seconds", 0.0) or 0.0) * max(int(row.get("batch_size") or 1), 1)


def recency_weights(n: int, half_life: float) -> np.ndarray:
    """Weights for ``n`` items oldest first: the newest weighs 1, one ``half_life`` older 0.5."""
    return np.power(0.5, (n - 1 - np.arange(n)) / max(half_life, 1e-9))


def _by_backend_in_time(rows: Iterable[TelemetryRow]) -> dict[str, list[TelemetryRow]]:
    out: dict[str, list[TelemetryRow]] = {}
    for row in sorted(rows, key=lambda r: float(r.get("ts", 0.0) or 0.0)):
        out.setdefault(row["backend"], []).append(row)
    return out


@dataclass(frozen=True)
class DriftFit:
    """Log error factor of one calibration epoch: its level at ``last_ts`` and upward drift rate."""

    level: float
    slope: float  #: per second; 0 unless the rise is significant (t > 3)
    last_ts: float
    rows: int


def _drift_fit(points: np.ndarray, weights: np.ndarray, min_points: int = 4) -> DriftFit:
    """Recency-weighted line through ``(ts, log factor)`` points (oldest first).

    The level is the line's value at the newest point when the slope is significantly positive,
    else the weighted mean; a falling or noisy trend is never extrapolated (that would be
    optimistic about a device's error).
    """
    ts, values = points[:, 0], points[:, 1]
    mean = float(np.average(values, weights=weights))
    fit = DriftFit(level=mean, slope=0.0, last_ts=float(ts[-1]), rows=len(values))
    if len(values) < max(min_points, 3):
        return fit
    t0 = float(np.average(ts, weights=weights))
    dt = ts - t0
    sxx = float(np.sum(weights * dt * dt))
    if sxx <= 0:
        return fit
    slope = float(np.sum(weights * dt * (values - mean)) / sxx)
    residual = values - mean - slope * dt
    n_eff = float(np.sum(weights) ** 2 / np.sum(weights * weights))
    variance = float(np.sum(weights * residual * residual) / np.sum(weights)) * n_eff / max(n_eff - 2.0, 1.0)
    stderr = math.sqrt(max(variance, 1e-18) / sxx)
    if slope <= 3.0 * stderr:
        return fit
    return DriftFit(
        level=mean + slope * (float(ts[-1]) - t0), slope=slope, last_ts=float(ts[-1]), rows=len(values)
    )


def _pooled_drift_rate(epochs: dict[float | None, list[tuple[float, float]]]) -> float:
    """Upward drift of the log error factor per second since calibration, pooled over epochs.

    Each epoch with a known calibration time contributes its points' deviations from its own
    means (age since calibration, log factor), so epochs at different levels do not fake a
    trend. Only a significant rise (t > 3) counts; otherwise 0.
    """
    sxy = sxx = 0.0
    residuals: list[np.ndarray] = []
    for epoch, values in epochs.items():
        if epoch is None or len(values) < 2:
            continue
        points = np.array(values)
        age = points[:, 0] - epoch
        dx, dy = age - age.mean(), points[:, 1] - points[:, 1].mean()
        sxy += float(dx @ dy)
        sxx += float(dx @ dx)
        residuals.append((dx, dy))  # type: ignore[arg-type]
    if sxx <= 0:
        return 0.0
    slope = sxy / sxx
    rss = sum(float(np.sum((dy - slope * dx) ** 2)) for dx, dy in residuals)  # type: ignore[misc]
    dof = sum(len(dx) - 1 for dx, _ in residuals) - 1  # type: ignore[misc]
    if dof < 2:
        return 0.0
    stderr = math.sqrt(max(rss / dof, 1e-18) / sxx)
    return slope if slope > _three_sigma_t(dof) * stderr else 0.0


def _three_sigma_t(dof: int) -> float:
    """Student's t with ``dof`` degrees of freedom at the normal's 3σ one-sided level (p ≈ 0.0013).

    The Cornish-Fisher expansion in ``1/dof`` (3.9 at 10 dof, 11 at 2; 3 as dof grows): with a
    handful of probes a plain t > 3 is passed by noise alone a few percent of the time, and a
    spurious drift extrapolated over a run takes a steady QPU out of the budget for good.
    """
    z = 3.0
    return z + (z**3 + z) / (4.0 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96.0 * dof**2)


def _level_keys(name: str, kind: str, model: str) -> list[str]:
    return [f"name={name}", f"model={kind}:{model}", f"kind={kind}"]


class PolicyModel:
    """Everything learned from telemetry; refit from the stored rows on load."""

    def __init__(
        self,
        rows: Iterable[TelemetryRow] = (),
        snapshots: dict[str, BackendSnapshot] | None = None,
        hyper: Hyperparameters | None = None,
        priors: dict[BackendKind, CostCoefficients] | None = None,
    ) -> None:
        self.hyper = hyper or Hyperparameters()
        #: prior cost models an admin overrode per class (``policy.admin``; not saved with the model)
        self.priors: dict[BackendKind, CostCoefficients] = dict(priors or {})
        self.rows: list[TelemetryRow] = list(rows)
        self.snapshots: dict[str, BackendSnapshot] = dict(snapshots or {})
        self._corrections: dict[str, _Correction] = {}
        self._tasks: dict[int, CircuitFeatures] = {}
        #: per backend: (mean log factor, rows) over each calibration epoch's first rows
        self._error_fresh: dict[str, tuple[float, int]] = {}
        #: per backend and calibration epoch: (recency-weighted mean log factor, rows)
        self._error_by_epoch: dict[str, dict[float | None, DriftFit]] = {}
        #: per backend: upward drift of the log factor per second since calibration, pooled
        #: over every epoch seen (what a device does between calibrations)
        self._error_drift_rate: dict[str, float] = {}
        self.stats: dict[str, BackendStats] = {}
        self.fit()

    # -- fitting ----------------------------------------------------------------------------
    def _capped_rows(self) -> list[TelemetryRow]:
        by_backend: dict[str, list[TelemetryRow]] = {}
        for row in sorted(self.rows, key=lambda r: float(r.get("ts", 0.0) or 0.0)):
            by_backend.setdefault(row["backend"], []).append(row)
        cap = self.hyper.max_rows_per_backend
        return [row for group in by_backend.values() for row in group[-cap:]]

    def fit(self) -> None:
        """(Re)fit the run-time corrections, error factors and per-backend stats."""
        self.rows = self._capped_rows()
        self._tasks = {id(r): task_from_row(r) for r in self.rows}
        self._fit_stats()
        groups: dict[str, list[TelemetryRow]] = {}
        for row in self.rows:
            if row.get("success", True) is False or row.get("probe_only"):
                continue  # a probe-only job's time is its mirror circuit's, not the row's task's
            for key in _level_keys(row["backend"], row["backend_kind"], str(row.get("model", ""))):
                groups.setdefault(key, []).append(row)
        self._corrections = {}
        for key, group in groups.items():
            tasks = [self._tasks[id(r)] for r in group]
            kind: BackendKind = group[0]["backend_kind"]
            observed = np.array([unit_run_seconds(r) for r in group])
            target = np.log(observed) - np.log(self.prior_seconds(tasks, kind))
            ridge = RidgeFit.fit(circuit_matrix(tasks), target, self.hyper.ridge_alpha)
            self._corrections[key] = _Correction(ridge=ridge, rows=len(group))
        self._fit_recent()
        self._fit_error()

    def _fit_recent(self) -> None:
        """Recent run-time level and queue cost per backend (see the module docstring)."""
        half_life = self.hyper.recent_half_life_rows
        for name, group in _by_backend_in_time(self.rows).items():
            stats = self.stats[name]
            ok = [r for r in group if r.get("success", True) is not False and not r.get("probe_only")]
            if ok:
                state = BackendState(name=name, kind=ok[0]["backend_kind"], model=str(ok[0].get("model", "")))
                predicted = self._static_seconds([self._tasks[id(r)] for r in ok], state)
                observed = np.array([unit_run_seconds(r) for r in ok])
                weights = recency_weights(len(ok), half_life)
                residual = np.log(observed) - np.log(predicted)
                stats.recent_level = float(np.sum(weights * residual) / np.sum(weights))
                stats.level_rows = len(ok)
            queued = [
                r
                for r in group
                if (r.get("external_queue_depth") or 0) > 0 and r.get("queue_wait_seconds") is not None
            ]
            if queued:
                weights = recency_weights(len(queued), half_life)
                waits = np.array([float(r.get("queue_wait_seconds") or 0.0) for r in queued])
                depths = np.array([float(r.get("external_queue_depth") or 0) for r in queued])
                stats.seconds_per_external_job = float(np.sum(weights * waits) / np.sum(weights * depths))

    def _fit_stats(self) -> None:
        self.stats = {}
        runs: dict[str, list[float]] = {}
        for row in self.rows:
            stats = self.stats.setdefault(row["backend"], BackendStats())
            stats.rows += 1
            stats.failures += 0 if row.get("success", True) else 1
            share = 1.0 / max(int(row.get("batch_size") or 1), 1)  # a probe-only job is one job
            stats.jobs += share
            stats.failed_jobs += 0.0 if row.get("success", True) else share
            if not row.get("probe_only"):
                runs.setdefault(row["backend"], []).append(float(row["run_seconds"]))
            if row["backend_kind"] == "qpu" and row.get("queue_wait_seconds") is not None:
                run, wait = str(row.get("run_id", "")), float(row.get("queue_wait_seconds") or 0.0)
                stats.run_waits[run] = min(wait, stats.run_waits.get(run, wait))
            if row.get("fidelity_2q") is not None:
                stats.fidelity_2q = float(row["fidelity_2q"])  # type: ignore[arg-type]
            if row.get("readout_fidelity") is not None:
                stats.readout_fidelity = float(row["readout_fidelity"])  # type: ignore[arg-type]
        for name, values in runs.items():
            self.stats[name].mean_run_seconds = float(np.mean(values)) if values else None

    def _fit_error(self) -> None:
        logs: dict[str, dict[float | None, list[tuple[float, float]]]] = {}
        for row in sorted(self.rows, key=measured_at):
            observed = row.get("observed_error")
            if row["backend_kind"] != "qpu" or observed is None or row.get("fidelity_2q") is None:
                continue
            mitigation = str(row.get("mitigation") or "none")
            prior = analytic_error(
                [self._tasks[id(row)]],
                "qpu",
                float(row["fidelity_2q"]),  # type: ignore[arg-type]
                float(row.get("readout_fidelity") or DEFAULT_READOUT_FIDELITY),
                mitigation,
            )[0]
            if prior > 1e-6 and observed > 0:
                epoch = row.get("calibration_time")
                epochs = logs.setdefault(error_key(row["backend"], mitigation), {})
                epochs.setdefault(None if epoch is None else float(epoch), []).append(
                    (measured_at(row), math.log(float(observed) / prior))
                )
        half_life, fresh = self.hyper.error_half_life_probes, self.hyper.fresh_calibration_rows
        self._error_fresh = {}
        self._error_by_epoch = {}
        self._error_drift_rate = {}
        for name, epochs in logs.items():
            rate = _pooled_drift_rate(epochs)
            # each epoch's first probes, taken back to the calibration along the pooled drift
            first = [
                value - (rate * (ts - epoch) if epoch is not None else 0.0)
                for epoch, values in epochs.items()
                for ts, value in values[:fresh]
            ]
            self._error_fresh[name] = (float(np.mean(first)), len(first))
            self._error_drift_rate[name] = rate
            self._error_by_epoch[name] = {
                epoch: _drift_fit(
                    np.array(values), recency_weights(len(values), half_life), self.hyper.drift_min_probes
                )
                for epoch, values in epochs.items()
            }

    def add_rows(self, rows: Iterable[TelemetryRow], *, refit: bool = True) -> None:
        """Append new history (online learning) and refit."""
        self.rows.extend(rows)
        if refit:
            self.fit()

    # -- prediction ---------------------------------------------------------------------------
    def prior_seconds(self, tasks: Sequence[CircuitFeatures], kind: BackendKind) -> np.ndarray:
        """The prior run time of each task: the admin's override for ``kind``, else the built-in."""
        override = self.priors.get(kind)
        if override is None:
            return prior_seconds(tasks, kind)
        a = _arrays(tasks)
        return np.maximum(override.seconds(a["n"], a["depth"], a["shots"]), _MIN_SECONDS)

    def correction_source(self, state: BackendState) -> tuple[str, int]:
        """Which pooled fit corrects this backend's prior, and on how many rows (``prior``, 0)."""
        for key in _level_keys(state.name, state.kind, state.model):
            if key in self._corrections:
                return key, self._corrections[key].rows
        return "prior", 0

    def predict_seconds(self, tasks: Sequence[CircuitFeatures], state: BackendState) -> np.ndarray:
        """Predicted run time (seconds, per attempt) of each task on ``state``, as of now.

        Learned per unit of device work and scaled by the state's ``mitigation_work``, so a
        QPU running ZNE is predicted to take as many times longer as it runs circuits.
        """
        static = self._static_seconds(tasks, state) * max(state.mitigation_work, 1.0)
        stats = self.stats.get(state.name)
        if stats is None or not stats.level_rows:
            return static
        weight = stats.level_rows / (stats.level_rows + self.hyper.shrink_rows)
        return static * math.exp(weight * min(max(stats.recent_level, -20.0), 20.0))

    def _static_seconds(self, tasks: Sequence[CircuitFeatures], state: BackendState) -> np.ndarray:
        """The prior corrected by the long-memory regression (no recent level)."""
        prior = self.prior_seconds(tasks, state.kind)
        key, rows = self.correction_source(state)
        if rows == 0 or not tasks:
            return prior
        weight = rows / (rows + self.hyper.shrink_rows)
        correction = self._corrections[key].ridge.predict(circuit_matrix(tasks))
        return prior * np.exp(weight * np.clip(correction, -20.0, 20.0))

    def calibration(self, state: BackendState) -> tuple[float, float]:
        """(f2q, readout fidelity) from the state, the latest telemetry, or the defaults."""
        stats = self.stats.get(state.name, BackendStats())
        f2q = state.fidelity_2q if state.fidelity_2q is not None else stats.fidelity_2q
        fro = state.readout_fidelity if state.readout_fidelity is not None else stats.readout_fidelity
        return (
            DEFAULT_FIDELITY_2Q if f2q is None else f2q,
            DEFAULT_READOUT_FIDELITY if fro is None else fro,
        )

    def error_factor(self, state: BackendState, at: float | None = None) -> float:
        """Multiplicative correction of the analytic error prior for the state's calibration.

        The fresh factor shrunk towards 1 by its rows, then the current calibration epoch's
        recency-weighted factor shrunk towards that by its own rows (1 without data); a factor
        that says worse is shrunk less (``error_shrink_rows_worse``). With
        ``at`` (a time, like rows' ``ts``) a significant upward drift is extrapolated to it.
        """

        def shrink(worse: bool) -> float:
            return self.hyper.error_shrink_rows_worse if worse else self.hyper.error_shrink_rows

        key = error_key(state.name, state.mitigation)
        fresh_mean, fresh_rows = self._error_fresh.get(key, (0.0, 0))
        log_factor = fresh_mean * fresh_rows / (fresh_rows + shrink(fresh_mean > 0))
        epoch = None if state.calibration_time is None else float(state.calibration_time)
        rate = self._error_drift_rate.get(key, 0.0)
        if epoch is not None and at is not None:
            # what earlier epochs did by this age, before this epoch's own probes say more (kept
            # rising past the ages they were seen at: for a budget, the safe side)
            log_factor += rate * max(at - epoch, 0.0)
        fit = self._error_by_epoch.get(key, {}).get(epoch)
        if fit is not None:
            # this epoch's own trend once it has enough probes to show one, else the pooled rate
            slope = fit.slope if fit.rows >= self.hyper.drift_min_probes else rate
            recent = fit.level
            if at is not None and at > fit.last_ts:
                recent += slope * (at - fit.last_ts)
            log_factor += (recent - log_factor) * fit.rows / (fit.rows + shrink(recent > log_factor))
        return math.exp(min(max(log_factor, -20.0), 20.0))

    def drift_rate(self, state: BackendState) -> float:
        """How fast (per second) the log error factor rose after earlier calibrations (0: no rise)."""
        return self._error_drift_rate.get(error_key(state.name, state.mitigation), 0.0)

    def has_probe(self, state: BackendState) -> bool:
        """Whether any error was measured on ``state`` (at its mitigation) in its current calibration."""
        epoch = None if state.calibration_time is None else float(state.calibration_time)
        return epoch in self._error_by_epoch.get(error_key(state.name, state.mitigation), {})

    def predict_error(
        self, tasks: Sequence[CircuitFeatures], state: BackendState, at: float | None = None
    ) -> np.ndarray:
        """Expected error of each task's result on ``state`` if it starts at ``at`` (0 for simulators)."""
        if state.kind != "qpu":
            return np.zeros(len(tasks))
        f2q, fro = self.calibration(state)
        prior = analytic_error(tasks, "qpu", f2q, fro, state.mitigation)
        return np.clip(prior * self.error_factor(state, at), 0.0, 1.0)

    def failure_ratio(self, state: BackendState) -> float:
        """Expected failures per attempt (telemetry rows first, Prometheus second)."""
        stats = self.stats.get(state.name)
        if stats is not None and stats.rows:
            return min(stats.failure_ratio(), 0.9)
        ratio = self.snapshot_value(state.name, "failure_ratio")
        if ratio is not None:
            return min(max(ratio, 0.0), 0.9)
        return 0.0

    def queue_wait(self, state: BackendState, typical_seconds: float | None = None) -> float:
        """Seconds before the backend starts on new work.

        The state's ``queue_wait_seconds`` when it gives one; otherwise the backlog its queues
        imply: our own depth (from the state or Prometheus) × ``typical_seconds`` (the caller's
        predicted run time; else the recent mean) / workers, plus other tenants' jobs × the
        learned seconds each costs. For a QPU at least the cloud-queue wait telemetry saw.
        """
        if state.queue_wait_seconds > 0:
            return state.queue_wait_seconds
        stats = self.stats.get(state.name, BackendStats())
        depth = float(state.queue_depth) or float(self.snapshot_value(state.name, "queue_depth") or 0.0)
        latency = (
            typical_seconds
            or stats.mean_run_seconds
            or self.snapshot_value(state.name, "mean_run_seconds")
            or 0.0
        )
        backlog = depth * latency / max(state.workers, 1)
        if state.external_queue_depth > 0:
            per_job = stats.seconds_per_external_job
            if per_job is None:
                per_job = latency / max(state.workers, 1)
            backlog += state.external_queue_depth * per_job
        learned = stats.queue_wait(self.hyper.recent_runs) if state.kind == "qpu" else 0.0
        return max(backlog, learned)

    def is_up(self, state: BackendState) -> bool:
        """Healthy per the state and not reported down by Prometheus."""
        return state.healthy and self.snapshot_value(state.name, "up") is not False

    def snapshot_value(self, backend: str, name: str, now: float | None = None) -> Any:
        """A Prometheus input of ``backend`` if it has not expired (``SNAPSHOT_TTL_SECONDS``), else None."""
        snap = self.snapshots.get(backend)
        if snap is None or snap.observed_at is None:
            return None
        age = (time.time() if now is None else now) - snap.observed_at
        return getattr(snap, name) if age <= SNAPSHOT_TTL_SECONDS[name] else None

    # -- persistence --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The model file's content: training rows + snapshots + hyperparameters."""
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "hyperparameters": asdict(self.hyper),
            "snapshots": {name: asdict(s) for name, s in self.snapshots.items()},
            "rows": list(self.rows),
        }

    def save(self, path: Path) -> None:
        """Write the model as JSON (atomically, so a crash never leaves half a file)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=None, sort_keys=True), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PolicyModel:
        """Read and refit a model file; any problem is a one-line ``ValueError`` naming the file."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"policy model {path}: not a readable JSON file ({exc})") from exc
        try:
            if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
                raise ValueError(f"format is not {MODEL_FORMAT!r}")
            if data.get("version") != MODEL_VERSION:
                raise ValueError(f"unsupported version {data.get('version')!r}")
            hyper_raw = data.get("hyperparameters", {})
            if not isinstance(hyper_raw, dict) or not set(hyper_raw) <= set(asdict(Hyperparameters())):
                raise ValueError("bad hyperparameters")
            hyper = Hyperparameters(**hyper_raw)
            rows_raw = data.get("rows", [])
            if not isinstance(rows_raw, list):
                raise ValueError("rows is not a list")
            rows = []
            for index, raw in enumerate(rows_raw):
                try:
                    rows.append(validate_row(raw))
                except ValueError as exc:
                    raise ValueError(f"rows[{index}]: {exc}") from exc
            snaps_raw = data.get("snapshots", {})
            if not isinstance(snaps_raw, dict):
                raise ValueError("snapshots is not an object")
            snapshots = {str(name): BackendSnapshot(**snap) for name, snap in snaps_raw.items()}
            return cls(rows, snapshots, hyper)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"policy model {path}: {exc}") from exc
