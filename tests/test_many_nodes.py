"""Three nodes and the example inventory: every QPU device is offered exactly once.

Each node runs the real kubelet plugin's slice reconcile and the device plugin's node filter;
the controller publishes the shared pools. The scheduler's view (all slices, newest complete
generation, as the API double computes it) must hold each QPU replica once, so one QPU can
never be handed to pods on several nodes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from doubles.fake_resource_api import FakeResourceAPI

from dra_driver.controller import CloudController
from dra_driver.kubelet_plugin import KubeletPlugin
from qubelet.inventory import ProbeResult, devices_for, load_config
from qubelet.inventory.binding import for_node
from qubelet.inventory.names import DRIVER_NAME

pytestmark = pytest.mark.timeout(60)
EXAMPLE = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "qpus.yaml"
NODES = ("qpu-node-1", "worker-2", "worker-3")


def healthy(qpu: Any) -> ProbeResult:
    return ProbeResult(True, 0.0, "test")


def test_every_qpu_device_is_published_once_across_three_nodes(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    api = FakeResourceAPI()
    for node in NODES:
        root = tmp_path / node
        plugin = KubeletPlugin(
            config, node, root / "plugins", root / "registry", root / "cdi", api, probe=healthy
        )
        for name, ok in plugin.monitor.check_now().items():
            plugin.broadcaster.set(name, ok)
        plugin.reconcile_slices()
    controller = CloudController(config, api, "controller-0", probe=healthy)
    controller.probe_now()
    assert controller.run_once() is not None

    seen = api.scheduler_devices()
    names = Counter(device for _, _, device in seen)
    assert names and all(count == 1 for count in names.values()), names
    expected = {d.id for d in devices_for(config)}
    assert set(names) == expected  # 2 replicas of adonis-onprem + 4 of apollo-cloud
    pools = {device: pool for driver, pool, device in seen if driver == DRIVER_NAME}
    assert {pools["adonis-onprem-r0"], pools["apollo-cloud-r0"]} == {"qpu-node-1", "cloud/apollo-cloud"}
    node_pools = {s.spec.node_name for s in api.slices.values() if s.spec.node_name}
    assert node_pools == {"qpu-node-1"}  # the workers publish no node pool at all


def test_device_plugins_on_three_nodes_advertise_the_on_prem_qpu_once() -> None:
    config = load_config(EXAMPLE)
    advertised = {node: {q.name for q in for_node(config, node)[0].qpus} for node in NODES}
    assert advertised == {
        "qpu-node-1": {"adonis-onprem", "apollo-cloud"},
        "worker-2": {"apollo-cloud"},
        "worker-3": {"apollo-cloud"},
    }
