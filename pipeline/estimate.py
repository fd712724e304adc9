"""What a planned run will cost before any subexperiment runs: shots, QPU-seconds, wall time.

The numbers come from the plan (which backend gets which subexperiment) and the policy's cost
model (:class:`policy.models.PolicyModel`: the fitted one given with ``--policy-model``, else
its priors), whatever policy made the plan. ``qubelet run --dry-run``, ``qubelet render`` and
``qubelet submit`` print :meth:`RunEstimate.describe`; bench/ and the tests compare it with what
a real run took.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.mitigation.levels import MitigationConfig
from policy.interface import BackendState, CircuitFeatures


@dataclass(frozen=True)
class BackendEstimate:
    """One backend's share of a run."""

    tasks: int
    batches: int
    #: device seconds: the model's predicted run time of every task (mitigation included)
    busy_seconds: float
    #: from the backend's first start to its last result: queue wait, per-job overhead, work
    #: spread over its workers
    span_seconds: float
    shots: int


@dataclass(frozen=True)
class RunEstimate:
    """The cost of a planned run, by backend and in total."""

    subexperiments: int  #: as the cut defines them (duplicates included)
    distinct: int  #: what actually runs: identical subexperiments run once
    shots: int  #: every circuit's shots, mitigation's extra circuits included
    mitigation_shots: int  #: of which mitigation's (ZNE's folded circuits)
    qpu_seconds: float
    wall_seconds: float  #: the slowest backend's span: backends run side by side
    model: str  #: where the predictions come from
    per_backend: dict[str, BackendEstimate] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: the numbers a workflow author decides on."""
        split = ", ".join(
            f"{name} {b.tasks} in {b.batches} batch{'' if b.batches == 1 else 'es'}"
            for name, b in self.per_backend.items()
        )
        mitigation = f" ({self.mitigation_shots} for mitigation)" if self.mitigation_shots else ""
        return (
            f"estimate: {self.subexperiments} subexperiments ({self.distinct} distinct: {split}), "
            f"{self.shots} shots{mitigation}, {self.qpu_seconds:.1f} QPU-seconds, "
            f"about {_duration(self.wall_seconds)} of execution ({self.model})"
        )

    def to_json(self) -> dict[str, Any]:
        """The estimate as plan previews and tests read it."""
        return {
            "subexperiments": self.subexperiments,
            "distinct": self.distinct,
            "shots": self.shots,
            "mitigation_shots": self.mitigation_shots,
            "qpu_seconds": round(self.qpu_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "model": self.model,
            "backends": {
                name: {
                    "tasks": b.tasks,
                    "batches": b.batches,
                    "busy_seconds": round(b.busy_seconds, 3),
                    "span_seconds": round(b.span_seconds, 3),
                    "shots": b.shots,
                }
                for name, b in self.per_backend.items()
            },
        }


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def load_model(path: Path | None) -> tuple[Any, str]:
    """The policy's cost model and how to name it: the fitted file, or its priors."""
    from policy.models import PolicyModel

    if path is not None and Path(path).exists():
        return PolicyModel.load(Path(path)), f"model {Path(path).name}"
    return PolicyModel(), "model priors, no fitted --policy-model"


def estimate_run(
    *,
    subexperiments: int,
    tasks: Sequence[CircuitFeatures],
    assignment: dict[str, str],
    batches: dict[str, int],
    states: Sequence[BackendState],
    shots: int,
    mitigation: MitigationConfig,
    model_path: Path | None = None,
) -> RunEstimate:
    """Cost of running ``tasks`` where ``assignment`` (key → backend name) puts them.

    ``batches`` counts the jobs per backend (each pays the backend's per-job overhead).
    """
    model, model_name = load_model(model_path)
    by_name = {state.name: state for state in states}
    grouped: dict[str, list[CircuitFeatures]] = {}
    for task in tasks:
        grouped.setdefault(assignment[task.key], []).append(task)
    per_backend: dict[str, BackendEstimate] = {}
    total_shots = mitigation_shots = 0
    qpu_seconds = wall = 0.0
    for name in sorted(grouped):
        state = by_name[name]
        work = grouped[name]
        seconds = model.predict_seconds(work, state)
        busy = float(seconds.sum())
        jobs = batches.get(name, math.ceil(len(work) / 64))
        span = (
            model.queue_wait(state, float(seconds.mean()) if len(work) else None)
            + jobs * state.job_overhead_seconds / max(state.workers, 1)
            + busy / max(state.workers, 1)
        )
        circuits = mitigation.circuits_per_subexperiment if state.kind == "qpu" else 1
        backend_shots = sum(t.shots for t in work) * circuits
        total_shots += backend_shots
        mitigation_shots += sum(t.shots for t in work) * (circuits - 1)
        if state.kind == "qpu":
            qpu_seconds += busy
        wall = max(wall, span)
        per_backend[name] = BackendEstimate(len(work), jobs, busy, span, backend_shots)
    return RunEstimate(
        subexperiments=subexperiments,
        distinct=len(tasks),
        shots=total_shots,
        mitigation_shots=mitigation_shots,
        qpu_seconds=qpu_seconds,
        wall_seconds=wall,
        model=model_name,
        per_backend=per_backend,
    )
