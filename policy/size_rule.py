"""The paper's toy size rule: <=5 qubits on a QPU, <=20 on a CPU simulator, else a GPU.

Kept as ``--policy size`` so the telemetry policy is always compared against it. When the rule's
choice is absent or unhealthy it falls back to the next backend that can run the circuit, so a
run never stalls on a missing GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from policy.interface import (
    BackendKind,
    BackendState,
    CircuitFeatures,
    Decision,
    NoUsableBackendError,
)

QPU_MAX_QUBITS = 5
CPU_MAX_QUBITS = 20

_FALLBACK_ORDER: dict[BackendKind, tuple[BackendKind, ...]] = {
    "qpu": ("qpu", "cpu", "gpu"),
    "cpu": ("cpu", "gpu", "qpu"),
    "gpu": ("gpu", "cpu", "qpu"),
}


def preferred_kind(num_qubits: int) -> BackendKind:
    """The class the paper's rule picks for a circuit of ``num_qubits`` qubits."""
    if num_qubits <= QPU_MAX_QUBITS:
        return "qpu"
    if num_qubits <= CPU_MAX_QUBITS:
        return "cpu"
    return "gpu"


def _fits(backend: BackendState, task: CircuitFeatures) -> bool:
    return backend.healthy and (backend.max_qubits is None or task.num_qubits <= backend.max_qubits)


def assign_by_class(
    tasks: Sequence[CircuitFeatures],
    backends: Sequence[BackendState],
    classes: Callable[[CircuitFeatures], Sequence[BackendKind]],
    reason: Callable[[CircuitFeatures, BackendKind], str],
) -> list[Decision]:
    """One decision per task: the first of ``classes(task)`` with a healthy backend that fits it.

    Backends of one class take turns (round-robin per class). Rule-based policies (the size rule,
    the all-CPU baseline) differ only in their class order and in the ``reason`` they record.

    Raises:
        NoUsableBackendError: no healthy backend of any listed class fits a task.
    """
    turn: dict[BackendKind, int] = {}
    decisions = []
    for task in tasks:
        for kind in classes(task):
            candidates = [b for b in backends if b.kind == kind and _fits(b, task)]
            if candidates:
                index = turn.get(kind, 0)
                turn[kind] = index + 1
                chosen = candidates[index % len(candidates)]
                break
        else:
            raise NoUsableBackendError(
                f"subexperiment {task.key[:12]}: no healthy backend fits {task.num_qubits} qubits"
            )
        decisions.append(
            Decision(
                key=task.key,
                backend=chosen.name,
                kind=chosen.kind,
                min_qubits=task.num_qubits if chosen.kind == "qpu" else None,
                reason=reason(task, chosen.kind),
            )
        )
    return decisions


def _size_reason(task: CircuitFeatures, chosen: BackendKind) -> str:
    wanted = preferred_kind(task.num_qubits)
    fallback = "" if chosen == wanted else f" (unavailable, fell back to {chosen})"
    return f"size rule: {task.num_qubits} qubits -> {wanted}{fallback}"


class SizePolicy:
    """Assigns by circuit width alone; round-robins between backends of the chosen class."""

    name = "size"
    #: count decisions in ``qubelet_policy_decisions_total`` (the dashboard's decisions panel)
    record_metrics = True

    def select(self, tasks: Sequence[CircuitFeatures], backends: Sequence[BackendState]) -> list[Decision]:
        """The paper's class for each task's width, falling back when that class has no backend."""
        decisions = assign_by_class(
            tasks, backends, lambda task: _FALLBACK_ORDER[preferred_kind(task.num_qubits)], _size_reason
        )
        if self.record_metrics:
            record_decisions(self.name, decisions)
        return decisions


def record_decisions(policy: str, decisions: Sequence[Decision]) -> None:
    """Count ``decisions`` per backend, as the telemetry policy counts its own."""
    from policy import metrics

    for d in decisions:
        metrics.record_decision(policy, d.kind, d.backend)
