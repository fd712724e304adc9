"""manifests/dra: every object validates against the Kubernetes 1.34 schema of its kind, the
kustomization renders, and the pieces agree with the driver (names, RBAC, policy)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dra_driver.constants import LEASE_NAME, LEASE_NAMESPACE
from qubelet.inventory import parse_config
from qubelet.inventory.names import DRIVER_NAME, RESOURCE_NAME

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent
DRA = ROOT / "manifests" / "dra"
K8S_VERSION = "1.34"


def documents(examples: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """(file, object) for every manifest; ``examples=False``: only what the kustomization ships."""
    out = []
    for path in sorted(DRA.rglob("*.yaml")):
        if path.name in ("kustomization.yaml", "qpus.yaml") or (not examples and "examples" in path.parts):
            continue  # qpus.yaml is the inventory the ConfigMap is generated from
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((str(path.relative_to(ROOT)), doc))
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in documents(examples=False) if d["kind"] == kind]


def test_schemas_known_for_this_version() -> None:
    """The validator has 1.34 schemas for DRA v1 and ValidatingAdmissionPolicy v1."""
    for api, kind in (
        ("resource.k8s.io/v1", "DeviceClass"),
        ("resource.k8s.io/v1", "ResourceClaimTemplate"),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"),
    ):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(
                {"apiVersion": api, "kind": kind, "spec": 7}, K8S_VERSION, strict=True
            )


@pytest.mark.parametrize(("where", "doc"), documents(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_manifest_validates(where: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomize_renders_every_file() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(DRA)], capture_output=True, text=True, timeout=50, check=False
    )
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    generated = [d for d in rendered if d["kind"] == "ConfigMap"]
    assert [d["metadata"]["name"].startswith("qubelet-qpu-config-") for d in generated] == [True]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered if d["kind"] != "ConfigMap") == sorted(
        (d["kind"], d["metadata"]["name"]) for _, d in documents(examples=False)
    )
    for ds in (d for d in rendered if d["kind"] in ("DaemonSet", "Deployment")):
        names = [
            v["configMap"]["name"] for v in ds["spec"]["template"]["spec"]["volumes"] if "configMap" in v
        ]
        assert names == [generated[0]["metadata"]["name"]]  # the hash reaches the pods


def test_deviceclass_and_templates() -> None:
    (dc,) = by_kind("DeviceClass")
    assert dc["metadata"]["name"] == DRIVER_NAME
    assert dc["spec"]["selectors"][0]["cel"]["expression"] == f'device.driver == "{DRIVER_NAME}"'
    assert dc["spec"]["extendedResourceName"] == RESOURCE_NAME
    templates = {
        t["metadata"]["name"]: t for t in by_kind("ResourceClaimTemplate") if "examples" not in str(t)
    }
    assert {"qpu", "qpu-min-qubits"} <= set(templates)
    for t in templates.values():
        assert t["metadata"]["namespace"] == "qubelet-workloads"
        (req,) = t["spec"]["spec"]["devices"]["requests"]
        assert req["exactly"]["allocationMode"] == "ExactCount" and req["exactly"]["count"] == 1
    sel = templates["qpu-min-qubits"]["spec"]["spec"]["devices"]["requests"][0]["exactly"]["selectors"]
    assert sel[0]["cel"]["expression"] == f'device.attributes["{DRIVER_NAME}"].qubits >= 20'


def test_rbac_is_least_privilege() -> None:
    roles = {r["metadata"]["name"]: r["rules"] for r in by_kind("ClusterRole")}
    plugin = {
        (g, res): set(rule["verbs"])
        for rule in roles["qubelet-dra-kubelet-plugin"]
        for g in rule["apiGroups"]
        for res in rule["resources"]
    }
    assert plugin == {
        ("resource.k8s.io", "resourceslices"): {"list", "create", "update", "delete"},
        ("resource.k8s.io", "resourceclaims"): {"get"},
        ("", "nodes"): {"get"},
    }
    controller = {
        (g, res, tuple(rule.get("resourceNames", ()))): set(rule["verbs"])
        for rule in roles["qubelet-dra-controller"]
        for g in rule["apiGroups"]
        for res in rule["resources"]
    }
    assert controller == {
        ("resource.k8s.io", "resourceslices", ()): {"list", "create", "update", "delete"},
        # reservations: list claims, write their device status for this driver only, warn with Events
        ("resource.k8s.io", "resourceclaims", ()): {"list"},
        ("resource.k8s.io", "resourceclaims/status", ()): {"update"},
        ("resource.k8s.io", "resourceclaims/driver", (DRIVER_NAME,)): {"arbitrary-node:update"},
        ("", "events", ()): {"create"},
    }
    (lease_role,) = by_kind("Role")
    assert lease_role["metadata"]["namespace"] == LEASE_NAMESPACE
    assert lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [LEASE_NAME],
            "verbs": ["get", "update"],
        },
    ]
    assert LEASE_NAME  # the controller's Lease lives in the Role's namespace


def test_admission_policy_pins_node_plugin_to_its_node() -> None:
    vaps = {v["metadata"]["name"]: v for v in by_kind("ValidatingAdmissionPolicy")}
    bindings = {b["spec"]["policyName"]: b for b in by_kind("ValidatingAdmissionPolicyBinding")}
    assert (
        set(vaps)
        == set(bindings)
        == {
            "qubelet-dra-resourceslices-own-node",
            "qubelet-dra-resourceslices-controller",
        }
    )
    vap = vaps["qubelet-dra-resourceslices-own-node"]
    binding = bindings[vap["metadata"]["name"]]
    assert binding["spec"]["validationActions"] == ["Deny"]
    text = yaml.safe_dump(vap)
    assert "authentication.kubernetes.io/node-name" in text
    assert "system:serviceaccount:qubelet-system:qubelet-dra-kubelet-plugin" in text
    assert "nodeName" in text


def test_daemonset_mounts_and_env() -> None:
    (ds,) = by_kind("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/qubelet/qubelet-node:0.1.0"
    assert c["command"][:3] == ["qubelet", "dra-driver", "kubelet-plugin"]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert set(host.values()) == {
        "/var/lib/kubelet/plugins",
        "/var/lib/kubelet/plugins_registry",
        "/var/run/cdi",
    }
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    secret = next(v for v in pod["volumes"] if "secret" in v)
    assert secret["secret"] == {"secretName": "qubelet-iqm-tokens", "optional": True, "defaultMode": 0o400}
    mount = next(m for m in c["volumeMounts"] if m["name"] == secret["name"])
    assert mount["readOnly"] is True
    cm = next(v for v in pod["volumes"] if "configMap" in v)
    assert cm["configMap"]["name"] == "qubelet-qpu-config"
    (dep,) = by_kind("Deployment")
    assert dep["metadata"]["namespace"] == ds["metadata"]["namespace"] == "qubelet-system"
    assert dep["spec"]["template"]["spec"]["containers"][0]["command"][:3] == [
        "qubelet",
        "dra-driver",
        "controller",
    ]


def test_configmap_holds_the_example_inventory() -> None:
    """Generated with a hash in its name (an inventory edit rolls the pods), from the example."""
    kust = yaml.safe_load((DRA / "kustomization.yaml").read_text())
    (gen,) = kust["configMapGenerator"]
    assert gen["name"] == "qubelet-qpu-config" and gen["files"] == ["qpus.yaml"]
    assert not gen.get("options", {}).get("disableNameSuffixHash")
    text = (DRA / "qpus.yaml").read_text()
    assert text == (ROOT / "manifests" / "examples" / "qpus.yaml").read_text()
    config = parse_config(yaml.safe_load(text), "configmap")
    assert {q.location for q in config.qpus} == {"onprem", "cloud"}
