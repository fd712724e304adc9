"""The per-node kubelet plugin: registration, DRA services, health stream and the node pool.

Runs as a DaemonSet on every node that may run QPU pods. It publishes the node-local pool
(QPUs bound to this node alone, ``spec.nodeName`` = this node) and prepares claims for those
and for every shared QPU (cloud, or on-prem reached from several nodes), because kubelet calls
the plugin on whichever node the pod landed on. QPUs bound to other nodes are neither published
nor probed here. Start order copies the upstream helper: the DRA socket first, then the
registration socket, so kubelet never learns of an endpoint that does not answer yet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from dra_driver.api.dra.v1 import api_pb2_grpc as v1_grpc
from dra_driver.api.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from dra_driver.api.pluginregistration.v1 import api_pb2_grpc as reg_grpc
from dra_driver.calibration import CalibrationSource
from dra_driver.cdi import DEFAULT_TOKENS_SECRET
from dra_driver.client import ResourceAPI
from dra_driver.constants import CHECKPOINT_FILE, DRA_SOCKET, PUBLISHER_LABEL, REGISTRATION_SOCKET
from dra_driver.devices import all_devices
from dra_driver.driver import QPUDriver
from dra_driver.grpc_server import serve_unix, stop_unix
from dra_driver.health import HealthBroadcaster, add_health_services
from dra_driver.metrics import DRAMetrics
from dra_driver.reconcile import ReconcileResult, SliceReconciler
from dra_driver.registration import RegistrationService
from dra_driver.services import DRAPluginV1, DRAPluginV1Beta1
from dra_driver.slices import KUBELET_PLUGIN_PUBLISHER, UnhealthyMode, node_slices
from qubelet import klog
from qubelet.inventory import Config, HealthMonitor, ProbeResult, QPUConfig, probe_once
from qubelet.inventory.names import DRIVER_NAME
from qubelet.inventory.tokens import TOKENS_ROOT

log = klog.get_logger("qubelet.dra.kubelet_plugin")


class SliceLoop:
    """Re-publishes slices on every wake-up (health change) and every ``resync_seconds``.

    Passes are at least ``min_interval_seconds`` apart however often it is woken: wake-ups in
    between coalesce into one write (a flapping QPU once made 49 slice writes in 10 s).
    """

    def __init__(
        self,
        reconcile: Callable[[], ReconcileResult],
        resync_seconds: float,
        name: str,
        min_interval_seconds: float = 1.0,
    ) -> None:
        self._reconcile = reconcile
        self.resync_seconds = resync_seconds
        self.min_interval_seconds = min_interval_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.errors = 0

    def start(self) -> None:
        """Start the reconcile thread (it publishes at once)."""
        if not self._thread.is_alive():
            self._thread.start()

    def wake(self) -> None:
        """Reconcile now instead of at the next resync (health changed)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the reconcile thread and wait (bounded) for it."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        last = float("-inf")
        while not self._stop.is_set():
            pause = last + self.min_interval_seconds - time.monotonic()
            if pause > 0 and self._stop.wait(pause):
                return
            last = time.monotonic()
            self._wake.clear()
            wait = self.resync_seconds
            try:
                self._reconcile()
            except Exception as exc:  # API errors: retry soon, never die
                self.errors += 1
                log.error("resource slice reconcile failed; will retry", err=str(exc))
                wait = min(self.resync_seconds, 2.0)
            self._wake.wait(wait)


