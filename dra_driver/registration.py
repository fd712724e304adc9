"""The kubelet plugin-registration service (``pluginregistration.Registration``).

kubelet's plugin watcher finds ``<registry-dir>/qpu.quantum.example.com-reg.sock``, calls
GetInfo to learn that this is a DRAPlugin, where its DRA socket is and which gRPC services it
serves (``supported_versions`` lists service names, exactly as the upstream kubeletplugin helper
does), then reports the outcome with NotifyRegistrationStatus. A failed registration is
logged and the plugin keeps running: kubelet retries when it re-scans the directory.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from dra_driver.api.pluginregistration.v1 import api_pb2 as reg_pb2
from dra_driver.api.pluginregistration.v1 import api_pb2_grpc as reg_grpc
from dra_driver.constants import PLUGIN_TYPE, SUPPORTED_VERSIONS
from qubelet import klog
from qubelet.inventory.names import DRIVER_NAME

log = klog.get_logger("qubelet.dra.registration")


class RegistrationService(reg_grpc.RegistrationServicer):
    """Answers kubelet's plugin watcher for one DRA driver."""

    def __init__(self, dra_endpoint: str, supported_versions: Sequence[str] = SUPPORTED_VERSIONS) -> None:
        self.dra_endpoint = dra_endpoint
        self.supported_versions = list(supported_versions)
        self.registered: bool | None = None
        self.last_error = ""

    def GetInfo(self, request: reg_pb2.InfoRequest, context: grpc.ServicerContext) -> reg_pb2.PluginInfo:
        """Tell kubelet who we are: driver name, DRA endpoint and the service versions we serve."""
        return reg_pb2.PluginInfo(
            type=PLUGIN_TYPE,
            name=DRIVER_NAME,
            endpoint=self.dra_endpoint,
            supported_versions=self.supported_versions,
        )

    def NotifyRegistrationStatus(
        self, request: reg_pb2.RegistrationStatus, context: grpc.ServicerContext
    ) -> reg_pb2.RegistrationStatusResponse:
        """Record kubelet's verdict on our registration (logged; a refusal is an error)."""
        self.registered = request.plugin_registered
        self.last_error = request.error
        if request.plugin_registered:
            log.info("registered with kubelet", driver=DRIVER_NAME, endpoint=self.dra_endpoint)
        else:
            log.error("kubelet rejected registration; still serving", err=request.error, driver=DRIVER_NAME)
        return reg_pb2.RegistrationStatusResponse()
