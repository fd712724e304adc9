"""Scenario 5 (issue 19): the node agent's choice and the extended resource, on the real control plane.

- ``qubelet node-agent --mode=auto`` asks the real API server's discovery and its Node's
  ``kubeletVersion``: DRA for a 1.37 kubelet, the device plugin for a 1.33 one.
- Device-plugin path: a node whose capacity carries ``quantum.example.com/qpu`` (as kubelet
  reports it after the device plugin registered) gets the pods asking for it; the scheduler
  never places one on a node without it when no DeviceClass serves the name.
- DRA path for the same request: the DeviceClass ``extendedResourceName`` (DRAExtendedResource,
  GA in 1.37) lets the scheduler allocate a QPU device for ``quantum.example.com/qpu: 1`` on a
  node without that capacity; the claim it makes is prepared by the node's kubelet plugin.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TENANT, wait_for

QPU = "quantum.example.com/qpu"


@pytest.fixture
def ns(e2e_cluster: Any) -> Iterator[str]:
    name = f"agent-{uuid.uuid4().hex[:6]}"
    e2e_cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": TENANT}})
    wait_for(lambda: e2e_cluster.kubectl("get", "serviceaccount", "default", "-n", name), 30, "default SA")
    yield name
    e2e_cluster.kubectl("delete", "namespace", name, "--wait=false")


def agent_choice(e2e: Any, node: str, kubelet_version: str, tmp_path: Path) -> str:
    """Run ``qubelet node-agent --mode=auto`` for a Node reporting ``kubelet_version``; its mode line."""
    e2e.apply(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"agent-test": "true"}}}
    )
    e2e.cluster.set_node_status(node, kubelet_version=kubelet_version)
    e2e.kubectl("taint", "node", node, "agent-test=true:NoSchedule")  # keep other tests' pods off it
    root = Path(f"/tmp/qba-{uuid.uuid4().hex[:6]}")
    for sub in ("plugins_registry", "plugins", "device-plugins", "cdi"):
        (root / sub).mkdir(parents=True)
    log = tmp_path / f"{node}.log"
    env = {**os.environ, **e2e.cluster.daemon_env()}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qubelet.cli", "node-agent", "--mode=auto",
             f"--config={ROOT}/manifests/examples/qpus.yaml", f"--node-name={node}",
             f"--kubelet-root={root}", f"--cdi-dir={root / 'cdi'}",
             f"--kubeconfig={e2e.kubeconfig}", "--metrics-port=0"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip
    try:
        line = wait_for(
            lambda: next((x for x in log.read_text().splitlines() if "node agent mode chosen" in x), None),
            60,
            f"the node agent on {node} to choose",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        e2e.kubectl("delete", "node", node, "--ignore-not-found")
        subprocess.run(["rm", "-rf", str(root)], check=False)
    return line


def test_node_agent_picks_dra_from_real_discovery_and_the_plugin_for_old_kubelets(
    e2e_cluster: Any, tmp_path: Path
) -> None:
    new = agent_choice(e2e_cluster, "agent-new", e2e_cluster.versions["kubernetes"], tmp_path)
    assert 'mode="dra"' in new or "mode=dra" in new, new
    old = agent_choice(e2e_cluster, "agent-old", "v1.33.4", tmp_path)
    assert "device-plugin" in old and "older than" in old, old


def pod(name: str, ns: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "job", "image": "busybox", "resources": {"limits": {QPU: "1"}}}],
        },
    }


def test_extended_resource_from_node_capacity_and_from_the_device_class(e2e_cluster: Any, ns: str) -> None:
    # Device-plugin path: cpu-node-1 reports two QPUs in its capacity (kubelet, after the device
    # plugin registered and listed two healthy devices).
    e2e_cluster.cluster.set_node_status("cpu-node-1", {QPU: "2"})
    try:
        e2e_cluster.apply(
            pod("dp-0", ns, "cpu-node-1"), pod("dp-1", ns, "cpu-node-1"), pod("dp-2", ns, "cpu-node-1")
        )
        for name in ("dp-0", "dp-1"):
            bound = wait_for(
                lambda name=name: e2e_cluster.kubectl_json("get", "pod", name, "-n", ns)["spec"].get(
                    "nodeName"
                ),
                60,
                f"{name} placed by capacity",
            )
            assert bound == "cpu-node-1"
            status = e2e_cluster.kubectl_json("get", "pod", name, "-n", ns)["status"]
            assert not status.get("extendedResourceClaimStatus"), status  # the node's own devices
        # a third does not fit the node's two (and that node has no QPU slice for DRA to use)
        time.sleep(3)
        assert not e2e_cluster.kubectl_json("get", "pod", "dp-2", "-n", ns)["spec"].get("nodeName")
    finally:
        e2e_cluster.kubectl(
            "delete", "pod", "dp-0", "dp-1", "dp-2", "-n", ns, "--ignore-not-found", "--wait=false"
        )
        e2e_cluster.cluster.set_node_status("cpu-node-1")

    # DRA path: qpu-node-1 has no such capacity; the DeviceClass's extendedResourceName serves it.
    e2e_cluster.apply(pod("dra-er", ns, "qpu-node-1"))

    def claimed() -> Any:
        p = e2e_cluster.kubectl_json("get", "pod", "dra-er", "-n", ns)
        return p if p["spec"].get("nodeName") and p["status"].get("extendedResourceClaimStatus") else None

    bound = wait_for(claimed, 60, "the scheduler to serve quantum.example.com/qpu through DRA")
    claim_name = bound["status"]["extendedResourceClaimStatus"]["resourceClaimName"]
    claim = e2e_cluster.kubectl_json("get", "resourceclaim", claim_name, "-n", ns)
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    assert result["driver"] == "qpu.quantum.example.com", result
    record = e2e_cluster.prepared(ns, "dra-er")
    assert record["claims"]["<extended-resource>"]["error"] == ""
    env = record["containers"]["job"]["env"]
    assert any(e.startswith("QUBELET_QPU_NAME=") for e in env), record
