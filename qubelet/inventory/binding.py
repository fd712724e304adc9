"""Which nodes reach which QPU, so each QPU is offered exactly once to the scheduler.

A QPU says where it is reachable from:

- ``nodes: [n1]``: one node (an on-prem QPU cabled to an access node). It is *node-local*: that
  node's DRA kubelet plugin publishes it in the node's own pool, and only that node's device
  plugin advertises it.
- ``nodes: [n1, n2]`` or ``nodeSelector: {label: value}``: several nodes share it. It goes into
  one network-attached pool (a ResourceSlice with a ``nodeSelector``) that the cluster
  controller publishes once; the scheduler may place the pod on any of those nodes.
- neither: every node reaches it (cloud QPUs, or an on-prem QPU on the cluster network). One
  ``allNodes`` pool, published once by the controller.

Publishing a QPU in every node's pool would let the scheduler hand one QPU to several pods (one
per node) with no claim seeing the others; these rules make that impossible by construction.
The device plugin cannot publish cluster-wide: each node advertises the QPUs it reaches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from qubelet.inventory.config import Config, QPUConfig


def is_node_local(qpu: QPUConfig) -> bool:
    """True for a QPU bound to exactly one node by name: it lives in that node's pool."""
    return len(qpu.nodes) == 1 and not qpu.node_selector


def home_node(qpu: QPUConfig) -> str | None:
    """The one node of a node-local QPU, else None."""
    return qpu.nodes[0] if is_node_local(qpu) else None


def reaches(qpu: QPUConfig, node_name: str | None, node_labels: Mapping[str, str] | None) -> bool | None:
    """Whether ``node_name`` (with ``node_labels``) reaches ``qpu``; None if it needs unknown labels."""
    if qpu.nodes:
        return node_name in qpu.nodes
    if qpu.node_selector:
        if node_labels is None:
            return None
        return all(node_labels.get(k) == v for k, v in qpu.node_selector.items())
    return True


def local_qpus(qpus: Iterable[QPUConfig], node_name: str) -> list[QPUConfig]:
    """The node-local QPUs whose one node is ``node_name`` (this node's DRA pool)."""
    return [q for q in qpus if home_node(q) == node_name]


def shared_qpus(qpus: Iterable[QPUConfig]) -> list[QPUConfig]:
    """The QPUs published once for the cluster, in network-attached pools (controller)."""
    return [q for q in qpus if not is_node_local(q)]


def for_node(
    config: Config, node_name: str | None, node_labels: Mapping[str, str] | None = None
) -> tuple[Config, list[str]]:
    """The inventory as one node's device plugin serves it, and a note per QPU it cannot decide.

    A QPU bound by ``nodeSelector`` needs the node's labels; without them it is left out (and
    named in the notes) rather than advertised on a node that may not reach it.
    """
    kept: list[QPUConfig] = []
    notes: list[str] = []
    for qpu in config.qpus:
        verdict = reaches(qpu, node_name, node_labels)
        if verdict is None:
            notes.append(
                f"{qpu.name}: bound by nodeSelector, but this node's labels are unknown (--node-labels)"
            )
        elif verdict:
            kept.append(qpu)
    return replace(config, qpus=tuple(kept)), notes


def parse_labels(text: str) -> dict[str, str]:
    """``a=b,c=d`` as a dict; ValueError (one line) on a term without ``=``."""
    labels: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = term.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {term!r}")
        labels[key.strip()] = value.strip()
    return labels
