"""Scenario 1, Slices: what the DRA driver publishes is accepted by the real API server (1.37).

- With ``--unhealthy=taint`` (every device unhealthy, so every device carries a DeviceTaint)
  node pools of 1, 64, 65, 128 and 1000 devices and a network pool of 65 are accepted: the
  server's own validation allows 64 devices per slice when any device has taints.
- Ten more passes over unchanged input write nothing: the pool generation and every slice's
  resourceVersion stay put, although the server filled in each taint's ``timeAdded``.

The pools are published by the driver's reconcile code (the kubelet plugin's and the
controller's selectors and builders) straight against a real etcd + kube-apiserver
(``apiserver.py``), under node names no daemon publishes for, and deleted afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from apiserver import apiserver_kubeconfig  # noqa: F401 (the session fixture)

from dra_driver.client import KubeResourceAPI
from dra_driver.constants import PUBLISHER_LABEL, UNHEALTHY_TAINT_KEY
from dra_driver.reconcile import SliceReconciler
from dra_driver.slices import KUBELET_PLUGIN_PUBLISHER, network_slices, node_slices
from qubelet.inventory import parse_config
from qubelet.inventory.names import DRIVER_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
PASSES = 10


@pytest.fixture(scope="module")
def api(apiserver_kubeconfig: str) -> KubeResourceAPI:  # noqa: F811
    return KubeResourceAPI(apiserver_kubeconfig, request_timeout=30)


def _qpu(name: str, location: str, replicas: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "vendor": "IQM",
        "model": "Adonis",
        "qubits": 5,
        "technology": "superconducting",
        "location": location,
        "topology": "star",
        "backend": "fake:IQMFakeAdonis",
        "calibration": {"fidelity2q": 0.965, "readoutFidelity": 0.95},
        "replicas": replicas,
        **extra,
    }


def _snapshot(api: KubeResourceAPI, reconciler: SliceReconciler) -> dict[str, tuple[str, int]]:
    """Slice name -> (resourceVersion, pool generation) of what ``reconciler`` owns."""
    return {
        s.metadata.name: (s.metadata.resource_version, s.spec.pool.generation)
        for s in api.list_resource_slices(reconciler.label_selector, reconciler.field_selector)
    }


def _check_accepted_and_stable(
    api: KubeResourceAPI, reconciler: SliceReconciler, build: Any, size: int
) -> None:
    first = reconciler.reconcile(build())
    assert len(first.created) == -(-size // 64) and not first.updated
    stored = api.list_resource_slices(reconciler.label_selector, reconciler.field_selector)
    devices = [d for s in stored for d in s.spec.devices or []]
    assert len(devices) == size and all(len(s.spec.devices) <= 64 for s in stored)
    taints = [t for d in devices for t in d.taints or []]
    assert len(taints) == size and {t.key for t in taints} == {UNHEALTHY_TAINT_KEY}
    assert all(t.time_added is not None for t in taints)  # filled in by the server
    before = _snapshot(api, reconciler)
    assert {generation for _, generation in before.values()} == {1}
    for _ in range(PASSES):
        assert not reconciler.reconcile(build()).changed
    assert _snapshot(api, reconciler) == before


@pytest.fixture
def cleanup(api: KubeResourceAPI) -> Iterator[list[SliceReconciler]]:
    used: list[SliceReconciler] = []
    yield used
    for reconciler in used:
        reconciler.reconcile([])


@pytest.mark.parametrize("size", [1, 64, 65, 128, 1000])
def test_tainted_node_pool_is_accepted_and_stable(
    api: KubeResourceAPI, cleanup: list[SliceReconciler], size: int
) -> None:
    node = f"e2e-taint-{size}"  # no Node and no plugin of that name: only this test publishes here
    qpus = parse_config({"version": "v1", "qpus": [_qpu("big", "onprem", size, nodes=[node])]}, "e2e").qpus
    reconciler = SliceReconciler(
        api,
        label_selector=f"{PUBLISHER_LABEL}={KUBELET_PLUGIN_PUBLISHER}",
        field_selector=f"spec.driver={DRIVER_NAME},spec.nodeName={node}",
    )
    cleanup.append(reconciler)
    _check_accepted_and_stable(
        api, reconciler, lambda: node_slices(qpus, node, {"big": False}, "taint"), size
    )


def test_tainted_network_pool_is_accepted_and_stable(
    api: KubeResourceAPI, cleanup: list[SliceReconciler]
) -> None:
    qpus = parse_config({"version": "v1", "qpus": [_qpu("e2e-taint-cloud", "cloud", 65)]}, "e2e").qpus
    reconciler = SliceReconciler(
        api,
        label_selector=f"{PUBLISHER_LABEL}=e2e-taint",  # not the running controller's pools
        field_selector=f"spec.driver={DRIVER_NAME},spec.pool.name=cloud/e2e-taint-cloud",
    )
    cleanup.append(reconciler)

    def build() -> list[Any]:
        slices = network_slices(qpus, {"e2e-taint-cloud": False}, "taint")
        for s in slices:
            s.metadata.labels = {PUBLISHER_LABEL: "e2e-taint"}
        return slices

    _check_accepted_and_stable(api, reconciler, build, 65)
