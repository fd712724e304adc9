"""Build the ResourceSlices (resource.k8s.io/v1) that describe QPUs to the scheduler.

Pure functions from inventory + health to ``kubernetes.client.V1ResourceSlice`` objects, so the
reconcile loop can diff them against what the API server holds. Attributes use unqualified names,
which the API puts in the driver's domain: CEL sees them as
``device.attributes["qpu.quantum.example.com"].qubits``. Attributes have no float type, so each
fidelity is published twice: as a string for people and as integer parts per million
(``fidelity2qPpm``) for CEL comparisons; ``calibrationTime`` is unix seconds. Unhealthy devices
either leave the slice (default; works on every 1.34 cluster) or stay with a ``NoSchedule``
DeviceTaint when the cluster serves the DRADeviceTaints feature.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

from kubernetes import client as k8s

from dra_driver.constants import (
    CONTROLLER_PUBLISHER,
    PUBLISHER_LABEL,
    RESERVATION_FAILED_CONDITION,
    RESERVED_CONDITION,
    UNHEALTHY_TAINT_KEY,
)
from dra_driver.devices import QPUDevice, network_devices, network_pool, node_devices
from qubelet.inventory import QPUConfig
from qubelet.inventory.binding import local_qpus, shared_qpus
from qubelet.inventory.names import DRIVER_NAME

UnhealthyMode = Literal["remove", "taint"]
KUBELET_PLUGIN_PUBLISHER = "kubelet-plugin"

_serializer: k8s.ApiClient | None = None
#: One client Configuration shared by every model built here: without it each model constructor
#: builds its own Configuration, which is 90% of the cost of describing 1,000 devices.
_CONFIG = k8s.Configuration()
_Attribute = functools.partial(k8s.V1DeviceAttribute, local_vars_configuration=_CONFIG)
_Device = functools.partial(k8s.V1Device, local_vars_configuration=_CONFIG)
_Capacity = functools.partial(k8s.V1DeviceCapacity, local_vars_configuration=_CONFIG)
_Taint = functools.partial(k8s.V1DeviceTaint, local_vars_configuration=_CONFIG)


def to_dict(obj: Any) -> Any:
    """The JSON form of a client model (camelCase keys, as the API server stores it)."""
    global _serializer
    if _serializer is None:
        _serializer = k8s.ApiClient()
    return _serializer.sanitize_for_serialization(obj)


def _fmt(value: float | None) -> str | None:
    return None if value is None else f"{value:g}"


def device_attributes(qpu: QPUConfig, healthy: bool) -> dict[str, k8s.V1DeviceAttribute]:
    """The attributes (names fixed in docs/dra-driver.md) of one QPU's devices."""
    attrs: dict[str, k8s.V1DeviceAttribute] = {
        "qpu": _Attribute(string=qpu.name),
        "vendor": _Attribute(string=qpu.vendor),
        "model": _Attribute(string=qpu.model),
        "qubits": _Attribute(int=int(qpu.qubits)),
        "technology": _Attribute(string=qpu.technology),
        "location": _Attribute(string=qpu.location),
        "topology": _Attribute(string=qpu.topology),
        "health": _Attribute(string="Healthy" if healthy else "Unhealthy"),
    }
    for key, value in (("fidelity2q", qpu.fidelity_2q), ("readoutFidelity", qpu.readout_fidelity)):
        text = _fmt(value)
        if text is not None and value is not None:
            attrs[key] = _Attribute(string=text)
            attrs[key + "Ppm"] = _Attribute(int=ppm(value))
    if qpu.calibration_time is not None:
        attrs["calibrationTime"] = _Attribute(int=int(qpu.calibration_time))
    return attrs


def ppm(fraction: float) -> int:
    """A fidelity as integer parts per million (what CEL selectors compare against)."""
    return round(fraction * 1_000_000)


def device_model(device: QPUDevice, healthy: bool, mode: UnhealthyMode) -> k8s.V1Device:
    """One slice entry; in taint mode an unhealthy device carries a NoSchedule taint.

    A QPU with ``reservation:`` carries binding conditions: the scheduler waits in PreBind until
    the reservation controller sets ``reserved`` (or ``reservation-failed``) on the claim.
    ``bindsToNode`` stays unset: a cloud reservation holds for whichever node the pod runs on.
    """
    taints = None
    if not healthy and mode == "taint":
        taints = [_Taint(key=UNHEALTHY_TAINT_KEY, value="true", effect="NoSchedule")]
    reserve = device.qpu.reservation is not None
    return _Device(
        name=device.name,
        attributes=device_attributes(device.qpu, healthy),
        capacity={"qubits": _Capacity(value=str(int(device.qpu.qubits)))},
        taints=taints,
        binding_conditions=[RESERVED_CONDITION] if reserve else None,
        binding_failure_conditions=[RESERVATION_FAILED_CONDITION] if reserve else None,
    )


def pool_devices(
    devices: Iterable[QPUDevice], health: Mapping[str, bool], mode: UnhealthyMode
) -> list[k8s.V1Device]:
    """The slice entries for ``devices``: healthy ones, plus tainted unhealthy ones in taint mode."""
    out = []
    for d in devices:
        healthy = health.get(d.qpu.name, False)
        if healthy or mode == "taint":
            out.append(device_model(d, healthy, mode))
    return out


#: Upper bound of devices in one ResourceSlice (resource.k8s.io/v1 ResourceSliceMaxDevices).
MAX_DEVICES_PER_SLICE = 128
#: The bound when any device of the slice carries taints (resource.k8s.io/v1
#: ResourceSliceMaxDevicesWithAdvancedFeatures; enforced by the API server's validation).
MAX_TAINTED_DEVICES_PER_SLICE = 64


