"""Run-time and error models: analytic priors corrected by scikit-learn fits on telemetry.

Run time. Every backend class has a prior cost model of the same shape the hardware has::

    t = base + per_shot·shots + per_amp_layer·2^n·depth + per_shot_layer·shots·depth

(a statevector simulator pays per amplitude per layer, a QPU pays per shot per layer). Telemetry
corrects it multiplicatively: a ridge regression on ``log(t_observed) − log(t_prior)`` over the
circuit features, shrunk towards zero by ``n / (n + shrink_rows)`` so one noisy row cannot
swing the prediction. It is fitted per backend name, and pooled per ``kind:model`` and per kind,
so a new QPU of a known model starts from its siblings' data instead of the bare prior.

Error. For a QPU the prior is ``1 − f2q^{n2q} · fro^{n_measured}`` from the calibration
(BackendState first, the latest telemetry second, a conservative default last); a simulator's is
0 (only shot noise, which every backend shares). Rows that carry ``observed_error`` correct the
prior by a shrunk per-backend factor ``exp(mean log(observed / prior))``.

Persistence is JSON: the (capped) training rows, the Prometheus snapshots and the
hyperparameters; loading refits. Nothing in a model file is ever executed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import Ridge

from policy.features import circuit_matrix, task_from_row
from policy.interface import BackendKind, BackendState, CircuitFeatures, TelemetryRow
from policy.telemetry_sources import BackendSnapshot, validate_row

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
    tasks: Sequence[CircuitFeatures], kind: BackendKind, fidelity_2q: float, readout_fidelity: float
) -> np.ndarray:
    """``1 − f2q^{n2q} · fro^{n_measured}`` for QPUs, 0 for simulators."""
    if kind != "qpu":
        return np.zeros(len(tasks))
    a = _arrays(tasks)
    return 1.0 - np.power(fidelity_2q, a["n2q"]) * np.power(readout_fidelity, a["measured"])


@dataclass
class Hyperparameters:
    """Knobs of the fit (stored in the model file)."""

    ridge_alpha: float = 1.0
    shrink_rows: float = 3.0
    error_shrink_rows: float = 5.0
    max_rows_per_backend: int = 2000
    recent_runs: int = 20  #: runs whose queue waits count for a QPU's learned queue wait


@dataclass
class BackendStats:
    """What the history says about one backend beyond run time."""

    rows: int = 0
    failures: int = 0
    #: per run id, the shortest queue wait a task of that run saw on this backend (insertion order)
    run_waits: dict[str, float] = field(default_factory=dict)
    fidelity_2q: float | None = None
    readout_fidelity: float | None = None
    mean_run_seconds: float | None = None

    def failure_ratio(self) -> float:
        """Failures per attempt, with a weak prior of 1 failure in 50 attempts' worth of doubt."""
        return (self.failures + 0.02) / (self.rows + 1.0)

    def queue_wait(self, recent_runs: int = 20) -> float:
        """Median over recent runs of each run's shortest wait (0 when unknown).

        A recorded wait includes the backlog of the run's own earlier batches; the first batch of
        a run waits only for the service itself, so the per-run minimum is the service's queue.
        """
        waits = list(self.run_waits.values())[-recent_runs:]
        return float(np.median(waits)) if waits else 0.0


@dataclass
class _Correction:
    ridge: Ridge
    rows: int


def _level_keys(name: str, kind: str, model: str) -> list[str]:
    return [f"name={name}", f"model={kind}:{model}", f"kind={kind}"]


