"""The kubelet ``v1beta1.DevicePlugin`` gRPC service for QPUs.

Split like NVIDIA's ``internal/plugin/server.go`` vs ``internal/rm``: :class:`DeviceState` holds
what is advertised (devices and per-QPU health) and wakes ListAndWatch streams on every change
through a condition variable, so a health flip reaches kubelet in milliseconds rather than at the
next poll; :class:`QPUDevicePluginServicer` answers kubelet's calls from that state. A bad request
is answered with a gRPC status (INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION), never an
exception that takes the server down.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from typing import NoReturn

import grpc

from qpu_device_plugin.api.v1beta1 import api_pb2, api_pb2_grpc
from qpu_device_plugin.cdi import cdi_name
from qpu_device_plugin.constants import HEALTHY, UNHEALTHY
from qpu_device_plugin.metrics import PluginMetrics
from qubelet import klog
from qubelet.inventory import MAX_DEVICE_ID_LENGTH, Config, Device, devices_for, qpu_env
from qubelet.inventory.names import ENV_IQM_TOKENS_FILE, TOKENS_MOUNT_PATH
from qubelet.inventory.tokens import TokenMounts, TokenRefused

log = klog.get_logger("qubelet.device_plugin.server")

#: Env listing every QPU a container got, when it got devices of more than one QPU.
ENV_QPU_NAMES = "QUBELET_QPU_NAMES"

#: Open ListAndWatch streams allowed at once. Each open stream holds one gRPC worker thread for
#: its whole life; kubelet keeps exactly one, plus a lingering one for a moment after it
#: restarts. When another stream opens beyond this, the oldest is ended, so streams can never
#: hold more than this many workers and the unary calls (Allocate) always find a free one.
MAX_WATCH_STREAMS = 4
#: Worker threads kept for unary calls (GetPreferredAllocation, Allocate, ...).
UNARY_WORKERS = 16
#: The server's thread pool: room for every allowed stream, the one being admitted, and the
#: unary workers.
SERVER_WORKERS = MAX_WATCH_STREAMS + 1 + UNARY_WORKERS


class _Watch:
    """One open ListAndWatch stream; ``evicted`` is set when a newer stream displaced it."""

    __slots__ = ("evicted",)

    def __init__(self) -> None:
        self.evicted = False


class DeviceState:
    """Devices, per-QPU health and a version counter that ListAndWatch streams wait on."""

    def __init__(
        self, config: Config, metrics: PluginMetrics | None = None, tokens: TokenMounts | None = None
    ) -> None:
        self.config = config
        #: token files: confined to the Secret's mount, staged where the node can see them
        self.tokens = tokens or TokenMounts()
        self.devices: dict[str, Device] = {d.id: d for d in devices_for(config)}
        #: whether Allocate names CDI devices: only once the spec defining them is written
        self.cdi_names = False
        self._health: dict[str, bool] = {qpu.name: False for qpu in config.qpus}
        self._metrics = metrics
        self.cond = threading.Condition()
        self.version = 0
        self._publish()

    def set_health(self, qpu_name: str, healthy: bool) -> None:
        """Record a QPU's health (the health monitor's ``on_change``) and wake the watchers."""
        with self.cond:
            if qpu_name not in self._health or self._health[qpu_name] == healthy:
                return
            self._health[qpu_name] = healthy
            self.version += 1
            self.cond.notify_all()
        self._publish()

    def set_all(self, health: dict[str, bool]) -> None:
        """Record many QPUs' health at once (start-up snapshot)."""
        with self.cond:
            changed = False
            for name, healthy in health.items():
                if name in self._health and self._health[name] != healthy:
                    self._health[name] = healthy
                    changed = True
            if changed:
                self.version += 1
                self.cond.notify_all()
        self._publish()

    def qpu_healthy(self, qpu_name: str) -> bool:
        """Whether QPU ``qpu_name`` passed its last probe."""
        with self.cond:
            return self._health.get(qpu_name, False)

    def device_list(self) -> list[api_pb2.Device]:
        """The full list kubelet is sent: every device with its QPU's health."""
        with self.cond:
            health = dict(self._health)
        return [
            api_pb2.Device(ID=d.id, health=HEALTHY if health[d.qpu.name] else UNHEALTHY)
            for d in self.devices.values()
        ]

    def _publish(self) -> None:
        if self._metrics is None:
            return
        with self.cond:
            healthy = sum(1 for d in self.devices.values() if self._health[d.qpu.name])
        self._metrics.set_devices(healthy, len(self.devices) - healthy)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


