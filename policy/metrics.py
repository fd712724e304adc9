"""Prometheus metrics of the policy, created once per process (module level).

prometheus_client's default registry refuses a second registration of the same name, so every
policy instance in a process (tests start many) shares these objects.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Histogram

from qubelet import exposition

exposition.configure()

DECISIONS = Counter(
    "qubelet_policy_decisions_total",
    "Backend decisions made by a selection policy, per backend (which QPU got the work).",
    ["policy", "backend_kind", "backend"],
)

PREDICTION_ERROR = Histogram(
    "qubelet_policy_prediction_error_seconds",
    "Absolute difference between predicted and observed run time of a task.",
    buckets=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, float("inf")),
)

ERROR_BUDGET_BREACHES = Counter(
    "qubelet_policy_error_budget_breaches_total",
    "Executed tasks whose observed error exceeded the policy's per-subexperiment error budget.",
    ["backend"],
)

#: Every policy metric (what a pushing step sends along with the pipeline's).
ALL = (DECISIONS, PREDICTION_ERROR, ERROR_BUDGET_BREACHES)


def init_decisions(policy: str, backends: Iterable[tuple[str, str]]) -> None:
    """Create the decision series of ``policy`` at zero, one per (backend class, backend name).

    Why: ``rate()`` needs a sample before the first decision. A run that plans and finishes
    between two scrapes would otherwise show its decisions only at their final value.
    """
    for kind, name in backends:
        DECISIONS.labels(policy=policy, backend_kind=kind, backend=name)


def record_decision(policy: str, backend_kind: str, backend: str | None = None) -> None:
    """Count one decision for ``backend`` (the class's own name, ``cpu``, when not given)."""
    DECISIONS.labels(policy=policy, backend_kind=backend_kind, backend=backend or backend_kind).inc()


def record_prediction_error(predicted_seconds: float, actual_seconds: float) -> None:
    """Observe |predicted − actual| once a task's telemetry arrives."""
    PREDICTION_ERROR.observe(abs(predicted_seconds - actual_seconds))


def record_budget_breach(backend: str) -> None:
    """Count one task whose observed error was above the error budget it was placed under."""
    ERROR_BUDGET_BREACHES.labels(backend=backend).inc()