class PolicyModel:
    """Everything learned from telemetry; refit from the stored rows on load."""

    def __init__(
        self,
        rows: Iterable[TelemetryRow] = (),
        snapshots: dict[str, BackendSnapshot] | None = None,
        hyper: Hyperparameters | None = None,
    ) -> None:
        self.hyper = hyper or Hyperparameters()
        self.rows: list[TelemetryRow] = list(rows)
        self.snapshots: dict[str, BackendSnapshot] = dict(snapshots or {})
        self._corrections: dict[str, _Correction] = {}
        self._error_factor: dict[str, tuple[float, int]] = {}
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
        self._fit_stats()
        groups: dict[str, list[TelemetryRow]] = {}
        for row in self.rows:
            if row.get("success", True) is False:
                continue
            for key in _level_keys(row["backend"], row["backend_kind"], str(row.get("model", ""))):
                groups.setdefault(key, []).append(row)
        self._corrections = {}
        for key, group in groups.items():
            tasks = [task_from_row(r) for r in group]
            kind: BackendKind = group[0]["backend_kind"]
            observed = np.maximum(np.array([float(r["run_seconds"]) for r in group]), _MIN_SECONDS)
            target = np.log(observed) - np.log(prior_seconds(tasks, kind))
            ridge = Ridge(alpha=self.hyper.ridge_alpha).fit(circuit_matrix(tasks), target)
            self._corrections[key] = _Correction(ridge=ridge, rows=len(group))
        self._fit_error()

    def _fit_stats(self) -> None:
        self.stats = {}
        runs: dict[str, list[float]] = {}
        for row in self.rows:
            stats = self.stats.setdefault(row["backend"], BackendStats())
            stats.rows += 1
            stats.failures += 0 if row.get("success", True) else 1
            runs.setdefault(row["backend"], []).append(float(row["run_seconds"]))
            if row["backend_kind"] == "qpu" and row.get("queue_wait_seconds") is not None:
                run, wait = str(row.get("run_id", "")), float(row.get("queue_wait_seconds") or 0.0)
                stats.run_waits[run] = min(wait, stats.run_waits.get(run, wait))
            if row.get("fidelity_2q") is not None:
                stats.fidelity_2q = float(row["fidelity_2q"])  # type: ignore[arg-type]
            if row.get("readout_fidelity") is not None:
                stats.readout_fidelity = float(row["readout_fidelity"])  # type: ignore[arg-type]
        for name, values in runs.items():
            self.stats[name].mean_run_seconds = float(np.mean(values))

    def _fit_error(self) -> None:
        logs: dict[str, list[float]] = {}
        for row in self.rows:
            observed = row.get("observed_error")
            if row["backend_kind"] != "qpu" or observed is None or row.get("fidelity_2q") is None:
                continue
            prior = analytic_error(
                [task_from_row(row)],
                "qpu",
                float(row["fidelity_2q"]),  # type: ignore[arg-type]
                float(row.get("readout_fidelity") or DEFAULT_READOUT_FIDELITY),
            )[0]
            if prior > 1e-6 and observed > 0:
                logs.setdefault(row["backend"], []).append(math.log(float(observed) / prior))
        self._error_factor = {name: (float(np.mean(values)), len(values)) for name, values in logs.items()}

    def add_rows(self, rows: Iterable[TelemetryRow], *, refit: bool = True) -> None:
        """Append new history (online learning) and refit."""
        self.rows.extend(rows)
        if refit:
            self.fit()

    # -- prediction ---------------------------------------------------------------------------
    def correction_source(self, state: BackendState) -> tuple[str, int]:
        """Which pooled fit corrects this backend's prior, and on how many rows (``prior``, 0)."""
        for key in _level_keys(state.name, state.kind, state.model):
            if key in self._corrections:
                return key, self._corrections[key].rows
        return "prior", 0

    def predict_seconds(self, tasks: Sequence[CircuitFeatures], state: BackendState) -> np.ndarray:
        """Predicted run time (seconds, per attempt) of each task on ``state``."""
        prior = prior_seconds(tasks, state.kind)
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

    def error_factor(self, state: BackendState) -> float:
        """Shrunk multiplicative correction of the analytic error prior (1 without data)."""
        mean, rows = self._error_factor.get(state.name, (0.0, 0))
        return math.exp(mean * rows / (rows + self.hyper.error_shrink_rows))

    def predict_error(self, tasks: Sequence[CircuitFeatures], state: BackendState) -> np.ndarray:
        """Expected error of each task's result on ``state`` (0 for simulators)."""
        if state.kind != "qpu":
            return np.zeros(len(tasks))
        f2q, fro = self.calibration(state)
        return np.clip(analytic_error(tasks, "qpu", f2q, fro) * self.error_factor(state), 0.0, 1.0)

    def failure_ratio(self, state: BackendState) -> float:
        """Expected failures per attempt (telemetry rows first, Prometheus second)."""
        stats = self.stats.get(state.name)
        if stats is not None and stats.rows:
            return min(stats.failure_ratio(), 0.9)
        snap = self.snapshots.get(state.name)
        if snap is not None and snap.failure_ratio is not None:
            return min(max(snap.failure_ratio, 0.0), 0.9)
        return 0.0

    def queue_wait(self, state: BackendState) -> float:
        """Seconds before the backend starts on new work.

        The state's ``queue_wait_seconds`` when it gives one; otherwise the backlog its queue depth
        implies (depth × recent mean run time / workers, depth from the state or Prometheus), and
        for a QPU at least the cloud-queue wait recent telemetry saw.
        """
        if state.queue_wait_seconds > 0:
            return state.queue_wait_seconds
        stats = self.stats.get(state.name, BackendStats())
        snap = self.snapshots.get(state.name)
        depth = float(state.queue_depth) or float((snap.queue_depth if snap else None) or 0.0)
        latency = stats.mean_run_seconds or (snap.mean_run_seconds if snap else None) or 0.0
        backlog = depth * latency / max(state.workers, 1)
        learned = stats.queue_wait(self.hyper.recent_runs) if state.kind == "qpu" else 0.0
        return max(backlog, learned)

    def is_up(self, state: BackendState) -> bool:
        """Healthy per the state and not reported down by Prometheus."""
        snap = self.snapshots.get(state.name)
        return state.healthy and not (snap is not None and snap.up is False)

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
