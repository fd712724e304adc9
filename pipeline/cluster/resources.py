"""Per-backend-class pod shape: queue, requests, and how a step asks for its accelerator.

One place for the numbers the Kueue ClusterQueue quotas (manifests/kueue/clusterqueue.yaml) are
sized against, so the rendered Workflow and the quota stay consistent.
"""

from __future__ import annotations

from typing import Any, Literal

from pipeline.cluster.claims import resource_claim_template
from qubelet.inventory.names import DEVICE_CLASS_NAME, DRIVER_NAME, RESOURCE_NAME

Kind = Literal["cpu", "gpu", "qpu"]

#: Kueue LocalQueue per backend class (manifests/kueue/localqueues.yaml).
QUEUES: dict[str, str] = {"cpu": "qubelet-cpu", "gpu": "qubelet-gpu", "qpu": "qubelet-qpu"}
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

#: The QPU resource and DeviceClass names are shared with the manifests: qubelet.inventory.names.
QPU_CLAIM_TEMPLATE = "qpu"
QPU_CLAIM_NAME = "qpu"
GPU_RESOURCE = "nvidia.com/gpu"

#: Requests/limits per class. Generate/reconstruct run as "cpu". QPU steps mostly wait on the
#: device, so they ask for little CPU.
_REQUESTS: dict[str, dict[str, str]] = {
    "cpu": {"cpu": "1", "memory": "2Gi"},
    "gpu": {"cpu": "2", "memory": "8Gi"},
    "qpu": {"cpu": "500m", "memory": "1Gi"},
}
_MEMORY_LIMITS: dict[str, str] = {"cpu": "4Gi", "gpu": "16Gi", "qpu": "2Gi"}

QpuRequest = Literal["claim", "extended-resource"]


def container_resources(
    kind: str, qpu_request: QpuRequest = "claim", with_claims: bool = True
) -> dict[str, Any]:
    """The container ``resources`` block for a step of backend class ``kind``.

    GPU steps ask for one ``nvidia.com/gpu``. QPU steps either name the pod-level claim ``qpu``
    (``with_claims``; the claim itself lives on the pod) or ask for the extended resource, which
    the device plugin or DRA's DeviceClass ``extendedResourceName`` serves. Extended resources
    cannot be overcommitted, so requests equal limits.
    """
    requests: dict[str, Any] = dict(_REQUESTS[kind])
    limits: dict[str, Any] = {"memory": _MEMORY_LIMITS[kind]}
    out: dict[str, Any] = {"requests": requests, "limits": limits}
    if kind == "gpu":
        requests[GPU_RESOURCE] = "1"
        limits[GPU_RESOURCE] = "1"
    elif kind == "qpu":
        if qpu_request == "extended-resource":
            requests[RESOURCE_NAME] = "1"
            limits[RESOURCE_NAME] = "1"
        elif with_claims:
            out["claims"] = [{"name": QPU_CLAIM_NAME}]
    return out


def claim_template_name(min_qubits: int | None) -> str:
    """The ResourceClaimTemplate a QPU step uses: ``qpu``, or a generated one for a qubit floor."""
    if not min_qubits:
        return QPU_CLAIM_TEMPLATE
    return f"qpu-min-{int(min_qubits)}q"


def claim_template(name: str, namespace: str, min_qubits: int) -> dict[str, Any]:
    """A resource.k8s.io/v1 ResourceClaimTemplate for one QPU with at least ``min_qubits`` qubits.

    ExactCount with count 1 is the only request shape Kueue charges quota for
    (``resources.deviceClassMappings``); the CEL selector reads the driver's ``qubits`` attribute.
    """
    selector = {"cel": {"expression": f'device.attributes["{DRIVER_NAME}"].qubits >= {int(min_qubits)}'}}
    request = {
        "name": "qpu",
        "exactly": {
            "deviceClassName": DEVICE_CLASS_NAME,
            "allocationMode": "ExactCount",
            "count": 1,
            "selectors": [selector],
        },
    }
    return resource_claim_template(name, namespace, request)
