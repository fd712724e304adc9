"""Prometheus metrics of the device plugin (``qubelet_device_plugin_*``, base units).

Each :class:`PluginMetrics` owns its own :class:`CollectorRegistry`: prometheus_client's default
registry refuses a second metric of the same name, and tests (and the benchmark) start several
plugins in one process. The CLI serves that registry with :func:`qubelet.daemon.serve_metrics`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from qubelet import exposition
from qubelet.inventory import ProbeResult

PROBE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


exposition.configure()


class PluginMetrics:
    """All metrics of one device plugin instance, in a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.devices = Gauge(
            "qubelet_device_plugin_devices",
            "Devices advertised to kubelet, by health.",
            ["health"],
            registry=self.registry,
        )
        self.allocations = Counter(
            "qubelet_device_plugin_allocations",
            "Container allocations answered successfully by Allocate.",
            registry=self.registry,
        )
        self.allocation_errors = Counter(
            "qubelet_device_plugin_allocation_errors",
            "Allocate calls rejected, by gRPC status code.",
            ["code"],
            registry=self.registry,
        )
        self.probe_duration = Histogram(
            "qubelet_device_plugin_probe_duration_seconds",
            "Duration of QPU health probes.",
            ["qpu"],
            buckets=PROBE_BUCKETS,
            registry=self.registry,
        )
        self.probe_failures = Counter(
            "qubelet_device_plugin_probe_failures",
            "QPU health probes that reported unhealthy.",
            ["qpu"],
            registry=self.registry,
        )
        self.registrations = Counter(
            "qubelet_device_plugin_registrations",
            "Registration attempts with kubelet, by result (success|failure).",
            ["result"],
            registry=self.registry,
        )
        for health in ("Healthy", "Unhealthy"):
            self.devices.labels(health=health).set(0)
        for result in ("success", "failure"):
            self.registrations.labels(result=result)

    def observe_probe(self, qpu: str, result: ProbeResult) -> None:
        """Record one probe (the health monitor's ``on_probe`` hook)."""
        self.probe_duration.labels(qpu=qpu).observe(result.latency_seconds)
        if not result.healthy:
            self.probe_failures.labels(qpu=qpu).inc()
        else:
            self.probe_failures.labels(qpu=qpu).inc(0)

    def set_devices(self, healthy: int, unhealthy: int) -> None:
        """Publish the current device counts by health."""
        self.devices.labels(health="Healthy").set(healthy)
        self.devices.labels(health="Unhealthy").set(unhealthy)
