"""The DRA gRPC services kubelet calls: ``DRAPlugin`` in v1 and in v1beta1 (same semantics).

Both versions are thin translations between their generated messages and :class:`QPUDriver`;
kubelet 1.34 prefers v1 and still speaks v1beta1, so serving both keeps older kubelets working.

Request names go out as the claim's top-level request: an allocation from a ``firstAvailable``
list is for ``qpu/<subrequest>``, but kubelet matches a container's ``resources.claims[].request``
(which can only name ``qpu``) against these names, so the upstream kubeletplugin helper strips the
subrequest (``stripSubrequestNames``) and so do we. The checkpoint keeps the full reference.
"""

from __future__ import annotations

from typing import Any

import grpc

from dra_driver.api.dra.v1 import api_pb2 as v1
from dra_driver.api.dra.v1 import api_pb2_grpc as v1_grpc
from dra_driver.api.dra.v1beta1 import api_pb2 as v1beta1
from dra_driver.api.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from dra_driver.driver import ClaimRef, QPUDriver


def _refs(claims: Any) -> list[ClaimRef]:
    return [ClaimRef(namespace=c.namespace, uid=c.uid, name=c.name) for c in claims]


def base_request(reference: str) -> str:
    """The top-level request of a request reference (``qpu/model-apollo`` → ``qpu``)."""
    return reference.split("/", 1)[0]


def _prepare(driver: QPUDriver, request: Any, pb: Any, with_share_id: bool) -> Any:
    results = driver.prepare(_refs(request.claims))
    response = pb.NodePrepareResourcesResponse()
    for uid, result in results.items():
        entry = response.claims[uid]
        if result.error:
            entry.error = result.error
            continue
        for d in result.devices:
            device = entry.devices.add(
                request_names=[base_request(name) for name in d.request_names],
                pool_name=d.pool_name,
                device_name=d.device_name,
                cdi_device_ids=list(d.cdi_device_ids),
            )
            if with_share_id and d.share_id:
                device.share_id = d.share_id
    return response


def _unprepare(driver: QPUDriver, request: Any, pb: Any) -> Any:
    response = pb.NodeUnprepareResourcesResponse()
    for uid, error in driver.unprepare(_refs(request.claims)).items():
        response.claims[uid].error = error
    return response


class DRAPluginV1(v1_grpc.DRAPluginServicer):
    """``k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin`` (registered as "v1.DRAPlugin")."""

    def __init__(self, driver: QPUDriver) -> None:
        self.driver = driver

    def NodePrepareResources(
        self, request: v1.NodePrepareResourcesRequest, context: grpc.ServicerContext
    ) -> v1.NodePrepareResourcesResponse:
        """Prepare the claims kubelet lists (DRA v1); each claim succeeds or fails alone."""
        return _prepare(self.driver, request, v1, with_share_id=True)

    def NodeUnprepareResources(
        self, request: v1.NodeUnprepareResourcesRequest, context: grpc.ServicerContext
    ) -> v1.NodeUnprepareResourcesResponse:
        """Unprepare the claims kubelet lists (DRA v1); unknown claims are already done."""
        return _unprepare(self.driver, request, v1)


class DRAPluginV1Beta1(v1beta1_grpc.DRAPluginServicer):
    """``k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin`` (registered as "v1beta1.DRAPlugin")."""

    def __init__(self, driver: QPUDriver) -> None:
        self.driver = driver

    def NodePrepareResources(
        self, request: v1beta1.NodePrepareResourcesRequest, context: grpc.ServicerContext
    ) -> v1beta1.NodePrepareResourcesResponse:
        """Prepare the claims kubelet lists (DRA v1beta1, same semantics as v1)."""
        return _prepare(self.driver, request, v1beta1, with_share_id=False)

    def NodeUnprepareResources(
        self, request: v1beta1.NodeUnprepareResourcesRequest, context: grpc.ServicerContext
    ) -> v1beta1.NodeUnprepareResourcesResponse:
        """Unprepare the claims kubelet lists (DRA v1beta1, same semantics as v1)."""
        return _unprepare(self.driver, request, v1beta1)
