"""Prometheus metrics of the admission-check controller (its own registry, served by the daemon).

``qubelet_admission_check_queued_workloads{backend}`` counts the pipeline's unfinished Kueue
Workloads per backend class as the API server holds them, next to the per-batch
``qubelet_pipeline_queue_depth`` the cluster steps push (docs/metrics.md); a separate name, so a
``sum`` over either never counts a batch twice.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from qubelet import exposition

exposition.configure()


class AdmissionMetrics:
    """The controller's metrics in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.decisions = Counter(
            "qubelet_admission_check_decisions_total",
            "Admission check verdicts written, by state.",
            ["state"],
            registry=self.registry,
        )
        self.pending = Gauge(
            "qubelet_admission_check_pending_workloads",
            "Workloads whose qubelet check is Pending.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "qubelet_admission_check_queued_workloads",
            "Unfinished pipeline Workloads in Kueue per backend class (from their LocalQueue).",
            ["backend"],
            registry=self.registry,
        )
        self.is_leader = Gauge(
            "qubelet_admission_check_is_leader",
            "1 while this replica holds the lease.",
            registry=self.registry,
        )
        self.telemetry_errors = Counter(
            "qubelet_admission_check_telemetry_errors_total",
            "Passes whose Prometheus snapshot could not be read.",
            registry=self.registry,
        )
