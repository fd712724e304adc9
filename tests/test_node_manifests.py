"""What a real cluster needs from the node agents' manifests, checked on the rendered overlays.

Each check pins one fault a review found against upstream drivers: a DRA namespace that Pod
Security would reject, probes that prove nothing, kubelet paths that cannot move (k0s,
microk8s), a critical priority class without the quota GKE requires, an extended-resource
mapping that silently vanishes without its feature gate, and a Kueue fragment that dropped the
other tenants' integrations. Rendering uses ``kubectl kustomize`` (skipped without kubectl).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
AGENTS = {"qubelet-dra-kubelet-plugin", "qubelet-device-plugin"}


def kustomize(target: Path | str, components: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of an overlay, optionally through a throwaway overlay adding components."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (needed to render the kustomizations)")
    with tempfile.TemporaryDirectory(prefix="kust") as tmp:
        path = Path(target)
        if components:
            rel = lambda p: os.path.relpath(p, tmp)  # noqa: E731 (kustomize wants relative paths)
            (Path(tmp) / "kustomization.yaml").write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "kustomize.config.k8s.io/v1beta1",
                        "kind": "Kustomization",
                        "resources": [rel(target)],
                        "components": [rel(MANIFESTS / "components" / c) for c in components],
                    }
                )
            )
            path = Path(tmp)
        out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.fixture(scope="module")
def dra() -> list[dict[str, Any]]:
    return kustomize(MANIFESTS / "overlays" / "dra")


@pytest.fixture(scope="module")
def device_plugin() -> list[dict[str, Any]]:
    return kustomize(MANIFESTS / "overlays" / "device-plugin")


@pytest.mark.parametrize("overlay", ["dra", "device-plugin"])
def test_system_namespace_enforces_privileged(overlay: str, request: pytest.FixtureRequest) -> None:
    docs = request.getfixturevalue(overlay.replace("-", "_"))
    labels = find(docs, "Namespace", "qubelet-system")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def _probes_target_the_metrics_server(c: dict[str, Any]) -> None:
    argv = c.get("command", []) + c.get("args", [])
    flag = " ".join(argv)
    port = int(re.search(r"--metrics-port[= ](\d+)", flag)[1])  # type: ignore[index]
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert named["metrics"] == port
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_every_daemon_has_real_probes(dra: list[dict[str, Any]], device_plugin: list[dict[str, Any]]) -> None:
    containers = [
        find(dra, "DaemonSet", "qubelet-dra-kubelet-plugin"),
        find(dra, "Deployment", "qubelet-dra-controller"),
        find(device_plugin, "DaemonSet", "qubelet-device-plugin"),
    ]
    for workload in containers:
        (c,) = workload["spec"]["template"]["spec"]["containers"]
        _probes_target_the_metrics_server(c)


def test_dra_plugin_runs_as_root_without_capabilities(dra: list[dict[str, Any]]) -> None:
    pod = find(dra, "DaemonSet", "qubelet-dra-kubelet-plugin")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c["env"]}
    assert env["POD_NAMESPACE"] == "metadata.namespace"


def test_kubelet_directories_are_not_created_by_the_agents(
    dra: list[dict[str, Any]], device_plugin: list[dict[str, Any]]
) -> None:
    for docs, name in ((dra, "qubelet-dra-kubelet-plugin"), (device_plugin, "qubelet-device-plugin")):
        volumes = find(docs, "DaemonSet", name)["spec"]["template"]["spec"]["volumes"]
        for v in volumes:
            if "hostPath" in v and v["hostPath"]["path"].startswith("/var/lib/kubelet"):
                assert v["hostPath"]["type"] == "Directory", v


@pytest.mark.parametrize(
    ("component", "root"),
    [
        ("kubelet-root-k0s", "/var/lib/k0s/kubelet"),
        ("kubelet-root-microk8s", "/var/snap/microk8s/common/var/lib/kubelet"),
    ],
)
@pytest.mark.parametrize("overlay", ["dra", "device-plugin"])
def test_kubelet_root_component_moves_every_kubelet_path(component: str, root: str, overlay: str) -> None:
    docs = kustomize(MANIFESTS / "overlays" / overlay, (component,))
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] in AGENTS]
    pod = ds["spec"]["template"]["spec"]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert not [p for p in host.values() if p.startswith("/var/lib/kubelet")]
    assert [p for p in host.values() if p.startswith(root)]
    if overlay == "dra":
        # kubelet dials the socket path the plugin reports, so container path == host path
        (c,) = pod["containers"]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        for name, path in host.items():
            assert mounts[name] == path
        assert f"--plugins-dir={root}/plugins" in c["command"]
        assert "/var/lib/kubelet" not in yaml.safe_dump(ds).replace(root, "<root>")
    for doc in docs:
        if doc["kind"] in ("DaemonSet", "Deployment"):
            kubernetes_validate.validate(doc, "1.34", strict=True)


def test_critical_priority_quota_component() -> None:
    docs = kustomize(MANIFESTS / "overlays" / "dra", ("critical-priority-quota",))
    quota = find(docs, "ResourceQuota", "qubelet-critical-pods")
    kubernetes_validate.validate(quota, "1.34", strict=True)
    assert quota["metadata"]["namespace"] == "qubelet-system"
    (expr,) = quota["spec"]["scopeSelector"]["matchExpressions"]
    assert expr["scopeName"] == "PriorityClass" and "system-node-critical" in expr["values"]
    priority = find(docs, "DaemonSet", "qubelet-dra-kubelet-plugin")["spec"]["template"]["spec"]
    assert priority["priorityClassName"] in expr["values"]


def test_extended_resource_variant_for_clusters_without_the_gate(dra: list[dict[str, Any]]) -> None:
    gated = find(dra, "DeviceClass", "qpu.quantum.example.com")
    assert gated["spec"]["extendedResourceName"] == "quantum.example.com/qpu"
    assert "DRAExtendedResource" in (MANIFESTS / "dra" / "deviceclass.yaml").read_text()
    plain = find(
        kustomize(MANIFESTS / "overlays" / "dra-no-extended-resource"),
        "DeviceClass",
        gated["metadata"]["name"],
    )
    assert "extendedResourceName" not in plain["spec"]
    assert plain["spec"]["selectors"] == gated["spec"]["selectors"]


#: Kueue's default integrations (Helm chart and config/components/manager, Kueue v0.16).
KUEUE_DEFAULT_FRAMEWORKS = {
    "batch/job",
    "kubeflow.org/mpijob",
    "ray.io/rayjob",
    "ray.io/rayservice",
    "ray.io/raycluster",
    "jobset.x-k8s.io/jobset",
    "trainer.kubeflow.org/trainjob",
    "kubeflow.org/paddlejob",
    "kubeflow.org/pytorchjob",
    "kubeflow.org/tfjob",
    "kubeflow.org/xgboostjob",
    "kubeflow.org/jaxjob",
    "workload.codeflare.dev/appwrapper",
    "pod",
    "deployment",
    "statefulset",
    "leaderworkerset.x-k8s.io/leaderworkerset",
}


def test_kueue_fragment_adds_and_keeps_the_defaults() -> None:
    config = yaml.safe_load((MANIFESTS / "kueue" / "kueue-config-fragment.yaml").read_text())
    assert set(config["integrations"]["frameworks"]) >= KUEUE_DEFAULT_FRAMEWORKS
    assert "managedJobsNamespaceSelector" not in config  # the install's own selector stays


def test_client_floor_has_resource_v1() -> None:
    from kubernetes import client

    text = (ROOT / "pyproject.toml").read_text()
    assert '"kubernetes>=34"' in text
    assert hasattr(client, "ResourceV1Api")


@pytest.mark.parametrize("overlay", ["dra", "device-plugin"])
def test_node_agent_component_runs_one_agent_per_node(overlay: str) -> None:
    docs = kustomize(MANIFESTS / "overlays" / overlay, ("node-agent",))
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    kubernetes_validate.validate(ds, "1.34", strict=True)
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    argv = c.get("command", []) + c.get("args", [])
    assert "node-agent" in argv and "--mode=auto" in argv
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/var/lib/kubelet/device-plugins" in mounts  # the fallback needs kubelet's device-plugins dir
    if overlay == "dra":
        assert {"/var/lib/kubelet/plugins", "/var/lib/kubelet/plugins_registry"} <= mounts
    _probes_target_the_metrics_server(c)


# -- node-agent with a kubelet-root component (issue 23) -------------------------------------


def _kustomize(tmp_path: Path, resource: str, components: list[str]) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    repo = Path(__file__).resolve().parent.parent / "manifests"
    overlay = tmp_path / "overlay"
    overlay.mkdir()

    def rel(p: str) -> str:  # kustomize wants relative paths
        return os.path.relpath(repo / p, overlay)

    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [rel(resource)], "components": [rel(c) for c in components]})
    )
    return subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("resource", "components"),
    [
        ("overlays/dra", ["components/kubelet-root-k0s", "components/node-agent"]),
        ("overlays/dra", ["components/node-agent", "components/kubelet-root-k0s"]),
        ("overlays/device-plugin", ["components/kubelet-root-k0s", "components/node-agent"]),
        ("overlays/dra", ["components/kubelet-root-microk8s", "components/node-agent"]),
    ],
)
def test_node_agent_with_another_kubelet_root_fails_to_build(
    tmp_path: Path, resource: str, components: list[str]
) -> None:
    """It used to build and mount the wrong root; now kustomize refuses, naming a component."""
    out = _kustomize(tmp_path, resource, components)
    assert out.returncode != 0, "built a node agent that would look in the wrong kubelet root"
    assert "components/node-agent" in out.stderr or "components/kubelet-root" in out.stderr
    assert "test failed" in out.stderr


def test_node_agent_alone_still_builds(tmp_path: Path) -> None:
    out = _kustomize(tmp_path, "overlays/dra", ["components/node-agent"])
    assert out.returncode == 0, out.stderr
