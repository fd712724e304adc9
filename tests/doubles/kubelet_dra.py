"""TestKubeletDRA: stands in for kubelet's side of a DRA driver (no kubelet runs here).

It does what kubelet 1.34 does, on the real unix sockets and the real gRPC contract:
its plugin watcher finds ``*.sock`` files in the plugins_registry directory, dials one, calls
``Registration.GetInfo``, checks type/name/supported services, and answers with
``NotifyRegistrationStatus``; then it dials the DRA endpoint from GetInfo and calls
``DRAPlugin.NodePrepareResources``/``NodeUnprepareResources`` (v1, or v1beta1 as an older
kubelet would) and reads the ``DRAResourceHealth.NodeWatchResources`` stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc

from dra_driver.api.dra.v1 import api_pb2 as v1
from dra_driver.api.dra.v1 import api_pb2_grpc as v1_grpc
from dra_driver.api.dra.v1beta1 import api_pb2 as v1beta1
from dra_driver.api.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from dra_driver.api.dra_health.v1 import api_pb2 as health_v1
from dra_driver.api.dra_health.v1 import api_pb2_grpc as health_v1_grpc
from dra_driver.api.dra_health.v1alpha1 import api_pb2 as health_v1alpha1
from dra_driver.api.dra_health.v1alpha1 import api_pb2_grpc as health_v1alpha1_grpc
from dra_driver.api.pluginregistration.v1 import api_pb2 as reg_pb2
from dra_driver.api.pluginregistration.v1 import api_pb2_grpc as reg_grpc

#: Services kubelet 1.34 knows how to use, in its order of preference.
KUBELET_KNOWN_SERVICES = ("v1.DRAPlugin", "v1beta1.DRAPlugin")
#: Health services kubelet 1.37 knows, newest first (``healthServicesSupportedByKubelet``).
KUBELET_HEALTH_SERVICES = ("v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth")

ClaimTuple = tuple[str, str, str]  # namespace, uid, name


class TestKubeletDRA:
    """Registration + DRA client, like kubelet's plugin manager and DRA manager."""

    __test__ = False  # not a pytest test class

    def __init__(
        self, registry_dir: str | Path, timeout: float = 5.0, node_root: str | Path | None = None
    ) -> None:
        self.registry_dir = Path(registry_dir)
        self.timeout = timeout
        #: Where the node's "/" is for this kubelet: a plugin in a container reports its endpoint
        #: as a host path, which a test's fake node keeps under a temporary directory.
        self.node_root = Path(node_root) if node_root is not None else None
        self.info: reg_pb2.PluginInfo | None = None
        self._channels: list[grpc.Channel] = []
        self._dra: grpc.Channel | None = None

    def _channel(self, path: str | Path) -> grpc.Channel:
        channel = grpc.insecure_channel(f"unix://{path}")
        grpc.channel_ready_future(channel).result(timeout=self.timeout)
        self._channels.append(channel)
        return channel

    def wait_for_socket(self) -> Path:
        """Poll the registry directory (bounded) the way the plugin watcher notices a new socket."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            socks = sorted(self.registry_dir.glob("*.sock"))
            if socks:
                return socks[0]
            time.sleep(0.02)
        raise TimeoutError(f"no registration socket appeared in {self.registry_dir}")

    def register(self, accept: bool = True, error: str = "") -> reg_pb2.PluginInfo:
        """GetInfo, validate, NotifyRegistrationStatus; then connect to the DRA endpoint."""
        stub = reg_grpc.RegistrationStub(self._channel(self.wait_for_socket()))
        info = stub.GetInfo(reg_pb2.InfoRequest(), timeout=self.timeout)
        usable = [v for v in KUBELET_KNOWN_SERVICES if v in info.supported_versions]
        ok = accept and info.type == "DRAPlugin" and bool(usable) and bool(info.endpoint)
        stub.NotifyRegistrationStatus(
            reg_pb2.RegistrationStatus(
                plugin_registered=ok, error=error or ("" if ok else "no supported DRA service")
            ),
            timeout=self.timeout,
        )
        self.info = info
        #: the health service kubelet 1.37 would watch (``pickHealthService``; "" for none)
        self.health_service = next((v for v in KUBELET_HEALTH_SERVICES if v in info.supported_versions), "")
        if ok:
            endpoint = info.endpoint
            if self.node_root is not None:
                endpoint = str(self.node_root / endpoint.lstrip("/"))
            self._dra = self._channel(endpoint)
        return info

    def _dra_channel(self) -> grpc.Channel:
        if self._dra is None:
            raise RuntimeError("register() first: kubelet only calls registered plugins")
        return self._dra

    def prepare(self, claims: Iterable[ClaimTuple], version: str = "v1") -> dict[str, Any]:
        """NodePrepareResources; returns the response's claims map (uid → per-claim response)."""
        pb, stub_cls = (
            (v1, v1_grpc.DRAPluginStub) if version == "v1" else (v1beta1, v1beta1_grpc.DRAPluginStub)
        )
        request = pb.NodePrepareResourcesRequest(
            claims=[pb.Claim(namespace=ns, uid=uid, name=name) for ns, uid, name in claims]
        )
        response = stub_cls(self._dra_channel()).NodePrepareResources(request, timeout=self.timeout)
        return dict(response.claims)

    @staticmethod
    def container_cdi_devices(claim: Any, request: str = "") -> list[str]:
        """The CDI ids kubelet gives a container that names ``request`` of a prepared claim.

        kubelet's ``ClaimInfo.cdiDevicesAsList``: a container naming no request gets every
        device; otherwise only devices whose ``request_names`` contain the name exactly (a
        container's ``resources.claims[].request`` names the claim's top-level request).
        """
        return [
            cdi_id
            for device in claim.devices
            if not request or not device.request_names or request in device.request_names
            for cdi_id in device.cdi_device_ids
        ]

    def unprepare(self, claims: Iterable[ClaimTuple], version: str = "v1") -> dict[str, Any]:
        """NodeUnprepareResources; returns uid → per-claim response."""
        pb, stub_cls = (
            (v1, v1_grpc.DRAPluginStub) if version == "v1" else (v1beta1, v1beta1_grpc.DRAPluginStub)
        )
        request = pb.NodeUnprepareResourcesRequest(
            claims=[pb.Claim(namespace=ns, uid=uid, name=name) for ns, uid, name in claims]
        )
        response = stub_cls(self._dra_channel()).NodeUnprepareResources(request, timeout=self.timeout)
        return dict(response.claims)

    def watch_health(self, timeout: float | None = None, version: str = "v1") -> Any:
        """The NodeWatchResources stream of dra-health ``version`` (cancelled after ``timeout``)."""
        pb, grpc_mod = (
            (health_v1, health_v1_grpc) if version == "v1" else (health_v1alpha1, health_v1alpha1_grpc)
        )
        stub = grpc_mod.DRAResourceHealthStub(self._dra_channel())
        return stub.NodeWatchResources(pb.NodeWatchResourcesRequest(), timeout=timeout or self.timeout)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        self._dra = None
