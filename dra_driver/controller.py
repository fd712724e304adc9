"""The cluster-wide controller: publishes the network-attached pools of shared QPUs, once.

A cloud QPU (or an on-prem QPU several nodes reach) must appear in exactly one pool for the
whole cluster (``allNodes``, its ``nodeSelector`` or its ``nodes``), never once per node; QPUs
bound to a single node are that node's kubelet plugin's business
(:mod:`qubelet.inventory.binding`). Several
controller replicas may run; only the holder of a coordination.k8s.io/v1 Lease reconciles, the
others stand by and take over when the lease expires (client-go's leaderelection rules:
acquire when absent or expired, renew while held, optimistic concurrency via resourceVersion).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

from dra_driver.calibration import CalibrationSource
from dra_driver.client import ResourceAPI
from dra_driver.constants import CONTROLLER_PUBLISHER, LEASE_NAME, LEASE_NAMESPACE, PUBLISHER_LABEL
from dra_driver.devices import network_devices
from dra_driver.health import HealthBroadcaster
from dra_driver.metrics import DRAMetrics
from dra_driver.reconcile import ReconcileResult, SliceReconciler
from dra_driver.reservations.controller import ReservationController
from dra_driver.slices import UnhealthyMode, network_slices
from qubelet import klog, leader
from qubelet.inventory import Config, HealthMonitor, ProbeResult, QPUConfig, probe_once
from qubelet.inventory.binding import shared_qpus
from qubelet.inventory.names import DRIVER_NAME

log = klog.get_logger("qubelet.dra.controller")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaderElector(leader.LeaderElector):
    """The controller's elector: the Lease ``qubelet-system/<LEASE_NAME>`` unless told otherwise."""

    def __init__(
        self,
        api: ResourceAPI,
        identity: str,
        namespace: str = LEASE_NAMESPACE,
        name: str = LEASE_NAME,
        lease_duration_seconds: int = 15,
        now: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        super().__init__(
            api,
            identity,
            namespace=namespace,
            name=name,
            lease_duration_seconds=lease_duration_seconds,
            now=now,
        )


class CloudController:
    """Publishes the shared QPUs' pools while it is the leader."""

    def __init__(
        self,
        config: Config,
        api: ResourceAPI,
        identity: str,
        *,
        unhealthy_mode: UnhealthyMode = "remove",
        lease_duration_seconds: int = 15,
        metrics: DRAMetrics | None = None,
        probe: Callable[[QPUConfig], ProbeResult] = probe_once,
        now: Callable[[], dt.datetime] = _utcnow,
        calibration: CalibrationSource | None = None,
        reservations: ReservationController | None = None,
        reservation_resync_seconds: float = 2.0,
    ) -> None:
        self.config = config
        #: asks providers for reservations of allocated devices while leader (None: none configured)
        self.reservations = reservations
        self.reservation_resync_seconds = reservation_resync_seconds
        self._reservation_thread: threading.Thread | None = None
        #: refreshes the fidelities/calibration time the slices publish (None: the inventory's)
        self.calibration = calibration
        self.qpus = shared_qpus(config.qpus)
        self.api = api
        self.unhealthy_mode = unhealthy_mode
        self.metrics = metrics or DRAMetrics()
        self.elector = LeaderElector(api, identity, lease_duration_seconds=lease_duration_seconds, now=now)
        self.broadcaster = HealthBroadcaster(network_devices(self.qpus))
        self.monitor = HealthMonitor(
            self.qpus,
            on_change=self.broadcaster.set,
            probe=probe,
            flip_after=config.flags.health_flip_after_probes,
            hold_seconds=config.flags.health_hold_seconds,
        )
        self.reconciler = SliceReconciler(
            api,
            label_selector=f"{PUBLISHER_LABEL}={CONTROLLER_PUBLISHER}",
            field_selector=f"spec.driver={DRIVER_NAME}",
        )
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.broadcaster.add_listener(self._wake.set)
        if reservations is not None:
            reservations.on_withheld_change = self._wake.set
        self._thread: threading.Thread | None = None
        #: Error of the last lease attempt ("" when it reached the API server), for /readyz.
        self.last_error: str | None = None

    def liveness_problem(self) -> str:
        """Why kubelet should restart the controller ("" while its loop runs)."""
        if self._thread is None or not self._thread.is_alive():
            return "controller loop is not running"
        return ""

    def readiness_problem(self) -> str:
        """Empty while holding the lease or waiting for it; else why the API server was not reached."""
        if self.elector.last_error is None or self.last_error is None:
            return "no leader election attempt yet"
        if self.elector.last_error:
            return f"cannot reach the lease: {self.elector.last_error}"
        return f"last slice update failed: {self.last_error}" if self.last_error else ""

    def probe_now(self, stop: threading.Event | None = None) -> None:
        """Probe every shared QPU once, concurrently (start-up, tests); ``stop`` ends it early."""
        for name, healthy in self.monitor.check_now(stop=stop).items():
            self.broadcaster.set(name, healthy)

    def run_once(self) -> ReconcileResult | None:
        """Renew/acquire the lease; when leader, reconcile the shared pools. None when not leader."""
        leader = self.elector.try_acquire_or_renew()
        self.metrics.is_leader.set(1 if leader else 0)
        if not leader:
            return None
        health = self.broadcaster.snapshot()
        qpus = self.calibration.current(self.qpus) if self.calibration else self.qpus
        withheld = self.reservations.withheld() if self.reservations is not None else set()
        desired = network_slices(qpus, health, self.unhealthy_mode, withheld)
        result = self.reconciler.reconcile(desired)
        self.metrics.slices_published.set(len(desired))
        self.metrics.record_qpus(qpus, health)
        devices = network_devices(self.qpus)
        healthy = sum(1 for d in devices if health.get(d.qpu.name))
        self.metrics.devices.labels(health="healthy").set(healthy)
        self.metrics.devices.labels(health="unhealthy").set(len(devices) - healthy)
        self.metrics.reconciles.labels(result="changed" if result.changed else "unchanged").inc()
        return result

    def start(self, stop: threading.Event | None = None) -> None:
        """Probe, then loop: every lease_duration/3 (renew period) or on a health change.

        ``stop`` (the daemon's SIGTERM event) ends the start-up probe at once; nothing starts.
        """
        self.probe_now(stop)
        if stop is not None and stop.is_set():
            return
        self.monitor.start()
        self._thread = threading.Thread(target=self._run, name="dra-controller", daemon=True)
        self._thread.start()
        if self.reservations is not None:
            self._reservation_thread = threading.Thread(
                target=self._run_reservations, name="dra-reservations", daemon=True
            )
            self._reservation_thread.start()

    def _run_reservations(self) -> None:
        """Reconcile reservations while this replica holds the lease (the slice loop renews it)."""
        assert self.reservations is not None
        while not self._stop.is_set():
            if self.elector.is_leader:
                try:
                    self.reservations.reconcile()
                except Exception as exc:
                    log.error("reservation reconcile failed; will retry", err=str(exc))
            self._stop.wait(self.reservation_resync_seconds)

    def _run(self) -> None:
        period = max(1.0, self.elector.lease_duration_seconds / 3)
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.run_once()
                self.last_error = ""
            except Exception as exc:
                self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self.metrics.reconciles.labels(result="error").inc()
                log.error("shared pool reconcile failed; will retry", err=str(exc))
            self._wake.wait(period)

    def stop(self) -> None:
        """Stop reconciling and probing, and give up leadership (bounded wait)."""
        self._stop.set()
        self._wake.set()
        self.monitor.stop()
        for thread in (self._thread, self._reservation_thread):
            if thread is not None:
                thread.join(timeout=10)
