"""The local control plane itself (issue 19, "must show"): what `make cluster-up` promises.

- ``kubectl get resourceslices,deviceclasses,clusterqueues`` shows the QPU pools (the node
  plugin's pool on qpu-node-1 and the controller's network-attached pools) and every
  ClusterQueue Active (the admission check marked its AdmissionCheck Active);
- a ResourceClaim and a Pod that did not come from qubelet (a CEL selector on the driver's
  attributes, written by hand) are allocated by the real scheduler, bound, and prepared on the
  node by the DRA kubelet plugin through the kubelet double.
"""

from __future__ import annotations

import uuid
from typing import Any

from conftest import TENANT, wait_for

from qubelet.inventory.names import DEVICE_CLASS_NAME, DRIVER_NAME


def test_slices_deviceclass_and_active_queues(e2e_cluster: Any) -> None:
    out = e2e_cluster.kubectl("get", "resourceslices,deviceclasses,clusterqueues")
    slices = e2e_cluster.kubectl_json("get", "resourceslices")["items"]
    pools = {s["spec"]["pool"]["name"]: s for s in slices if s["spec"]["driver"] == DRIVER_NAME}
    assert "qpu-node-1" in pools, out
    assert pools["qpu-node-1"]["spec"]["nodeName"] == "qpu-node-1"
    assert [d["name"] for d in pools["qpu-node-1"]["spec"]["devices"]] == [
        "adonis-onprem-r0",
        "adonis-onprem-r1",
    ]
    cloud = [s for name, s in pools.items() if name != "qpu-node-1"]
    assert cloud and all(s["spec"].get("allNodes") for s in cloud), out
    assert not any(s["spec"].get("nodeName") == "cpu-node-1" for s in slices)
    device_class = e2e_cluster.kubectl_json("get", "deviceclass", DEVICE_CLASS_NAME)
    # DRAExtendedResource on: the API server kept the field (with the gate off it drops it).
    assert device_class["spec"]["extendedResourceName"] == "quantum.example.com/qpu"
    queues = e2e_cluster.kubectl_json("get", "clusterqueues")["items"]
    assert [q["metadata"]["name"] for q in queues] == ["qubelet"]
    for queue in queues:
        active = {c["type"]: c for c in queue["status"]["conditions"]}["Active"]
        assert active["status"] == "True", active
    check = e2e_cluster.kubectl_json("get", "admissioncheck", "qubelet")
    assert {c["type"]: c["status"] for c in check["status"]["conditions"]}["Active"] == "True"


def test_foreign_claim_and_pod_allocated_bound_and_prepared(e2e_cluster: Any) -> None:
    suffix = uuid.uuid4().hex[:6]
    ns = f"foreign-{suffix}"
    attrs = f'device.attributes["{DRIVER_NAME}"]'
    e2e_cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": TENANT}},
    )
    wait_for(lambda: e2e_cluster.kubectl("get", "serviceaccount", "default", "-n", ns), 30, "default SA")
    e2e_cluster.apply(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": "big-qpu", "namespace": ns},
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "qpu",
                            "exactly": {
                                "deviceClassName": DEVICE_CLASS_NAME,
                                "selectors": [{"cel": {"expression": f"{attrs}.qubits >= 20"}}],
                            },
                        }
                    ]
                }
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "user-pod", "namespace": ns},
            "spec": {
                "resourceClaims": [{"name": "q", "resourceClaimName": "big-qpu"}],
                "containers": [
                    {"name": "main", "image": "busybox", "resources": {"claims": [{"name": "q"}]}}
                ],
            },
        },
    )

    def bound() -> Any:
        pod = e2e_cluster.kubectl_json("get", "pod", "user-pod", "-n", ns)
        return pod if pod["spec"].get("nodeName") else None

    pod = wait_for(bound, 60, "the scheduler to bind user-pod")
    claim = e2e_cluster.kubectl_json("get", "resourceclaim", "big-qpu", "-n", ns)
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    assert result["driver"] == DRIVER_NAME
    assert result["device"].startswith("apollo-cloud-r"), result  # the only QPU with >= 20 qubits
    assert [r["name"] for r in claim["status"]["reservedFor"]] == ["user-pod"]
    record = e2e_cluster.prepared(ns, "user-pod")
    assert record["node"] == pod["spec"]["nodeName"]
    prepared = record["claims"]["q"]
    assert prepared["error"] == "" and [d["device_name"] for d in prepared["devices"]] == [result["device"]]
    env = record["containers"]["main"]["env"]
    assert "QUBELET_QPU_NAME=apollo-cloud" in env, env
    e2e_cluster.kubectl("delete", "namespace", ns, "--wait=false")