def slice_capacity(devices: Iterable[k8s.V1Device]) -> int:
    """How many of ``devices`` one slice may hold: 64 when any carries taints, else 128."""
    return MAX_TAINTED_DEVICES_PER_SLICE if any(d.taints for d in devices) else MAX_DEVICES_PER_SLICE


def slice_name(pool: str, index: int = 0) -> str:
    """Deterministic slice name per pool chunk: a re-create can never duplicate a slice.

    A network pool's name (``cloud/foo``) carries 8 hex digits of its sha256, so it cannot
    share slice names with a node called ``cloud-foo`` (node pools keep ``<node>-...``).
    """
    if "/" not in pool:
        return f"{pool}-{DRIVER_NAME}-{index}"
    digest = hashlib.sha256(pool.encode()).hexdigest()[:8]
    return f"{pool.replace('/', '-')}-{digest}-{DRIVER_NAME}-{index}"


def node_selector_for(labels: Mapping[str, str], names: Iterable[str] = ()) -> k8s.V1NodeSelector:
    """One term (the API allows exactly one in a slice): every label of ``labels``, or one of ``names``."""
    names = sorted(names)
    return k8s.V1NodeSelector(
        node_selector_terms=[
            k8s.V1NodeSelectorTerm(
                match_expressions=[
                    k8s.V1NodeSelectorRequirement(key=k, operator="In", values=[v])
                    for k, v in sorted(labels.items())
                ]
                or None,
                match_fields=[k8s.V1NodeSelectorRequirement(key="metadata.name", operator="In", values=names)]
                if names
                else None,
            )
        ]
    )


def build_pool(
    pool: str,
    devices: list[k8s.V1Device],
    publisher: str,
    *,
    node_name: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    node_names: Iterable[str] = (),
    generation: int = 1,
    owner: k8s.V1OwnerReference | None = None,
) -> list[k8s.V1ResourceSlice]:
    """The slices of one pool; exactly one of nodeName/nodeSelector/allNodes.

    Slices hold 128 devices each, or 64 when any device of the pool carries taints (the whole
    pool is cut the same way, so no slice can exceed the limit whichever device gets tainted).
    An empty pool still gets one (empty) slice, so the scheduler learns that the devices are
    gone rather than keeping an outdated list.
    """
    size = slice_capacity(devices)
    chunks = [devices[i : i + size] for i in range(0, len(devices), size)]
    chunks = chunks or [[]]
    out = []
    for index, chunk in enumerate(chunks):
        spec = k8s.V1ResourceSliceSpec(
            driver=DRIVER_NAME,
            pool=k8s.V1ResourcePool(name=pool, generation=generation, resource_slice_count=len(chunks)),
            devices=chunk,
        )
        if node_name:
            spec.node_name = node_name
        elif node_selector or node_names:
            spec.node_selector = node_selector_for(node_selector or {}, node_names)
        else:
            spec.all_nodes = True
        out.append(
            k8s.V1ResourceSlice(
                api_version="resource.k8s.io/v1",
                kind="ResourceSlice",
                metadata=k8s.V1ObjectMeta(
                    name=slice_name(pool, index),
                    labels={PUBLISHER_LABEL: publisher},
                    owner_references=[owner] if owner else None,
                ),
                spec=spec,
            )
        )
    return out


def node_owner(node_name: str, node_uid: str) -> k8s.V1OwnerReference:
    """The controller reference to the Node that the upstream helper puts on node-local slices.

    With it the garbage collector deletes a node's slices when the Node object goes, so a node
    removed for good does not leave its devices offered to the scheduler.
    """
    return k8s.V1OwnerReference(api_version="v1", kind="Node", name=node_name, uid=node_uid, controller=True)


def node_slices(
    qpus: Iterable[QPUConfig],
    node_name: str,
    health: Mapping[str, bool],
    mode: UnhealthyMode = "remove",
    node_uid: str | None = None,
) -> list[k8s.V1ResourceSlice]:
    """The node pool (QPUs bound to this node alone), published by the node's kubelet plugin.

    No slice at all when no QPU is bound to this node (a node that only prepares claims for
    shared QPUs); an empty slice when they are all unhealthy, so the scheduler drops their devices.
    With ``node_uid`` the slices are owned by the Node (:func:`node_owner`).
    """
    qpus = tuple(qpus)
    if not local_qpus(qpus, node_name):
        return []
    devices = pool_devices(node_devices(qpus, node_name), health, mode)
    owner = node_owner(node_name, node_uid) if node_uid else None
    return build_pool(node_name, devices, KUBELET_PLUGIN_PUBLISHER, node_name=node_name, owner=owner)


def network_slices(
    qpus: Iterable[QPUConfig],
    health: Mapping[str, bool],
    mode: UnhealthyMode = "remove",
    withheld: Collection[str] = (),
) -> list[k8s.V1ResourceSlice]:
    """One network-attached pool per shared QPU (allNodes, or the nodes that reach it), for the controller.

    ``withheld`` QPUs (a provider just refused to reserve them) publish an empty pool for now, so
    the scheduler's next attempt takes another device rather than the refused one again.
    """
    out = []
    for q in shared_qpus(qpus):
        devices = [] if q.name in withheld else pool_devices(network_devices([q]), health, mode)
        out.extend(
            build_pool(
                network_pool(q),
                devices,
                CONTROLLER_PUBLISHER,
                node_selector=q.node_selector or None,
                node_names=q.nodes,
            )
        )
    return out
