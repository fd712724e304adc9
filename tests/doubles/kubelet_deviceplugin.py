"""A stand-in for kubelet's device manager, for device plugin tests and the benchmark.

Real kubelet serves ``v1beta1.Registration`` on ``<dir>/kubelet.sock``; when a plugin registers
it dials ``<dir>/<endpoint>``, asks for the plugin's options, and consumes ``ListAndWatch`` for as
long as both live; at pod admission it calls ``GetPreferredAllocation`` and ``Allocate``. This
double does the same over real gRPC on real unix sockets (no mocks of the plugin side), records
what it saw, and can simulate a kubelet restart: stop serving, delete ``kubelet.sock``, serve a
new one (new inode), dropping every connection to plugins the way a restarted kubelet does.

Only the newest registration may own the connection: every registration (and every stop) bumps
a generation, and a connect thread installs its channel only if its generation is still the
current one; otherwise it closes what it opened. Without this, a connect thread left over from
an earlier restart could finish late and tear down (or replace) the newest connection, and a
restart-storm test would fail, or pass, by thread scheduling rather than by the plugin.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path

import grpc

from qpu_device_plugin.api.v1beta1 import api_pb2, api_pb2_grpc

KUBELET_SOCKET = "kubelet.sock"
SUPPORTED_VERSIONS = ("v1beta1",)


class _Registration(api_pb2_grpc.RegistrationServicer):
    def __init__(self, kubelet: TestKubelet) -> None:
        self.kubelet = kubelet

    def Register(self, request: api_pb2.RegisterRequest, context: grpc.ServicerContext) -> api_pb2.Empty:
        if request.version not in SUPPORTED_VERSIONS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported version {request.version!r}")
        self.kubelet._on_register(request)
        return api_pb2.Empty()


class TestKubelet:
    """Serves the real Registration service and drives registered plugins like kubelet does."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.socket_path = self.dir / KUBELET_SOCKET
        self.registrations: list[api_pb2.RegisterRequest] = []
        self.options: api_pb2.DevicePluginOptions | None = None
        self.updates: list[dict[str, str]] = []  # every ListAndWatch response: id -> health
        self.update_times: list[float] = []
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None
        self._channel: grpc.Channel | None = None
        self._stub: api_pb2_grpc.DevicePluginStub | None = None
        self._stream: grpc.Future | None = None
        self._generation = 0  # bumped by every registration and stop; see the module docstring
        self.connects_finished = 0  # connect threads that are done (installed or gave up)
        self._registrations_at_start = 0

    # -- kubelet process lifecycle -------------------------------------------------------------

    def start(self) -> TestKubelet:
        self.dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        api_pb2_grpc.add_RegistrationServicer_to_server(_Registration(self), server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        server.start()
        with self._cond:
            self._server = server
            self._registrations_at_start = len(self.registrations)
        return self

    def stop(self) -> None:
        with self._cond:
            self._generation += 1  # connect threads still running belong to the old kubelet
        self._disconnect()
        if self._server is not None:
            self._server.stop(grace=0).wait(timeout=2)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def restart(self, remove_plugin_sockets: bool = False) -> None:
        """Simulate a kubelet restart: connections dropped, kubelet.sock deleted and recreated.

        With ``remove_plugin_sockets`` it also deletes every other socket in the directory, as
        real kubelet's device manager does when it starts.
        """
        self.stop()
        if remove_plugin_sockets:
            for path in self.dir.iterdir():
                if path.is_socket():
                    path.unlink()
        self.start()

    def __enter__(self) -> TestKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what kubelet does after a plugin registers --------------------------------------------

    def _on_register(self, request: api_pb2.RegisterRequest) -> None:
        with self._cond:
            self.registrations.append(request)
            self._generation += 1
            generation = self._generation
            self._cond.notify_all()
        # Kubelet answers Register first and connects to the plugin afterwards, asynchronously.
        threading.Thread(target=self._connect, args=(request.endpoint, generation), daemon=True).start()

    def _connect(self, endpoint: str, generation: int) -> None:
        try:
            self._connect_once(endpoint, generation)
        finally:
            with self._cond:
                self.connects_finished += 1
                self._cond.notify_all()

    def _connect_once(self, endpoint: str, generation: int) -> None:
        channel = grpc.insecure_channel(f"unix://{self.dir / endpoint}")
        stub = api_pb2_grpc.DevicePluginStub(channel)
        try:
            options = stub.GetDevicePluginOptions(api_pb2.Empty(), timeout=5)
        except grpc.RpcError:
            channel.close()
            return
        stream = stub.ListAndWatch(api_pb2.Empty())
        with self._cond:
            current = generation == self._generation
            if current:
                old = (self._stream, self._channel)
                self.options = options
                self._channel, self._stub, self._stream = channel, stub, stream
        if not current:  # a newer registration (or a stop) happened meanwhile: not ours to install
            stream.cancel()
            channel.close()
            return
        if old[0] is not None:
            old[0].cancel()
        if old[1] is not None:
            old[1].close()
        threading.Thread(target=self._consume, args=(stream, generation), daemon=True).start()

    def _consume(self, stream: object, generation: int) -> None:
        try:
            for response in stream:  # type: ignore[attr-defined]
                update = {d.ID: d.health for d in response.devices}
                with self._cond:
                    if generation != self._generation:
                        return  # a late message from a replaced connection
                    self.updates.append(update)
                    self.update_times.append(time.monotonic())
                    self._cond.notify_all()
        except grpc.RpcError:
            pass  # cancelled by a restart/stop, or the plugin went away

    def _disconnect(self) -> None:
        with self._cond:
            stream, channel = self._stream, self._channel
            self._stream = self._channel = self._stub = None
        if stream is not None:
            stream.cancel()
        if channel is not None:
            channel.close()

    # -- waiting and calling -------------------------------------------------------------------

    def wait_for_registrations(self, count: int, timeout: float = 10.0) -> list[api_pb2.RegisterRequest]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.registrations) >= count, timeout=timeout):
                raise TimeoutError(f"expected {count} registrations, got {len(self.registrations)}")
            return list(self.registrations)

    def wait_registered_since_start(self, timeout: float = 10.0) -> None:
        """Wait until a plugin registered with this kubelet since its last (re)start."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: len(self.registrations) > self._registrations_at_start, timeout=timeout
            ):
                raise TimeoutError("no registration since the last kubelet start")

    def wait_for_connects(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` connect threads (one per registration) have finished."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.connects_finished >= count, timeout=timeout):
                raise TimeoutError(f"expected {count} finished connects, got {self.connects_finished}")

    def wait_for_devices(
        self, predicate: Callable[[dict[str, str]], bool], timeout: float = 5.0, after: int = 0
    ) -> dict[str, str]:
        """The first ListAndWatch update (index >= ``after``) satisfying ``predicate``."""

        def found() -> dict[str, str] | None:
            for update in self.updates[after:]:
                if predicate(update):
                    return update
            return None

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout=timeout):
                last = self.updates[-1] if self.updates else None
                raise TimeoutError(f"no matching ListAndWatch update within {timeout}s; last: {last}")
            result = found()
            assert result is not None
            return result

    def wait_for_health(self, device_id: str, health: str, timeout: float = 5.0, after: int = 0) -> float:
        """Wait for an update (index >= ``after``) showing ``device_id`` as ``health``; when it arrived."""
        with self._cond:
            for _ in range(2):
                for index in range(after, len(self.updates)):
                    if self.updates[index].get(device_id) == health:
                        return self.update_times[index]
                self._cond.wait_for(
                    lambda: any(u.get(device_id) == health for u in self.updates[after:]), timeout=timeout
                )
        raise TimeoutError(f"{device_id} not {health} within {timeout}s")

    @property
    def stub(self) -> api_pb2_grpc.DevicePluginStub:
        with self._cond:
            if self._stub is None:
                raise RuntimeError("no plugin connected")
            return self._stub

    def wait_connected(self, timeout: float = 10.0) -> api_pb2_grpc.DevicePluginStub:
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._stub is not None and bool(self.updates), timeout=timeout
            ):
                raise TimeoutError("plugin not connected")
            assert self._stub is not None
            return self._stub

    def allocate(self, *containers: Sequence[str], timeout: float = 5.0) -> api_pb2.AllocateResponse:
        request = api_pb2.AllocateRequest(
            container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=list(ids)) for ids in containers]
        )
        return self.stub.Allocate(request, timeout=timeout)

    def preferred(
        self, available: Sequence[str], size: int, must_include: Sequence[str] = (), timeout: float = 5.0
    ) -> list[str]:
        request = api_pb2.PreferredAllocationRequest(
            container_requests=[
                api_pb2.ContainerPreferredAllocationRequest(
                    available_deviceIDs=list(available),
                    must_include_deviceIDs=list(must_include),
                    allocation_size=size,
                )
            ]
        )
        response = self.stub.GetPreferredAllocation(request, timeout=timeout)
        return list(response.container_responses[0].deviceIDs)
