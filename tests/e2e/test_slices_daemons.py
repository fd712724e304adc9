"""Scenario 1, Slices, as the cluster's daemons publish them (the full control plane).

The running kubelet plugin's node pool (owned by its Node, uid and all) and the running
controller's network pool are in the API server, and the controller's passes over unchanged
input write nothing: both pools keep their resourceVersion and generation. The size limits and
the taint-mode stability are in ``test_slices.py`` (a bare API server suffices there).
"""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from conftest import wait_for  # tests/e2e/conftest.py

from dra_driver.constants import CONTROLLER_PUBLISHER, PUBLISHER_LABEL
from dra_driver.slices import KUBELET_PLUGIN_PUBLISHER
from qubelet.inventory.names import DRIVER_NAME

E2ECluster = Any  # tests/e2e/conftest.py's E2ECluster
pytestmark = pytest.mark.timeout(300)
NODE = "qpu-node-1"  # the example inventory binds adonis-onprem to it


def test_daemons_node_pool_and_network_pool_are_accepted(e2e_cluster: E2ECluster) -> None:
    def published() -> dict[str, Any]:
        slices = e2e_cluster.resource.list_resource_slice(field_selector=f"spec.driver={DRIVER_NAME}").items
        pools = {s.spec.pool.name: s for s in slices}
        return pools if {NODE, "cloud/apollo-cloud"} <= set(pools) else {}

    pools = wait_for(published, 90, "the node pool and the network pool")
    node_pool = pools[NODE]
    assert node_pool.spec.node_name == NODE
    assert node_pool.metadata.labels[PUBLISHER_LABEL] == KUBELET_PLUGIN_PUBLISHER
    assert sorted(d.name for d in node_pool.spec.devices or []) == ["adonis-onprem-r0", "adonis-onprem-r1"]
    (owner,) = node_pool.metadata.owner_references
    node = e2e_cluster.core.read_node(NODE)
    assert (owner.api_version, owner.kind, owner.name, owner.uid) == ("v1", "Node", NODE, node.metadata.uid)
    assert owner.controller is True
    cloud = pools["cloud/apollo-cloud"]
    assert cloud.spec.all_nodes is True
    assert cloud.metadata.labels[PUBLISHER_LABEL] == CONTROLLER_PUBLISHER
    assert sorted(d.name for d in cloud.spec.devices or []) == [f"apollo-cloud-r{i}" for i in range(4)]
    assert cloud.spec.devices[0].attributes["qubits"].int == 20

    # the running controller's passes over unchanged input write nothing
    before = {p: (s.metadata.resource_version, s.spec.pool.generation) for p, s in pools.items()}
    unchanged = _controller_unchanged_passes(e2e_cluster)
    wait_for(lambda: _controller_unchanged_passes(e2e_cluster) >= unchanged + 2, 60, "two controller passes")
    after = {p: (s.metadata.resource_version, s.spec.pool.generation) for p, s in published().items()}
    assert after == before


def _controller_unchanged_passes(e2e: E2ECluster) -> float:
    """``qubelet_dra_reconciles_total{result="unchanged"}`` of the running DRA controller."""
    port = e2e.cluster.ports["dra-controller-metrics"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith('qubelet_dra_reconciles_total{result="unchanged"}'):
            return float(line.split()[-1])
    return 0.0
