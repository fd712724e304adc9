"""Baselines the telemetry policy must beat: everything on the CPU, and greedy from priors.

``all_cpu`` is the rule a careful user falls back to (no QPU error, no GPU setup); it leaves a
task the CPU cannot hold (too wide for its memory) to the next backend that can. ``greedy`` is the
telemetry policy's own scheduler — earliest expected finish within the error budget, from the
same backend state — but with its priors only: it never learns from telemetry, so whatever the
telemetry policy gains over it is what learning buys.
"""

from __future__ import annotations

from collections.abc import Sequence

from policy.interface import (
    BackendKind,
    BackendState,
    CircuitFeatures,
    Decision,
    NoUsableBackendError,
    TelemetryRow,
)
from policy.models import PolicyModel
from policy.telemetry import DEFAULT_ERROR_BUDGET, TelemetryPolicy

_ALL_CPU_ORDER: tuple[BackendKind, ...] = ("cpu", "gpu", "qpu")


class AllCpuPolicy:
    """Every task on a CPU simulator; wider than every CPU → GPU, then QPU."""

    name = "all_cpu"

    def select(self, tasks: Sequence[CircuitFeatures], backends: Sequence[BackendState]) -> list[Decision]:
        """One decision per task, round-robin over the CPUs that fit it."""
        turn = 0
        out = []
        for task in tasks:
            for kind in _ALL_CPU_ORDER:
                fitting = [
                    b
                    for b in backends
                    if b.kind == kind
                    and b.healthy
                    and (b.max_qubits is None or task.num_qubits <= b.max_qubits)
                ]
                if fitting:
                    chosen = fitting[turn % len(fitting)]
                    turn += 1
                    break
            else:
                raise NoUsableBackendError(
                    f"subexperiment {task.key[:12]}: no healthy backend fits {task.num_qubits} qubits"
                )
            out.append(
                Decision(
                    key=task.key,
                    backend=chosen.name,
                    kind=chosen.kind,
                    min_qubits=task.num_qubits if chosen.kind == "qpu" else None,
                    reason="all_cpu"
                    + ("" if chosen.kind == "cpu" else f" (too wide for a CPU: {chosen.kind})"),
                )
            )
        return out


class GreedyPolicy(TelemetryPolicy):
    """Earliest expected finish from the priors and the backend state; never learns."""

    name = "greedy"

    def __init__(
        self, *, seed: int = 0, error_budget: float = DEFAULT_ERROR_BUDGET, record_metrics: bool = True
    ) -> None:
        super().__init__(
            PolicyModel(), seed=seed, error_budget=error_budget, epsilon=0.0, record_metrics=record_metrics
        )

    def observe(self, rows: Sequence[TelemetryRow], *, refit: bool = True) -> None:
        """Ignore telemetry: this baseline measures what the priors alone achieve."""