class KubeletPlugin:
    """One node's DRA kubelet plugin for ``qpu.quantum.example.com``."""

    def __init__(
        self,
        config: Config,
        node_name: str,
        plugins_dir: str | Path,
        registry_dir: str | Path,
        cdi_dir: str | Path,
        api: ResourceAPI,
        *,
        unhealthy_mode: UnhealthyMode = "remove",
        resync_seconds: float = 30.0,
        metrics: DRAMetrics | None = None,
        probe: Callable[[QPUConfig], ProbeResult] = probe_once,
        publish_slices: bool = True,
        tokens_dir: str | Path | None = None,
        tokens_secret: str = DEFAULT_TOKENS_SECRET,
        calibration: CalibrationSource | None = None,
        tokens_root: str | Path = TOKENS_ROOT,
        tokens_gid: int | None = None,
        socket_check_seconds: float = 1.0,
        slice_min_interval_seconds: float = 1.0,
    ) -> None:
        self.config = config
        #: refreshes the fidelities/calibration time the slices publish (None: the inventory's)
        self.calibration = calibration
        self.node_name = node_name
        self.plugin_dir = Path(plugins_dir) / DRIVER_NAME
        self.dra_socket = self.plugin_dir / DRA_SOCKET
        self.registration_socket = Path(registry_dir) / REGISTRATION_SOCKET
        self.cdi_dir = Path(cdi_dir)
        self.api = api
        self.unhealthy_mode = unhealthy_mode
        self.metrics = metrics or DRAMetrics()
        self.devices = all_devices(config.qpus, node_name)
        self.driver = QPUDriver(
            api,
            self.devices.values(),
            cdi_dir,
            self.plugin_dir / CHECKPOINT_FILE,
            self.metrics,
            tokens_dir=tokens_dir,
            tokens_secret=tokens_secret,
            tokens_root=tokens_root,
            tokens_gid=tokens_gid,
        )
        self.broadcaster = HealthBroadcaster(self.devices.values())
        mine = {d.qpu.name for d in self.devices.values()}
        self.monitor = HealthMonitor(
            [q for q in config.qpus if q.name in mine],
            on_change=self.broadcaster.set,
            probe=probe,
            flip_after=config.flags.health_flip_after_probes,
            hold_seconds=config.flags.health_hold_seconds,
        )
        self.registration = RegistrationService(str(self.dra_socket))
        self.reconciler = SliceReconciler(
            api,
            label_selector=f"{PUBLISHER_LABEL}={KUBELET_PLUGIN_PUBLISHER}",
            field_selector=f"spec.driver={DRIVER_NAME},spec.nodeName={node_name}",
        )
        self.publish_slices = publish_slices
        self._node_uid: str | None = None
        self.loop = SliceLoop(
            self.reconcile_slices, resync_seconds, "dra-node-slices", slice_min_interval_seconds
        )
        self.broadcaster.add_listener(self.loop.wake)
        self._dra_server: grpc.Server | None = None
        self._reg_server: grpc.Server | None = None
        #: how often the registration socket's presence is checked (recreated when deleted)
        self.socket_check_seconds = socket_check_seconds
        self._stopping = threading.Event()
        self._socket_watch = threading.Thread(
            target=self._watch_registration_socket, name="dra-reg-socket", daemon=True
        )

    def reconcile_slices(self) -> ReconcileResult:
        """Publish this node's pool from the current health (one pass)."""
        health = self.broadcaster.snapshot()
        qpus = self.calibration.current(self.config.qpus) if self.calibration else self.config.qpus
        if self._node_uid is None:  # the slices' owner; read once, as the upstream helper does
            self._node_uid = str(self.api.read_node(self.node_name).metadata.uid)
        desired = node_slices(qpus, self.node_name, health, self.unhealthy_mode, self._node_uid)
        try:
            result = self.reconciler.reconcile(desired)
        except Exception:
            self.metrics.reconciles.labels(result="error").inc()
            raise
        self.metrics.reconciles.labels(result="changed" if result.changed else "unchanged").inc()
        self.metrics.slices_published.set(len(desired))
        node_qpus = [d for d in self.devices.values() if d.pool == self.node_name]
        self.metrics.record_qpus([q for q in qpus if any(d.qpu.name == q.name for d in node_qpus)], health)
        healthy = sum(1 for d in node_qpus if health.get(d.qpu.name))
        self.metrics.devices.labels(health="healthy").set(healthy)
        self.metrics.devices.labels(health="unhealthy").set(len(node_qpus) - healthy)
        return result

    def _add_dra(self, server: grpc.Server) -> None:
        v1_grpc.add_DRAPluginServicer_to_server(DRAPluginV1(self.driver), server)
        v1beta1_grpc.add_DRAPluginServicer_to_server(DRAPluginV1Beta1(self.driver), server)
        add_health_services(self.broadcaster, server)

    def start(self, stop: threading.Event | None = None) -> None:
        """Restore specs and checkpoint (``QPUDriver.restore``), probe, serve, register, loop.

        ``stop`` (the daemon's SIGTERM event) ends the start-up probe at once; nothing is served
        then, and :meth:`stop` still cleans up.
        """
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        self.cdi_dir.mkdir(parents=True, exist_ok=True)
        self.driver.restore()
        health = self.monitor.check_now(stop=stop)
        if stop is not None and stop.is_set():
            return
        for name, healthy in health.items():
            self.broadcaster.set(name, healthy)
        self._dra_server = serve_unix(self.dra_socket, self._add_dra)
        self._reg_server = self._serve_registration()
        self._socket_watch.start()
        log.info(
            "kubelet plugin serving",
            driver=DRIVER_NAME,
            node=self.node_name,
            draSocket=str(self.dra_socket),
            registrationSocket=str(self.registration_socket),
            devices=len(self.devices),
            prepared=len(self.driver.state.uids()),
        )
        self.monitor.start()
        if self.publish_slices:
            self.loop.start()

    def _serve_registration(self) -> grpc.Server:
        return serve_unix(
            self.registration_socket,
            lambda s: reg_grpc.add_RegistrationServicer_to_server(self.registration, s),
            workers=2,
        )

    def _watch_registration_socket(self) -> None:
        """Recreate the registration socket when it is deleted (kubelet then registers again).

        kubelet's plugin watcher learns of a plugin only from a socket file appearing in its
        registry directory; a deleted one (an admin's rm, a cleanup script) leaves the node
        unable to prepare until the pod restarts. The old server is stopped, a new one bound,
        and the registration state reset, so ``/readyz`` fails until kubelet has registered it.
        """
        while not self._stopping.wait(self.socket_check_seconds):
            if self._reg_server is None or self.registration_socket.is_socket():
                continue
            log.warning("registration socket is gone; recreating it", path=str(self.registration_socket))
            self.registration.registered = None
            self._reg_server.stop(0).wait(3)  # fully down: its teardown must not touch the new file
            try:
                self._reg_server = self._serve_registration()
            except (OSError, RuntimeError) as exc:
                log.error("could not recreate registration socket; will retry", err=str(exc))
                continue
            log.info("recreated registration socket", path=str(self.registration_socket))

    def liveness_problem(self) -> str:
        """Why kubelet should restart this container ("" when both gRPC servers are up)."""
        if self._dra_server is None or self._reg_server is None:
            return "gRPC servers not started"
        socks = [self.dra_socket]
        if not self._socket_watch.is_alive():  # else the watch recreates it within a second
            socks.append(self.registration_socket)
        for sock in socks:
            if not sock.is_socket():
                return f"socket {sock} is gone (kubelet cannot reach the plugin)"
        return ""

    def readiness_problem(self) -> str:
        """Why this node cannot prepare claims yet ("" once kubelet accepted the registration)."""
        if not self.registration_socket.is_socket():
            return f"registration socket {self.registration_socket} is gone (being recreated)"
        if self.registration.registered is None:
            return "waiting for kubelet to register the plugin"
        if not self.registration.registered:
            return f"kubelet rejected the registration: {self.registration.last_error or 'no reason'}"
        return ""

    def stop(self) -> None:
        """Unregister first (remove the registration socket), then stop serving."""
        self.driver.stopping.set()  # a prepare waiting on a hung API answers now
        self._stopping.set()
        if self._socket_watch.is_alive():
            self._socket_watch.join(timeout=5)
        if self.publish_slices:
            self.loop.stop()
        self.monitor.stop()
        stop_unix(self._reg_server, self.registration_socket)
        stop_unix(self._dra_server, self.dra_socket)
        self._reg_server = self._dra_server = None
