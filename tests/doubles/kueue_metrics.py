"""Test double for Kueue's metrics endpoint (Kueue's controller manager cannot run here).

Serves, in the real Prometheus text exposition, the two queue gauges qubelet reads, with the
names and label sets of Kueue's ``pkg/metrics``: ``kueue_pending_workloads{cluster_queue,
status}`` and, with Kueue's LocalQueueMetrics, ``kueue_local_queue_pending_workloads{name,
namespace, status}`` (``status`` is ``active`` or ``inadmissible``). A test sets the counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from qubelet.daemon import MetricsServer, serve_metrics

STATUSES = ("active", "inadmissible")


class KueueMetrics:
    """The gauges in a private registry, served on a loopback port by :meth:`serve`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.pending = Gauge(
            "kueue_pending_workloads",
            "The number of pending workloads, per 'cluster_queue' and 'status'.",
            ["cluster_queue", "status"],
            registry=self.registry,
        )
        self.local_pending = Gauge(
            "kueue_local_queue_pending_workloads",
            "The number of pending workloads, per 'local_queue' and 'status'.",
            ["name", "namespace", "status"],
            registry=self.registry,
        )

    def set_cluster_queue(self, name: str, active: int, inadmissible: int = 0) -> None:
        """Pending workloads of a ClusterQueue."""
        self.pending.labels(name, "active").set(active)
        self.pending.labels(name, "inadmissible").set(inadmissible)

    def set_local_queue(self, namespace: str, name: str, active: int, inadmissible: int = 0) -> None:
        """Pending workloads of a LocalQueue."""
        self.local_pending.labels(name, namespace, "active").set(active)
        self.local_pending.labels(name, namespace, "inadmissible").set(inadmissible)

    def serve(self, port: int) -> MetricsServer:
        """Serve on ``127.0.0.1:port``."""
        server = serve_metrics(port, registry=self.registry, addr="127.0.0.1")
        assert server is not None
        return server
