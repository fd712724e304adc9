"""The device plugin manifests validate against the Kubernetes 1.34 schemas and kustomize renders."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from qubelet.inventory import parse_config

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "manifests" / "device-plugin"
K8S_VERSION = "1.34"


def load_objects(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    return sorted(p for p in BASE.glob("*.yaml") if p.name not in ("kustomization.yaml", "qpus.yaml"))


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_each_object_validates(path: Path) -> None:
    objects = load_objects(path)
    assert objects
    for obj in objects:
        assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == K8S_VERSION


def test_strict_validation_catches_typos() -> None:
    (ds,) = load_objects(BASE / "daemonset.yaml")
    ds["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def test_daemonset_contract() -> None:
    (ds,) = load_objects(BASE / "daemonset.yaml")
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/qubelet/qubelet-node:0.1.0"
    assert container["args"] == [
        "device-plugin",
        "--config",
        "/etc/qubelet/config.yaml",
        "--kubelet-dir",
        "/var/lib/kubelet/device-plugins",
        "--stage-tokens-dir",
        "/var/lib/qubelet/device-plugin/tokens",
        "--metrics-port",
        "9410",
    ]
    assert pod["priorityClassName"] == "system-node-critical"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["device-plugins"]["hostPath"]["path"] == "/var/lib/kubelet/device-plugins"
    assert volumes["config"]["configMap"]["name"] == "qubelet-qpu-config"
    assert volumes["iqm-tokens"]["secret"] == {
        "secretName": "qubelet-iqm-tokens",
        "optional": True,
        "defaultMode": 0o400,
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["iqm-tokens"]["readOnly"] is True
    # the staged token copy lives at the same path in the container and on the node (issue 23)
    assert volumes["staged-tokens"]["hostPath"]["path"] == mounts["staged-tokens"]["mountPath"]
    assert mounts["staged-tokens"]["mountPath"] == "/var/lib/qubelet/device-plugin/tokens"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["tolerations"]


def test_configmap_copy_matches_example() -> None:
    assert (BASE / "qpus.yaml").read_text() == (REPO / "manifests" / "examples" / "qpus.yaml").read_text()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_renders_and_validates() -> None:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    objects = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == ["ConfigMap", "DaemonSet", "Namespace", "Service", "ServiceAccount"]
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    (cm,) = (o for o in objects if o["kind"] == "ConfigMap")
    (ds,) = (o for o in objects if o["kind"] == "DaemonSet")
    assert cm["metadata"]["name"].startswith("qubelet-qpu-config-")  # hash suffix for rollouts
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    # the ConfigMap carries a valid inventory
    config = parse_config(yaml.safe_load(cm["data"]["config.yaml"]), "configmap")
    assert [q.name for q in config.qpus] == ["adonis-onprem", "apollo-cloud"]
