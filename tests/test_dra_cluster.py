"""The DRA driver against a real API server (runs only with KUBECONFIG; skips otherwise).

Publishes slices and reads them back, reconciles after a change (generation bump, device
removed), and prepares a ResourceClaim that the cluster's scheduler allocated from our slice.
Everything it creates carries a random suffix and is deleted afterwards. Needs Kubernetes
>= 1.34 (resource.k8s.io/v1) and at least one schedulable node for the allocation test.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="cluster suite: set KUBECONFIG to a Kubernetes >= 1.34 cluster to run it",
    ),
]


@pytest.fixture(scope="module")
def kube() -> Iterator[Any]:
    from kubernetes import client

    from dra_driver.client import KubeResourceAPI

    api = KubeResourceAPI(os.environ["KUBECONFIG"])
    groups = client.ApisApi(api.api_client).get_api_versions().groups
    versions = {v.version for g in groups if g.name == "resource.k8s.io" for v in g.versions}
    if "v1" not in versions:
        pytest.skip(f"cluster does not serve resource.k8s.io/v1 (has {sorted(versions)})")
    yield api


def _qpus() -> Any:
    from qubelet.inventory import parse_config

    base = {
        "vendor": "IQM",
        "technology": "superconducting",
        "topology": "star",
        "calibration": {"fidelity2q": 0.97},
        "location": "onprem",
    }
    return parse_config(
        {
            "version": "v1",
            "qpus": [
                {
                    **base,
                    "name": "ct-adonis",
                    "model": "Adonis",
                    "qubits": 5,
                    "backend": "fake:IQMFakeAdonis",
                },
                {
                    **base,
                    "name": "ct-apollo",
                    "model": "Apollo",
                    "qubits": 20,
                    "backend": "fake:IQMFakeApollo",
                },
            ],
        },
        "cluster-test",
    ).qpus


def _pool_slices(pool: str, node: str, health: dict[str, bool], publisher: str) -> Any:
    from dra_driver.devices import devices_for
    from dra_driver.slices import build_pool, pool_devices

    devices = [d for q in _qpus() for d in devices_for(q, pool)]
    return build_pool(pool, pool_devices(devices, health, "remove"), publisher, node_name=node)


def test_publish_read_back_and_reconcile(kube: Any) -> None:
    from dra_driver.constants import PUBLISHER_LABEL
    from dra_driver.reconcile import SliceReconciler
    from qubelet.inventory.names import DRIVER_NAME

    suffix = uuid.uuid4().hex[:8]
    publisher, pool, node = f"ct-{suffix}", f"qubelet-ct-{suffix}", f"qubelet-ct-node-{suffix}"
    rec = SliceReconciler(kube, f"{PUBLISHER_LABEL}={publisher}", f"spec.driver={DRIVER_NAME}")
    try:
        first = rec.reconcile(_pool_slices(pool, node, {"ct-adonis": True, "ct-apollo": True}, publisher))
        assert len(first.created) == 1
        (s,) = kube.list_resource_slices(f"{PUBLISHER_LABEL}={publisher}", f"spec.nodeName={node}")
        assert sorted(d.name for d in s.spec.devices) == ["ct-adonis-r0", "ct-apollo-r0"]
        assert s.spec.devices[1].attributes["qubits"].int == 20
        assert not rec.reconcile(
            _pool_slices(pool, node, {"ct-adonis": True, "ct-apollo": True}, publisher)
        ).changed
        changed = rec.reconcile(_pool_slices(pool, node, {"ct-adonis": False, "ct-apollo": True}, publisher))
        assert changed.updated
        (s,) = kube.list_resource_slices(f"{PUBLISHER_LABEL}={publisher}", "")
        assert [d.name for d in s.spec.devices] == ["ct-apollo-r0"] and s.spec.pool.generation == 2
    finally:
        assert rec.reconcile([]).deleted or not kube.list_resource_slices(
            f"{PUBLISHER_LABEL}={publisher}", ""
        )
    assert kube.list_resource_slices(f"{PUBLISHER_LABEL}={publisher}", "") == []


def test_prepare_claim_allocated_by_the_cluster(kube: Any) -> None:
    from kubernetes import client

    from dra_driver.constants import PUBLISHER_LABEL
    from dra_driver.devices import devices_for
    from dra_driver.driver import ClaimRef, QPUDriver
    from dra_driver.metrics import DRAMetrics
    from dra_driver.reconcile import SliceReconciler
    from qubelet.inventory.names import DRIVER_NAME

    core = client.CoreV1Api(kube.api_client)
    resource = client.ResourceV1Api(kube.api_client)
    nodes = [n for n in core.list_node().items if not n.spec.unschedulable]
    if not nodes:
        pytest.skip("no schedulable node to allocate on")
    node = nodes[0].metadata.name
    suffix = uuid.uuid4().hex[:8]
    publisher, pool, ns = f"ct-{suffix}", f"qubelet-ct-{suffix}", "default"
    rec = SliceReconciler(kube, f"{PUBLISHER_LABEL}={publisher}", f"spec.driver={DRIVER_NAME}")
    claim_name, pod_name = f"qubelet-ct-claim-{suffix}", f"qubelet-ct-pod-{suffix}"
    created_class = False
    try:
        try:
            resource.read_device_class(DRIVER_NAME)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            resource.create_device_class(
                client.V1DeviceClass(
                    metadata=client.V1ObjectMeta(name=DRIVER_NAME),
                    spec=client.V1DeviceClassSpec(
                        selectors=[
                            client.V1DeviceSelector(
                                cel=client.V1CELDeviceSelector(expression=f'device.driver == "{DRIVER_NAME}"')
                            )
                        ]
                    ),
                )
            )
            created_class = True
        rec.reconcile(_pool_slices(pool, node, {"ct-adonis": True, "ct-apollo": True}, publisher))
        attrs = f'device.attributes["{DRIVER_NAME}"]'
        selector = f'{attrs}.qubits >= 20 && {attrs}.qpu == "ct-apollo"'
        claim = resource.create_namespaced_resource_claim(
            ns,
            client.ResourceV1ResourceClaim(
                metadata=client.V1ObjectMeta(name=claim_name),
                spec=client.V1ResourceClaimSpec(
                    devices=client.V1DeviceClaim(
                        requests=[
                            client.V1DeviceRequest(
                                name="qpu",
                                exactly=client.V1ExactDeviceRequest(
                                    device_class_name=DRIVER_NAME,
                                    selectors=[
                                        client.V1DeviceSelector(
                                            cel=client.V1CELDeviceSelector(expression=selector)
                                        )
                                    ],
                                ),
                            )
                        ]
                    )
                ),
            ),
        )
        core.create_namespaced_pod(
            ns,
            client.V1Pod(
                metadata=client.V1ObjectMeta(name=pod_name),
                spec=client.V1PodSpec(
                    node_selector={"kubernetes.io/hostname": node},
                    tolerations=[client.V1Toleration(operator="Exists")],
                    resource_claims=[client.V1PodResourceClaim(name="qpu", resource_claim_name=claim_name)],
                    containers=[
                        client.V1Container(
                            name="c",
                            image="registry.k8s.io/pause:3.10",
                            resources=client.V1ResourceRequirements(
                                claims=[client.CoreV1ResourceClaim(name="qpu")]
                            ),
                        )
                    ],
                ),
            ),
        )
        deadline = time.monotonic() + 90
        allocated = None
        while time.monotonic() < deadline:
            c = resource.read_namespaced_resource_claim(claim_name, ns)
            if c.status and c.status.allocation:
                allocated = c
                break
            time.sleep(1)
        assert allocated is not None, "scheduler did not allocate the claim within 90 s"
        (result,) = allocated.status.allocation.devices.results
        assert (result.driver, result.pool, result.device) == (DRIVER_NAME, pool, "ct-apollo-r0")
        devices = [d for q in _qpus() for d in devices_for(q, pool)]
        with tempfile.TemporaryDirectory() as tmp:
            driver = QPUDriver(kube, devices, f"{tmp}/cdi", f"{tmp}/checkpoint.json", DRAMetrics())
            out = driver.prepare([ClaimRef(ns, claim.metadata.uid, claim_name)])
            prepared = out[claim.metadata.uid]
            assert prepared.error == ""
            assert prepared.devices[0].cdi_device_ids == (
                f"{DRIVER_NAME}/qpu={claim.metadata.uid}-ct-apollo-r0",
            )
            assert driver.unprepare([ClaimRef(ns, claim.metadata.uid, claim_name)]) == {
                claim.metadata.uid: ""
            }
    finally:
        for delete in (
            lambda: core.delete_namespaced_pod(pod_name, ns, grace_period_seconds=0),
            lambda: resource.delete_namespaced_resource_claim(claim_name, ns),
            lambda: rec.reconcile([]),
            lambda: resource.delete_device_class(DRIVER_NAME) if created_class else None,
        ):
            try:
                delete()
            except Exception as exc:  # best-effort cleanup; keep deleting the rest
                print(f"cleanup: {exc}")
