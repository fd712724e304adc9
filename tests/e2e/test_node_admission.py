"""Issue 23's admission policies on the real kube-apiserver: nobody in where they don't belong.

- The DRA node plugin's ServiceAccount (impersonated, with the node-name extra its pod-bound
  token carries) writing another driver's ResourceSlice on its own node: refused by
  ``qubelet-dra-resourceslices-own-node``; the same slice of our driver: admitted (so the
  refusal is the policy's, not RBAC's).
- A ResourceClaim, and a pod asking for ``quantum.example.com/qpu``, from a namespace that has
  not opted in: refused by ``qubelet-qpu-tenants``; the same claim in an opted-in namespace:
  admitted.

Writes are server-side dry runs (admission runs, nothing is stored), so the running daemons are
not disturbed. Policies take a moment to load after the overlay is applied: each check polls.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from conftest import wait_for  # tests/e2e/conftest.py

E2ECluster = Any  # tests/e2e/conftest.py's E2ECluster: .cluster.nodes, .kubeconfig, .core, .resource

PLUGIN_SA = "system:serviceaccount:qubelet-system:qubelet-dra-kubelet-plugin"
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
TENANT_LABEL = "quantum.example.com/qpu-tenant"


def impersonating(e2e: E2ECluster, user: str, extra: dict[str, str]) -> Any:
    from kubernetes import client

    from qubelet.kube import load_kube_client

    api_client = load_kube_client(e2e.kubeconfig)
    api_client.set_default_header("Impersonate-User", user)
    for key, value in extra.items():
        api_client.set_default_header(f"Impersonate-Extra-{quote(key, safe='')}", value)
    return client.ResourceV1Api(api_client)


def slice_body(driver: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"e2e-{driver.replace('.', '-')}-{node}"},
        "spec": {
            "driver": driver,
            "nodeName": node,
            "pool": {"name": node, "generation": 0, "resourceSliceCount": 1},
            "devices": [{"name": "dev-0"}],
        },
    }


def refusal(call: Any) -> str:
    """'' when the dry run was admitted, else the API server's message."""
    from kubernetes.client import ApiException

    try:
        call()
    except ApiException as exc:
        return f"{exc.status} {exc.body}"
    return ""


def test_node_plugin_cannot_write_another_drivers_slice_on_its_node(e2e_cluster: E2ECluster) -> None:
    node = e2e_cluster.cluster.nodes[0]
    api = impersonating(e2e_cluster, PLUGIN_SA, {NODE_NAME_EXTRA: node})

    def refused() -> str:
        out = refusal(lambda: api.create_resource_slice(slice_body("gpu.example.com", node), dry_run="All"))
        return out if "may not modify resourceslices of driver 'gpu.example.com'" in out else ""

    message = wait_for(refused, 60, "the node-plugin slice policy to refuse another driver's slice")
    assert "qubelet-dra-resourceslices-own-node" in message
    # our own driver's slice on the same node is admitted: the refusal above is the policy's
    assert (
        refusal(lambda: api.create_resource_slice(slice_body("qpu.quantum.example.com", node), dry_run="All"))
        == ""
    )
    # and another node's slice of our driver is not
    other = refusal(
        lambda: api.create_resource_slice(slice_body("qpu.quantum.example.com", "not-my-node"), dry_run="All")
    )
    assert f"qpu kubelet plugin on node '{node}' may not modify resourceslices of node 'not-my-node'" in other


def claim_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {
            "devices": {
                "requests": [{"name": "qpu", "exactly": {"deviceClassName": "qpu.quantum.example.com"}}]
            }
        },
    }


@pytest.fixture
def namespaces(e2e_cluster: E2ECluster) -> Any:
    from kubernetes import client

    core = e2e_cluster.core
    made = []
    for name, labels in (("e2e-outsider", {}), ("e2e-tenant", {TENANT_LABEL: "true"})):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
        made.append(name)
        try:  # the controller-manager makes it too; a pod's admission needs it to exist
            core.create_namespaced_service_account(
                name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default"))
            )
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    yield made
    for name in made:
        core.delete_namespace(name)


def test_claim_from_a_namespace_not_opted_in_is_refused(e2e_cluster: E2ECluster, namespaces: Any) -> None:
    outsider, tenant = namespaces
    resource = e2e_cluster.resource

    def refused() -> str:
        out = refusal(
            lambda: resource.create_namespaced_resource_claim(outsider, claim_body("qpu"), dry_run="All")
        )
        return out if "has not opted in to QPUs" in out else ""

    message = wait_for(refused, 60, "the tenants policy to refuse a claim from a namespace not opted in")
    assert message.startswith("403 ")
    assert f"namespace {outsider} has not opted in to QPUs: an admin labels it {TENANT_LABEL}=true" in message
    assert (
        refusal(lambda: resource.create_namespaced_resource_claim(tenant, claim_body("qpu"), dry_run="All"))
        == ""
    )
    # a pod asking for the extended resource directly (bypassing claims and Kueue) is refused too
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "qpu-direct"},
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox", "resources": {"limits": {"quantum.example.com/qpu": "1"}}}
            ]
        },
    }
    out = refusal(lambda: e2e_cluster.core.create_namespaced_pod(outsider, pod, dry_run="All"))
    assert "has not opted in to QPUs" in out, out
