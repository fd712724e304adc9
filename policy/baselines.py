"""Baselines the telemetry policy must beat: everything on the CPU, and greedy from priors.

``all_cpu`` is the rule a careful user falls back to (no QPU error, no GPU setup); it leaves a
task the CPU cannot hold (too wide for its memory) to the next backend that can. ``greedy`` is the
telemetry policy's own scheduler — earliest expected finish within the error budget, from the
same backend state — but with its priors only: it never learns from telemetry, so whatever the
telemetry policy gains over it is what learning buys.
"""

from __future__ import annotations

from collections.abc import Sequence

from policy.admin import PolicyConfig
from policy.interface import (
    BackendKind,
    BackendState,
    CircuitFeatures,
    Decision,
    TelemetryRow,
)
from policy.models import PolicyModel
from policy.size_rule import assign_by_class, record_decisions
from policy.telemetry import DEFAULT_ERROR_BUDGET, TelemetryPolicy

_ALL_CPU_ORDER: tuple[BackendKind, ...] = ("cpu", "gpu", "qpu")


def _all_cpu_reason(_task: CircuitFeatures, chosen: BackendKind) -> str:
    return "all_cpu" + ("" if chosen == "cpu" else f" (too wide for a CPU: {chosen})")


class AllCpuPolicy:
    """Every task on a CPU simulator; wider than every CPU → GPU, then QPU."""

    name = "all_cpu"
    #: count decisions in ``qubelet_policy_decisions_total``
    record_metrics = True

    def select(self, tasks: Sequence[CircuitFeatures], backends: Sequence[BackendState]) -> list[Decision]:
        """One decision per task, round-robin over the CPUs that fit it."""
        decisions = assign_by_class(tasks, backends, lambda _task: _ALL_CPU_ORDER, _all_cpu_reason)
        if self.record_metrics:
            record_decisions(self.name, decisions)
        return decisions


class GreedyPolicy(TelemetryPolicy):
    """Earliest expected finish from the priors and the backend state; never learns."""

    name = "greedy"

    def __init__(
        self,
        *,
        seed: int = 0,
        error_budget: float = DEFAULT_ERROR_BUDGET,
        record_metrics: bool = True,
        admin: PolicyConfig | None = None,
    ) -> None:
        super().__init__(
            PolicyModel(),
            seed=seed,
            error_budget=error_budget,
            epsilon=0.0,
            record_metrics=record_metrics,
            admin=admin,
        )
        self.epsilon = 0.0  # never explores, whatever the admin's ε

    def observe(self, rows: Sequence[TelemetryRow], *, refit: bool = True) -> None:
        """Ignore telemetry: this baseline measures what the priors alone achieve."""

    def refit(self) -> None:
        """Nothing learned, nothing to refit."""


class GreedySimulatorsPolicy(GreedyPolicy):
    """:class:`GreedyPolicy` offered only the simulators (a QPU only for what no simulator fits).

    The baseline a cautious user has when the QPU's error is in doubt: it can never break an
    error budget on a subexperiment a simulator can hold.
    """

    name = "greedy_sim"

    def select(self, tasks: Sequence[CircuitFeatures], backends: Sequence[BackendState]) -> list[Decision]:
        """Greedy over the simulators; tasks no healthy simulator fits go to greedy over all."""
        simulators = [b for b in backends if b.kind != "qpu" and b.healthy]

        def fits(task: CircuitFeatures) -> bool:
            return any(b.max_qubits is None or task.num_qubits <= b.max_qubits for b in simulators)

        narrow = [t for t in tasks if fits(t)]
        wide = [t for t in tasks if not fits(t)]
        decided = {d.key: d for d in (super().select(narrow, simulators) if narrow else [])}
        decided.update({d.key: d for d in (super().select(wide, backends) if wide else [])})
        return [decided[t.key] for t in tasks]
