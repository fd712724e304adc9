"""The device-plugin kubelet double itself: a late connect never wins over a newer registration.

Restart-storm tests trust the double to end up connected to the plugin that registered last.
Here two minimal plugin servers (real gRPC, real unix sockets) register one after the other;
the first one's GetDevicePluginOptions is held until the second is connected and streaming,
which is exactly the interleaving a kubelet restart storm produces with a slow plugin.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from doubles.kubelet_deviceplugin import TestKubelet

from qpu_device_plugin.api.v1beta1 import api_pb2, api_pb2_grpc

pytestmark = pytest.mark.timeout(30)


class NamedPlugin(api_pb2_grpc.DevicePluginServicer):
    """Answers with its own name; can hold GetDevicePluginOptions until released."""

    def __init__(self, name: str, hold: bool) -> None:
        self.name = name
        self.release = threading.Event()
        self.asked = threading.Event()
        if not hold:
            self.release.set()
        self.streams_open = 0
        self.changed = threading.Condition()

    def GetDevicePluginOptions(
        self, request: api_pb2.Empty, context: grpc.ServicerContext
    ) -> api_pb2.DevicePluginOptions:
        self.asked.set()
        self.release.wait(10)
        return api_pb2.DevicePluginOptions()

    def ListAndWatch(
        self, request: api_pb2.Empty, context: grpc.ServicerContext
    ) -> Iterator[api_pb2.ListAndWatchResponse]:
        with self.changed:
            self.streams_open += 1
            self.changed.notify_all()
        try:
            yield api_pb2.ListAndWatchResponse(
                devices=[api_pb2.Device(ID=f"{self.name}-0", health="Healthy")]
            )
            ended = threading.Event()
            context.add_callback(ended.set)
            ended.wait(20)
        finally:
            with self.changed:
                self.streams_open -= 1
                self.changed.notify_all()

    def wait(self, predicate: Callable[[], bool]) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout=5)

    def Allocate(
        self, request: api_pb2.AllocateRequest, context: grpc.ServicerContext
    ) -> api_pb2.AllocateResponse:
        return api_pb2.AllocateResponse(
            container_responses=[api_pb2.ContainerAllocateResponse(envs={"PLUGIN": self.name})]
        )


def serve(directory: Path, name: str, servicer: NamedPlugin) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_pb2_grpc.add_DevicePluginServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix://{directory / name}")
    server.start()
    return server


def register(directory: Path, endpoint: str) -> None:
    with grpc.insecure_channel(f"unix://{directory / 'kubelet.sock'}") as channel:
        api_pb2_grpc.RegistrationStub(channel).Register(
            api_pb2.RegisterRequest(
                version="v1beta1", endpoint=endpoint, resource_name="quantum.example.com/qpu"
            ),
            timeout=5,
        )


def test_late_connect_of_older_registration_does_not_replace_newer() -> None:
    directory = Path(tempfile.mkdtemp(prefix="kd"))
    old, new = NamedPlugin("old", hold=True), NamedPlugin("new", hold=False)
    servers = [serve(directory, "old.sock", old), serve(directory, "new.sock", new)]
    kubelet = TestKubelet(directory).start()
    try:
        register(directory, "old.sock")
        assert old.asked.wait(5)  # the old registration's connect is now in flight, held
        register(directory, "new.sock")
        kubelet.wait_for_devices(lambda u: "new-0" in u)
        old.release.set()  # the stale connect finishes last
        kubelet.wait_for_registrations(2)
        kubelet.wait_for_connects(2)  # the stale connect is done: it took over, or gave up
        # It must have noticed it is stale and hung up; before the fix it took over instead.
        assert old.wait(lambda: old.streams_open == 0), "stale connection left streaming"
        response = kubelet.allocate(["new-0"])
        assert response.container_responses[0].envs["PLUGIN"] == "new"
        assert new.streams_open == 1
        assert all("old-0" not in u for u in kubelet.updates)
    finally:
        kubelet.stop()
        for server in servers:
            server.stop(0).wait(2)
        shutil.rmtree(directory, ignore_errors=True)
