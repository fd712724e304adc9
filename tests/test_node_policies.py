"""Nobody in where they don't belong: the admission policies and RBAC (issue 23, items 5 and 6).

The ValidatingAdmissionPolicies of the manifests are evaluated by cel-python
(``tests/doubles/vap.py``) on the requests that matter:

- the node plugin writing (creating, taking over by update, deleting) another driver's slice on
  its own node: refused; its own driver's slices of its node: admitted;
- the controller writing another driver's slice or a node's slice: refused;
- a ResourceClaim, a ResourceClaimTemplate or a pod with the extended resource from a namespace
  that has not opted in: refused; the same from an opted-in namespace, and non-QPU claims from
  any namespace: admitted.

RBAC: each daemon's verbs are exactly those its API client calls, and Leases are named.
The same two denials run against the real kube-apiserver in tests/e2e when it is available.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from doubles.vap import Policy, Request

from dra_driver.constants import LEASE_NAME
from qubelet.inventory.names import DRIVER_NAME

REPO = Path(__file__).resolve().parent.parent
PLUGIN_SA = "system:serviceaccount:qubelet-system:qubelet-dra-kubelet-plugin"
CONTROLLER_SA = "system:serviceaccount:qubelet-system:qubelet-dra-controller"
NODE_CLAIM = {"authentication.kubernetes.io/node-name": ["node-a"]}
OPTED_IN = {"quantum.example.com/qpu-tenant": "true"}


def load_policies(path: str) -> dict[str, Policy]:
    docs = [d for d in yaml.safe_load_all((REPO / path).read_text()) if d]
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}
    bindings = {d["spec"]["policyName"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert set(policies) == set(bindings)
    return {name: Policy(p, bindings[name]) for name, p in policies.items()}


SLICE_POLICIES = load_policies("manifests/dra/validatingadmissionpolicy.yaml")
TENANT_POLICIES = load_policies("manifests/tenants/validatingadmissionpolicy.yaml")


def admit(policies: dict[str, Policy], req: Request) -> list[str]:
    return [m for p in policies.values() if (m := p.admit(req))]


def slice_obj(driver: str = DRIVER_NAME, node: str | None = "node-a") -> dict[str, Any]:
    spec: dict[str, Any] = {"driver": driver, "pool": {"name": node or "cloud/x", "generation": 1}}
    if node is None:
        spec["allNodes"] = True
    else:
        spec["nodeName"] = node
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": "s"},
        "spec": spec,
    }


def slice_request(user: str, op: str, new: Any = None, old: Any = None) -> Request:
    extra = NODE_CLAIM if user == PLUGIN_SA else {}
    return Request(user, op, "resource.k8s.io", "resourceslices", object=new, old_object=old, extra=extra)


# -- node plugin -----------------------------------------------------------------------------


def test_node_plugin_writes_its_own_slices() -> None:
    mine = slice_obj()
    for req in (
        slice_request(PLUGIN_SA, "CREATE", new=mine),
        slice_request(PLUGIN_SA, "UPDATE", new=mine, old=mine),
        slice_request(PLUGIN_SA, "DELETE", old=mine),
    ):
        assert admit(SLICE_POLICIES, req) == []


@pytest.mark.parametrize("op", ["CREATE", "UPDATE", "DELETE"])
def test_node_plugin_cannot_touch_another_drivers_slice_on_its_node(op: str) -> None:
    gpu = slice_obj("gpu.example.com")
    req = {
        "CREATE": slice_request(PLUGIN_SA, "CREATE", new=gpu),
        "UPDATE": slice_request(PLUGIN_SA, "UPDATE", new=gpu, old=gpu),
        "DELETE": slice_request(PLUGIN_SA, "DELETE", old=gpu),
    }[op]
    assert admit(SLICE_POLICIES, req) == [
        "qpu kubelet plugin may not modify resourceslices of driver 'gpu.example.com' "
        "(only qpu.quantum.example.com)"
    ]


def test_node_plugin_cannot_take_over_another_drivers_slice_by_update() -> None:
    """An update that rewrites spec.driver to ours: the old object is checked too."""
    req = slice_request(PLUGIN_SA, "UPDATE", new=slice_obj(), old=slice_obj("gpu.example.com"))
    assert admit(SLICE_POLICIES, req) != []


def test_node_plugin_cannot_write_other_nodes_or_cluster_slices() -> None:
    assert admit(SLICE_POLICIES, slice_request(PLUGIN_SA, "CREATE", new=slice_obj(node="node-b"))) == [
        "qpu kubelet plugin on node 'node-a' may not modify resourceslices of node 'node-b'"
    ]
    assert admit(SLICE_POLICIES, slice_request(PLUGIN_SA, "DELETE", old=slice_obj(node=None))) == [
        "qpu kubelet plugin on node 'node-a' may not modify cluster-wide resourceslices"
    ]
    no_node = Request(PLUGIN_SA, "CREATE", "resource.k8s.io", "resourceslices", object=slice_obj())
    assert admit(SLICE_POLICIES, no_node)[0].startswith("no node association found")


# -- controller ------------------------------------------------------------------------------


def test_controller_writes_only_cluster_wide_slices_of_this_driver() -> None:
    cloud = slice_obj(node=None)
    assert admit(SLICE_POLICIES, slice_request(CONTROLLER_SA, "CREATE", new=cloud)) == []
    assert admit(SLICE_POLICIES, slice_request(CONTROLLER_SA, "DELETE", old=cloud)) == []
    assert admit(
        SLICE_POLICIES, slice_request(CONTROLLER_SA, "DELETE", old=slice_obj("gpu.example.com", None))
    ) == [
        "qpu controller may not modify resourceslices of driver 'gpu.example.com' "
        "(only qpu.quantum.example.com)"
    ]
    assert admit(
        SLICE_POLICIES, slice_request(CONTROLLER_SA, "UPDATE", new=slice_obj(), old=slice_obj())
    ) == ["qpu controller may not modify a node's own resourceslices (the kubelet plugin publishes those)"]


def test_other_users_are_not_this_policys_business() -> None:
    gpu = slice_obj("gpu.example.com")
    assert admit(SLICE_POLICIES, slice_request("system:serviceaccount:gpu:driver", "DELETE", old=gpu)) == []


# -- tenants ---------------------------------------------------------------------------------


def claim(cls: str = "qpu.quantum.example.com", shape: str = "exactly") -> dict[str, Any]:
    if shape == "exactly":
        req: dict[str, Any] = {"name": "qpu", "exactly": {"deviceClassName": cls}}
    elif shape == "firstAvailable":
        req = {
            "name": "qpu",
            "firstAvailable": [{"name": "a", "deviceClassName": "x"}, {"name": "b", "deviceClassName": cls}],
        }
    else:  # v1beta1: deviceClassName on the request itself
        req = {"name": "qpu", "deviceClassName": cls}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "spec": {"devices": {"requests": [req]}},
    }


def template(cls: str = "qpu.quantum.example.com") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "spec": {"spec": claim(cls)["spec"]},
    }


def pod(resource: str = "quantum.example.com/qpu", where: str = "limits") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "spec": {
            "containers": [{"name": "a", "image": "x"}],
            "initContainers": [{"name": "i", "image": "x", "resources": {where: {resource: "1"}}}],
        },
    }


def tenant_request(obj: dict[str, Any], labels: dict[str, str] | None, namespace: str = "team-z") -> Request:
    group, resource = {
        "ResourceClaim": ("resource.k8s.io", "resourceclaims"),
        "ResourceClaimTemplate": ("resource.k8s.io", "resourceclaimtemplates"),
        "Pod": ("", "pods"),
    }[obj["kind"]]
    return Request(
        "system:serviceaccount:team-z:default",
        "CREATE",
        group,
        resource,
        namespace=namespace,
        object=obj,
        namespace_labels=labels,
    )


REFUSED = "namespace team-z has not opted in to QPUs: an admin labels it quantum.example.com/qpu-tenant=true"


@pytest.mark.parametrize(
    "obj",
    [
        claim(),
        claim(shape="firstAvailable"),
        claim(shape="v1beta1"),
        template(),
        pod(),
        pod(where="requests"),
    ],
    ids=["claim", "claim-firstAvailable", "claim-v1beta1", "template", "pod-limits", "pod-requests"],
)
def test_qpu_requests_from_a_namespace_not_opted_in_are_refused(obj: dict[str, Any]) -> None:
    assert admit(TENANT_POLICIES, tenant_request(obj, {})) == [REFUSED]
    assert admit(TENANT_POLICIES, tenant_request(obj, {"quantum.example.com/qpu-tenant": "yes"})) == [REFUSED]
    assert admit(TENANT_POLICIES, tenant_request(obj, OPTED_IN)) == []


@pytest.mark.parametrize(
    "obj", [claim("gpu.example.com"), template("gpu.example.com"), pod("nvidia.com/gpu")]
)
def test_other_requests_are_admitted_everywhere(obj: dict[str, Any]) -> None:
    assert admit(TENANT_POLICIES, tenant_request(obj, {})) == []


def test_empty_claim_and_plain_pod_admitted() -> None:
    empty = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "spec": {}}
    plain = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "a", "image": "x"}]}}
    assert admit(TENANT_POLICIES, tenant_request(empty, {})) == []
    assert admit(TENANT_POLICIES, tenant_request(plain, {})) == []


def test_workloads_namespace_is_opted_in_and_every_overlay_has_the_policy() -> None:
    for path in (
        "manifests/dra/namespaces.yaml",
        "manifests/overlays/device-plugin/namespace-workloads.yaml",
    ):
        docs = [d for d in yaml.safe_load_all((REPO / path).read_text()) if d]
        ns = next(d for d in docs if d["metadata"]["name"] == "qubelet-workloads")
        assert ns["metadata"]["labels"]["quantum.example.com/qpu-tenant"] == "true"
    for overlay in ("dra", "device-plugin"):
        kust = yaml.safe_load((REPO / "manifests" / "overlays" / overlay / "kustomization.yaml").read_text())
        assert "../../tenants" in kust["resources"]


# -- RBAC ------------------------------------------------------------------------------------


def rules(path: str, kind: str, name: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((REPO / path).read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return copy.deepcopy(role["rules"])


def verbs(rule_list: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for r in rule_list:
        for g in r["apiGroups"]:
            for res in r["resources"]:
                out.setdefault((g, res), set()).update(r["verbs"])
    return out


def test_node_plugin_gets_claims_only_and_writes_slices_it_lists() -> None:
    assert verbs(rules("manifests/dra/rbac.yaml", "ClusterRole", "qubelet-dra-kubelet-plugin")) == {
        ("resource.k8s.io", "resourceslices"): {"list", "create", "update", "delete"},
        ("resource.k8s.io", "resourceclaims"): {"get"},
        ("", "nodes"): {"get"},
    }


@pytest.mark.parametrize(
    ("path", "name", "lease"),
    [
        ("manifests/dra/rbac.yaml", "qubelet-dra-controller-leader-election", LEASE_NAME),
        (
            "manifests/admission-check/rbac.yaml",
            "qubelet-admission-check-leader-election",
            "qubelet-admission-check",
        ),
    ],
)
def test_lease_roles_name_their_lease(path: str, name: str, lease: str) -> None:
    role = rules(path, "Role", name)
    for rule in role:
        if set(rule["verbs"]) - {"create"}:
            assert rule.get("resourceNames") == [lease], rule
    assert verbs(role) == {("coordination.k8s.io", "leases"): {"create", "get", "update"}}


def test_admission_check_lease_name_is_the_code_s() -> None:
    from admission_check.names import LEASE_NAME as AC_LEASE

    assert AC_LEASE == "qubelet-admission-check"


# -- Pushgateway NetworkPolicy ---------------------------------------------------------------


def test_only_step_pods_push_and_only_prometheus_reads_the_pushgateway() -> None:
    from pipeline.cluster.render import KIND_LABEL

    (policy,) = yaml.safe_load_all((REPO / "manifests/monitoring/networkpolicy.yaml").read_text())
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == "qubelet-workloads"
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "qubelet-pushgateway"}
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    steps, prometheus = rule["from"]
    # step pods: the label the renderer puts on every step's pod, in the pushgateway's namespace
    assert steps == {"podSelector": {"matchExpressions": [{"key": KIND_LABEL, "operator": "Exists"}]}}
    assert prometheus["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    assert rule["ports"] == [{"port": 9091, "protocol": "TCP"}]
    kust = yaml.safe_load((REPO / "manifests/monitoring/kustomization.yaml").read_text())
    assert "networkpolicy.yaml" in kust["resources"]


# -- slice names -------------------------------------------------------------------------------


def test_a_node_named_like_a_network_pool_gets_other_slice_names() -> None:
    """``pool.replace('/', '-')`` let node ``cloud-foo`` and pool ``cloud/foo`` share slice names:
    one publisher's create then failed (or replaced the other's slice) forever."""
    from dra_driver.slices import slice_name

    for index in (0, 1):
        assert slice_name("cloud-foo", index) != slice_name("cloud/foo", index)
        assert slice_name("onprem-x", index) != slice_name("onprem/x", index)
    assert slice_name("node-a") == "node-a-qpu.quantum.example.com-0"  # node slices keep their names
    import re

    dns = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    assert dns.match(slice_name("cloud/foo", 3)) and len(slice_name("cloud/" + "q" * 63, 99)) <= 253
