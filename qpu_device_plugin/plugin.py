"""Device plugin lifecycle: serve, register with kubelet, follow kubelet restarts, shut down.

Kubelet forgets every device plugin when it restarts and recreates ``kubelet.sock``; upstream
plugins notice (fsnotify on the directory) and restart their server and register again. Here a
loop stats the directory every ``poll_interval`` seconds (0.5 s by default): a new ``kubelet.sock``
(inode or ctime changed) or our own socket gone means restart + re-register. Registration is
retried with capped exponential backoff while kubelet is absent; nothing here crashes the daemon.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

from qpu_device_plugin.api.v1beta1 import api_pb2, api_pb2_grpc
from qpu_device_plugin.constants import KUBELET_SOCKET, PLUGIN_SOCKET, VERSION
from qpu_device_plugin.metrics import PluginMetrics
from qpu_device_plugin.server import SERVER_WORKERS, DeviceState, QPUDevicePluginServicer, options
from qubelet import klog
from qubelet.errors import QubeletError
from qubelet.inventory import Config, HealthMonitor
from qubelet.inventory.names import RESOURCE_NAME
from qubelet.inventory.tokens import TokenMounts

log = klog.get_logger("qubelet.device_plugin")

_FileId = tuple[int, int]  # (inode, ctime_ns): changes when a socket file is recreated


class InitError(QubeletError, RuntimeError):
    """Start-up failed and ``flags.failOnInitError`` asks us to stop (one-line message)."""


def _file_id(path: Path) -> _FileId | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_ctime_ns)


class DevicePlugin:
    """One QPU device plugin instance bound to a kubelet device-plugins directory."""

    def __init__(
        self,
        config: Config,
        kubelet_dir: str | os.PathLike[str],
        *,
        metrics: PluginMetrics | None = None,
        monitor: HealthMonitor | None = None,
        poll_interval: float = 0.5,
        register_timeout: float = 5.0,
        max_backoff: float = 10.0,
        cdi_dir: str | os.PathLike[str] | None = None,
        tokens: TokenMounts | None = None,
    ) -> None:
        self.config = config
        self.dir = Path(kubelet_dir)
        self.socket_path = self.dir / PLUGIN_SOCKET
        self.kubelet_socket = self.dir / KUBELET_SOCKET
        self.metrics = metrics if metrics is not None else PluginMetrics()
        self.state = DeviceState(config, self.metrics, tokens)
        self.monitor = monitor or HealthMonitor(
            config.qpus,
            on_change=self.state.set_health,
            on_probe=self.metrics.observe_probe,
            flip_after=config.flags.health_flip_after_probes,
            hold_seconds=config.flags.health_hold_seconds,
        )
        #: where the CDI spec goes with ``flags.cdiEnabled`` (no CDI names without it)
        self.cdi_dir = cdi_dir
        self.poll_interval = poll_interval
        self.register_timeout = register_timeout
        self.max_backoff = max_backoff
        self.stop_event = threading.Event()
        self._server: grpc.Server | None = None
        self._servicer: QPUDevicePluginServicer | None = None
        self._socket_id: _FileId | None = None
        self._registered_with: _FileId | None = None
        self._backoff = 0.5
        self._next_attempt = 0.0
        self._waiting_logged = False
        self.registered = threading.Event()  # set after each successful registration (tests)
        self._last_step: float | None = None  # monotonic time of the last watch-loop pass

    # -- server --------------------------------------------------------------------------------

    def start_server(self) -> None:
        """(Re)start the gRPC server on our socket, removing a stale socket file first."""
        self.stop_server()
        self.dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        servicer = QPUDevicePluginServicer(self.state, self.metrics)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=SERVER_WORKERS, thread_name_prefix="dp-grpc")
        )
        api_pb2_grpc.add_DevicePluginServicer_to_server(servicer, server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        server.start()
        self._server, self._servicer = server, servicer
        self._socket_id = _file_id(self.socket_path)
        log.info("device plugin serving", socket=str(self.socket_path), devices=len(self.state.devices))

    def stop_server(self) -> None:
        """Stop the gRPC server (ends ListAndWatch streams) and remove our socket."""
        servicer, server = self._servicer, self._server
        self._servicer = self._server = None
        if servicer is not None:
            servicer.close()
        if server is not None:
            server.stop(grace=0.5).wait(timeout=2.0)
        if self._socket_id is not None and _file_id(self.socket_path) == self._socket_id:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        self._socket_id = None

    # -- registration --------------------------------------------------------------------------

    def register(self) -> bool:
        """Call ``Registration.Register`` on kubelet.sock once; True on success."""
        kubelet_id = _file_id(self.kubelet_socket)
        request = api_pb2.RegisterRequest(
            version=VERSION, endpoint=PLUGIN_SOCKET, resource_name=RESOURCE_NAME, options=options()
        )
        try:
            with grpc.insecure_channel(f"unix://{self.kubelet_socket}") as channel:
                api_pb2_grpc.RegistrationStub(channel).Register(request, timeout=self.register_timeout)
        except grpc.RpcError as exc:
            self.metrics.registrations.labels(result="failure").inc()
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            log.warning("registration with kubelet failed", err=str(detail).splitlines()[0] if detail else "")
            return False
        self.metrics.registrations.labels(result="success").inc()
        self._registered_with = kubelet_id
        log.info("registered with kubelet", resource=RESOURCE_NAME, endpoint=PLUGIN_SOCKET)
        self.registered.set()
        return True

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Probe once, start probing and serving; raises :class:`InitError` if asked to.

        All QPUs are probed at once, each under its own deadline, and a stop request (SIGTERM)
        ends the start-up probe at once; :meth:`run` then returns without serving.
        """
        health = self.monitor.check_now(stop=self.stop_event)
        if self.stop_event.is_set():
            return  # SIGTERM during the start-up probe: exit now, not after a hung probe
        self.state.set_all(health)
        reasons = self.monitor.reasons()
        unhealthy = sorted(name for name, ok in health.items() if not ok)
        why = "; ".join(f"{name}: {reasons[name]}" for name in unhealthy)
        if unhealthy and self.config.flags.fail_on_init_error:
            raise InitError(f"QPUs unhealthy at start-up (failOnInitError): {why}")
        if unhealthy:
            log.warning("QPUs unhealthy at start-up, advertising them as Unhealthy", qpus=why)
        self.monitor.start()
        self._write_cdi_spec()
        self.start_server()

    def _write_cdi_spec(self) -> None:
        """With ``cdiEnabled``, define the CDI devices Allocate names; name none if that fails."""
        if not (self.config.flags.cdi_enabled and self.cdi_dir):
            return
        from qpu_device_plugin.cdi import write_spec

        try:
            path = write_spec(self.cdi_dir, self.config)
        except OSError as exc:
            log.error(
                "cannot write the CDI spec; allocating without CDI devices",
                dir=str(self.cdi_dir),
                err=exc.strerror or str(exc),
            )
            return
        self.state.cdi_names = True
        log.info("wrote CDI spec", path=str(path), devices=len(self.config.qpus))

    def step(self, now: float) -> None:
        """One pass of the watch loop: follow kubelet restarts and (re)register when due."""
        socket_id = _file_id(self.socket_path)
        # ``_socket_id`` is None when the socket vanished between bind and stat in start_server
        # (kubelet deleting plugin sockets as it starts): None == None must not pass for "ours".
        if self._server is None or socket_id is None or socket_id != self._socket_id:
            log.warning("device plugin socket gone, restarting server", socket=str(self.socket_path))
            self.start_server()
            self._registered_with = None
            self._next_attempt = 0.0
        kubelet_id = _file_id(self.kubelet_socket)
        if kubelet_id is None:
            if not self._waiting_logged:
                log.info("waiting for kubelet", socket=str(self.kubelet_socket))
                self._waiting_logged = True
            return
        self._waiting_logged = False
        if kubelet_id == self._registered_with:
            return
        if self._registered_with is not None:
            # A different kubelet.sock than the one we registered with: kubelet restarted and
            # dropped us. Restart the server like upstream plugins do, then register again.
            log.info("kubelet restarted, restarting server and re-registering")
            self.registered.clear()
            self.start_server()
            self._registered_with = None
            self._next_attempt = 0.0
        if now < self._next_attempt:
            return
        if self.register():
            self._backoff = 0.5
        else:
            self._next_attempt = now + self._backoff
            self._backoff = min(self._backoff * 2, self.max_backoff)

    # -- probes (/healthz, /readyz) ------------------------------------------------------------

    def liveness_problem(self, now: float | None = None) -> str:
        """Why kubelet should restart the plugin ("" while the watch loop turns and serves)."""
        if self._server is None:
            return "gRPC server not running"
        if self._last_step is None:
            return "watch loop not started"
        stalled = (time.monotonic() if now is None else now) - self._last_step
        if stalled > max(30.0, 20 * self.poll_interval):
            return f"watch loop stalled for {stalled:.0f}s"
        return ""

    def readiness_problem(self) -> str:
        """Empty while registered with the kubelet.sock that exists now; else what we wait for."""
        kubelet_id = _file_id(self.kubelet_socket)
        if kubelet_id is None:
            return f"waiting for kubelet ({self.kubelet_socket} absent)"
        if kubelet_id != self._registered_with:
            return "not registered with the current kubelet"
        return ""

    def run(self) -> None:
        """Start, then watch until :meth:`shutdown` (or ``stop_event``) is set; then clean up."""
        try:
            self.start()
            while not self.stop_event.is_set():
                try:
                    self._last_step = time.monotonic()
                    self.step(self._last_step)
                except Exception as exc:  # the watch loop must outlive any single failure
                    log.error("device plugin watch loop error", err=exc)
                self.stop_event.wait(self.poll_interval)
        finally:
            self.close()

    def shutdown(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler)."""
        self.stop_event.set()

    def close(self) -> None:
        """Stop probing and serving, remove our socket."""
        self.monitor.stop()
        self.stop_server()
        log.info("device plugin stopped")
