"""Prometheus metrics of the policy, created once per process (module level).

prometheus_client's default registry refuses a second registration of the same name, so every
policy instance in a process (tests start many) shares these objects.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DECISIONS = Counter(
    "qubelet_policy_decisions_total",
    "Backend decisions made by a selection policy.",
    ["policy", "backend_kind"],
)

PREDICTION_ERROR = Histogram(
    "qubelet_policy_prediction_error_seconds",
    "Absolute difference between predicted and observed run time of a task.",
    buckets=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, float("inf")),
)


def record_decision(policy: str, backend_kind: str) -> None:
    """Count one decision."""
    DECISIONS.labels(policy=policy, backend_kind=backend_kind).inc()


def record_prediction_error(predicted_seconds: float, actual_seconds: float) -> None:
    """Observe |predicted − actual| once a task's telemetry arrives."""
    PREDICTION_ERROR.observe(abs(predicted_seconds - actual_seconds))
