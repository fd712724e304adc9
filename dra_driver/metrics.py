"""Prometheus metrics of the DRA driver (``qubelet_dra_*``, base units).

Metrics live in a per-instance :class:`CollectorRegistry` so several plugin instances (tests,
benchmarks) can coexist in one process; the daemon serves that registry on ``--metrics-port``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from qubelet import exposition
from qubelet.inventory import QPUConfig

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


exposition.configure()


class DRAMetrics:
    """All metrics of one driver instance."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.slices_published = Gauge(
            "qubelet_dra_slices_published",
            "ResourceSlices this publisher holds in the API server",
            registry=r,
        )
        self.devices = Gauge(
            "qubelet_dra_devices", "QPU devices known to this publisher, by health", ["health"], registry=r
        )
        self.reconciles = Counter(
            "qubelet_dra_reconciles_total",
            "ResourceSlice reconcile passes, by result",
            ["result"],
            registry=r,
        )
        self.prepare_duration = Histogram(
            "qubelet_dra_prepare_duration_seconds",
            "NodePrepareResources call latency",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.unprepare_duration = Histogram(
            "qubelet_dra_unprepare_duration_seconds",
            "NodeUnprepareResources call latency",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prepare_errors = Counter(
            "qubelet_dra_prepare_errors_total",
            "Claims that failed to prepare, by reason",
            ["reason"],
            registry=r,
        )
        self.prepared_claims = Gauge(
            "qubelet_dra_prepared_claims", "ResourceClaims currently prepared on this node", registry=r
        )
        self.is_leader = Gauge(
            "qubelet_dra_controller_leader", "1 while this controller holds the leader Lease", registry=r
        )
        # What the admission check reads (admission_check/telemetry.py): live calibration, health.
        self.qpu_fidelity_2q = Gauge(
            "qubelet_dra_qpu_fidelity_2q",
            "Two-qubit gate fidelity of the QPU's current calibration (as its devices publish it)",
            ["qpu"],
            registry=r,
        )
        self.qpu_healthy = Gauge(
            "qubelet_dra_qpu_healthy", "1 while the QPU's health probe passes", ["qpu"], registry=r
        )

        # Reservations before binding (dra_driver/reservations), in the controller.
        self.reservations_requested = Counter(
            "qubelet_dra_reservations_requested",
            "Reservations asked of a QPU's provider (one per allocated device)",
            ["qpu"],
            registry=r,
        )
        self.reservations_granted = Counter(
            "qubelet_dra_reservations_granted", "Reservations the provider granted", ["qpu"], registry=r
        )
        self.reservations_refused = Counter(
            "qubelet_dra_reservations_refused",
            "Reservations the provider refused, or gave up on after the provider stayed unreachable",
            ["qpu"],
            registry=r,
        )
        self.reservations_released = Counter(
            "qubelet_dra_reservations_released",
            "Reservations given back (claim deallocated or deleted, pod gone, leftover after a restart)",
            ["qpu"],
            registry=r,
        )
        self.reservation_grant_duration = Histogram(
            "qubelet_dra_reservation_grant_duration_seconds",
            "Time from the scheduler's allocation to the provider's grant",
            ["qpu"],
            buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
            registry=r,
        )
        self.reservation_provider_errors = Counter(
            "qubelet_dra_reservation_provider_errors",
            "Reservation calls the provider did not answer: timeout, unavailable, unauthorized, protocol",
            ["qpu", "kind"],
            registry=r,
        )
        self.reservations_pending = Gauge(
            "qubelet_dra_reservations_pending",
            "Allocated devices whose reservation is not granted yet (their pods wait in PreBind)",
            ["qpu"],
            registry=r,
        )
        self.reservation_oldest_pending = Gauge(
            "qubelet_dra_reservation_oldest_pending_seconds",
            "Age of the oldest allocation still waiting for its reservation (0 when none)",
            ["qpu"],
            registry=r,
        )

    def record_qpus(self, qpus: Iterable[QPUConfig], health: Mapping[str, bool]) -> None:
        """Export each published QPU's current fidelity and health."""
        for qpu in qpus:
            self.qpu_healthy.labels(qpu=qpu.name).set(1 if health.get(qpu.name) else 0)
            if qpu.fidelity_2q is not None:
                self.qpu_fidelity_2q.labels(qpu=qpu.name).set(qpu.fidelity_2q)
