"""The DRA view of the QPU inventory: which devices exist, in which pool, for which QPU.

A QPU with ``replicas: N`` (time-slicing, as in the device plugin) is published as N devices
``<qpu>-r0 … <qpu>-r{N-1}`` (the device plugin's device ids) so that N claims can hold it at once,
exactly like the device plugin's N extended-resource units. On-prem QPUs live in the node's pool
(named after the node); each cloud QPU gets its own network-attached pool ``cloud/<qpu>`` (its
node selector is per QPU; a node name never contains "/", so the two kinds cannot collide).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from qubelet.inventory import QPUConfig, device_id


@dataclass(frozen=True)
class QPUDevice:
    """One allocatable DRA device: a replica of a configured QPU."""

    name: str
    pool: str
    qpu: QPUConfig


def is_node_local(qpu: QPUConfig) -> bool:
    """On-prem QPUs are reached from one node; cloud QPUs from every node (network-attached)."""
    return qpu.location == "onprem"


def devices_for(qpu: QPUConfig, pool: str) -> list[QPUDevice]:
    """The devices one QPU contributes (one per replica)."""
    return [QPUDevice(device_id(qpu.name, i), pool, qpu) for i in range(max(1, qpu.replicas))]


def node_devices(qpus: Iterable[QPUConfig], node_name: str) -> list[QPUDevice]:
    """Devices of the on-prem QPUs, in the node's own pool."""
    return [d for q in qpus if is_node_local(q) for d in devices_for(q, node_name)]


def cloud_devices(qpus: Iterable[QPUConfig]) -> list[QPUDevice]:
    """Devices of the cloud QPUs, each QPU in a pool ``cloud/<qpu>`` of its own."""
    return [d for q in qpus if not is_node_local(q) for d in devices_for(q, cloud_pool(q))]


def all_devices(qpus: Iterable[QPUConfig], node_name: str) -> dict[str, QPUDevice]:
    """Every device a claim prepared on this node may name (node-local and cloud), by name."""
    qpus = tuple(qpus)
    return {d.name: d for d in [*node_devices(qpus, node_name), *cloud_devices(qpus)]}


def cloud_pool(qpu: QPUConfig) -> str:
    """Pool name of a cloud QPU (pool names are DNS subdomains separated by ``/``)."""
    return f"cloud/{qpu.name}"
