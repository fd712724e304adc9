"""The DRA view of the QPU inventory: which devices exist, in which pool, for which QPU.

A QPU with ``replicas: N`` (time-slicing, as in the device plugin) is published as N devices
``<qpu>-r0 … <qpu>-r{N-1}`` (the device plugin's device ids) so that N claims can hold it at once,
exactly like the device plugin's N extended-resource units. Where a QPU's devices live follows
its binding (:mod:`qubelet.inventory.binding`): a QPU bound to one node lives in that node's
pool (named after the node); every other QPU gets one network-attached pool of its own,
``<location>/<qpu>`` (``cloud/apollo``, ``onprem/adonis``), published once for the cluster.
A node name never contains "/", so the two kinds of pool cannot collide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from qubelet.inventory import QPUConfig, device_id
from qubelet.inventory.binding import is_node_local, local_qpus, shared_qpus

__all__ = [
    "QPUDevice",
    "all_devices",
    "devices_for",
    "is_node_local",
    "network_devices",
    "network_pool",
    "node_devices",
]


@dataclass(frozen=True)
class QPUDevice:
    """One allocatable DRA device: a replica of a configured QPU."""

    name: str
    pool: str
    qpu: QPUConfig


def devices_for(qpu: QPUConfig, pool: str) -> list[QPUDevice]:
    """The devices one QPU contributes (one per replica)."""
    return [QPUDevice(device_id(qpu.name, i), pool, qpu) for i in range(max(1, qpu.replicas))]


def node_devices(qpus: Iterable[QPUConfig], node_name: str) -> list[QPUDevice]:
    """Devices of the QPUs bound to ``node_name`` alone, in the node's own pool."""
    return [d for q in local_qpus(qpus, node_name) for d in devices_for(q, node_name)]


def network_devices(qpus: Iterable[QPUConfig]) -> list[QPUDevice]:
    """Devices of every QPU not bound to a single node, each QPU in a pool of its own."""
    return [d for q in shared_qpus(qpus) for d in devices_for(q, network_pool(q))]


def all_devices(qpus: Iterable[QPUConfig], node_name: str) -> dict[str, QPUDevice]:
    """Every device a claim prepared on this node may name (this node's and shared ones), by name.

    QPUs bound to other nodes are absent: a claim naming one is not for this node.
    """
    qpus = tuple(qpus)
    return {d.name: d for d in [*node_devices(qpus, node_name), *network_devices(qpus)]}


def network_pool(qpu: QPUConfig) -> str:
    """Pool name of a shared QPU (pool names are DNS subdomains separated by ``/``)."""
    return f"{qpu.location}/{qpu.name}"