class QPUDevicePluginServicer(api_pb2_grpc.DevicePluginServicer):
    """Answers kubelet's DevicePlugin calls for ``quantum.example.com/qpu``.

    One servicer per gRPC server lifetime: :meth:`close` ends its ListAndWatch streams when the
    plugin restarts its server (kubelet restart) or shuts down.
    """

    def __init__(self, state: DeviceState, metrics: PluginMetrics | None = None) -> None:
        self.state = state
        self.metrics = metrics
        self._closed = False
        self._watches: list[_Watch] = []  # oldest first; guarded by state.cond

    def close(self) -> None:
        """End every open ListAndWatch stream of this servicer."""
        with self.state.cond:
            self._closed = True
            self.state.cond.notify_all()

    # -- kubelet calls ------------------------------------------------------------------------

    def GetDevicePluginOptions(
        self, request: api_pb2.Empty, context: grpc.ServicerContext
    ) -> api_pb2.DevicePluginOptions:
        """Tell kubelet we implement GetPreferredAllocation (and not PreStartContainer)."""
        return options()

    def ListAndWatch(
        self, request: api_pb2.Empty, context: grpc.ServicerContext
    ) -> Iterator[api_pb2.ListAndWatchResponse]:
        """Send the device list now and on every health change, until kubelet or we stop."""
        cond = self.state.cond
        context.add_callback(lambda: _notify(cond))  # wake the wait below when kubelet hangs up
        watch = _Watch()
        with cond:
            self._watches.append(watch)
            if len(self._watches) > MAX_WATCH_STREAMS:
                self._watches.pop(0).evicted = True
                cond.notify_all()
                log.info("too many ListAndWatch streams, ended the oldest", limit=MAX_WATCH_STREAMS)
            seen = self.state.version
        try:
            yield api_pb2.ListAndWatchResponse(devices=self.state.device_list())
            while True:
                with cond:
                    # The timeout only bounds how long a vanished client can hold a worker
                    # thread; changes are delivered by notify_all, not by this timeout.
                    cond.wait_for(partial(self._should_wake, seen, context, watch), timeout=5.0)
                    if self._closed or watch.evicted or not context.is_active():
                        return
                    if self.state.version == seen:
                        continue
                    seen = self.state.version
                yield api_pb2.ListAndWatchResponse(devices=self.state.device_list())
        finally:
            with cond:
                if watch in self._watches:
                    self._watches.remove(watch)

    def _should_wake(self, seen: int, context: grpc.ServicerContext, watch: _Watch) -> bool:
        return self._closed or watch.evicted or self.state.version != seen or not context.is_active()

    def GetPreferredAllocation(
        self, request: api_pb2.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> api_pb2.PreferredAllocationResponse:
        """Prefer healthy devices, spread over the least used QPUs."""
        if not request.container_requests:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "no container_requests")
        responses = []
        for index, creq in enumerate(request.container_requests):
            if creq.allocation_size <= 0:
                _abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"container_requests[{index}]: allocation_size must be positive, "
                    f"got {creq.allocation_size}",
                )
            chosen = self.preferred(
                list(creq.available_deviceIDs), list(creq.must_include_deviceIDs), creq.allocation_size
            )
            responses.append(api_pb2.ContainerPreferredAllocationResponse(deviceIDs=chosen))
        return api_pb2.PreferredAllocationResponse(container_responses=responses)

    def Allocate(
        self, request: api_pb2.AllocateRequest, context: grpc.ServicerContext
    ) -> api_pb2.AllocateResponse:
        """Give each container its QPU's env, token mount and CDI device; refuse unknown devices."""
        try:
            responses = [
                self._allocate_container(index, list(creq.devices_ids))
                for index, creq in enumerate(request.container_requests)
            ]
            if not responses:
                raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "no container_requests")
        except _Reject as rej:
            if self.metrics is not None:
                self.metrics.allocation_errors.labels(code=rej.code.name).inc()
            log.warning("Allocate rejected", code=rej.code.name, reason=rej.message)
            _abort(context, rej.code, rej.message)
        if self.metrics is not None:
            self.metrics.allocations.inc(len(responses))
        return api_pb2.AllocateResponse(container_responses=responses)

    def PreStartContainer(
        self, request: api_pb2.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> api_pb2.PreStartContainerResponse:
        # Nothing to reset on a QPU (pre_start_required is false); still check the ids so a
        # caller that does use it gets a useful answer.
        """Nothing to do before a container starts (not requested in the options)."""
        for device_id in request.devices_ids:
            if device_id not in self.state.devices:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"unknown device id {device_id[:80]!r}")
        return api_pb2.PreStartContainerResponse()

    # -- logic ---------------------------------------------------------------------------------

    def _allocate_container(self, index: int, ids: list[str]) -> api_pb2.ContainerAllocateResponse:
        where = f"container_requests[{index}]"
        if not ids:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: no devices_ids")
        if len(set(ids)) != len(ids):
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: duplicate device ids")
        devices: list[Device] = []
        for device_id in ids:
            if not device_id or len(device_id) > MAX_DEVICE_ID_LENGTH or not device_id.isprintable():
                raise _Reject(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{where}: malformed device id {device_id[:80]!r}"
                )
            device = self.state.devices.get(device_id)
            if device is None:
                raise _Reject(grpc.StatusCode.NOT_FOUND, f"{where}: unknown device id {device_id!r}")
            if not self.state.qpu_healthy(device.qpu.name):
                raise _Reject(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{where}: device {device_id!r} is unhealthy (QPU {device.qpu.name})",
                )
            devices.append(device)
        qpus = list(dict.fromkeys(d.qpu.name for d in devices))
        primary = devices[0].qpu
        envs = qpu_env(primary)
        if len(qpus) > 1:
            envs[ENV_QPU_NAMES] = ",".join(qpus)
        mounts = []
        token = None
        if primary.tokens_file:
            try:
                token = self.state.tokens.host_path(primary.name, primary.tokens_file)
            except TokenRefused as exc:
                raise _Reject(grpc.StatusCode.FAILED_PRECONDITION, f"{where}: {exc}") from None
            except OSError as exc:
                why = f"{where}: QPU {primary.name} token: {exc.strerror or exc}"
                raise _Reject(grpc.StatusCode.FAILED_PRECONDITION, why) from None
        if token is not None:
            mounts.append(api_pb2.Mount(container_path=TOKENS_MOUNT_PATH, host_path=token, read_only=True))
        else:  # a fake backend without its token file: run without one, never a dangling mount
            envs.pop(ENV_IQM_TOKENS_FILE, None)
        cdi = [api_pb2.CDIDevice(name=cdi_name(name)) for name in qpus] if self.state.cdi_names else []
        return api_pb2.ContainerAllocateResponse(envs=envs, mounts=mounts, cdi_devices=cdi)

    def preferred(self, available: list[str], must_include: list[str], size: int) -> list[str]:
        """Pick ``size`` devices: ``must_include`` first, then spread over QPUs.

        Each further device goes to the QPU that is healthy, has had the fewest devices picked in
        this allocation, and is least used on the node (kubelet's ``available`` list tells us how
        many of its replicas are free). Unknown ids are skipped; fewer than ``size`` may come back.
        """
        chosen = list(dict.fromkeys(must_include))[:size]
        free: dict[str, list[Device]] = {}
        for device_id in dict.fromkeys(available):
            device = self.state.devices.get(device_id)
            if device is not None and device_id not in chosen:
                free.setdefault(device.qpu.name, []).append(device)
        picked: dict[str, int] = {}
        for device_id in chosen:
            device = self.state.devices.get(device_id)
            if device is not None:
                picked[device.qpu.name] = picked.get(device.qpu.name, 0) + 1
        replicas = {qpu.name: qpu.replicas for qpu in self.state.config.qpus}
        while len(chosen) < size and any(free.values()):

            def score(name: str) -> tuple[bool, int, int, str]:
                used = replicas[name] - len(free[name])
                return (not self.state.qpu_healthy(name), picked.get(name, 0), used, name)

            name = min((n for n, devs in free.items() if devs), key=score)
            device = min(free[name], key=lambda d: d.replica)
            free[name].remove(device)
            picked[name] = picked.get(name, 0) + 1
            chosen.append(device.id)
        return chosen


class _Reject(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _notify(cond: threading.Condition) -> None:
    with cond:
        cond.notify_all()


def options() -> api_pb2.DevicePluginOptions:
    """What we tell kubelet at registration and in GetDevicePluginOptions."""
    return api_pb2.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)
