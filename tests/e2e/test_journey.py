"""Issue 24 on the local control plane: a workflow author's circuit, plan and run on a real API server.

The cluster is ``hack/cluster.py``'s (kube-apiserver, scheduler, controller-manager, Kueue, the
DRA overlay; Argo's CRDs installed, Argo's controller not run: step pods are built from the
rendered templates as Argo would, ``tests/e2e/argo_pods.py``).

- ``qubelet submit --circuit my.qpy`` from a clean directory: the inputs ConfigMap and the
  Workflow are created (the ConfigMap owned by the Workflow: the garbage collector removes it
  with the Workflow); the generate step's pod, built as Argo builds it, is accepted by the API
  server with the ConfigMap mounted, carries no laptop path, and Kueue admits it; the circuit
  read back from the API server runs the generate step's command in an empty directory.
- ``render --kubeconfig`` against this cluster (no GPU) plans no GPU step and says so.
- ``runs list|get|cancel|fetch`` on the real Workflow object (``fetch`` after writing the
  reconstruct node's output into the Workflow's status subresource, as Argo's controller does).
- ``render --parameters`` is one Workflow (a chain per set) the API server accepts.

Run on the harness (before it was on main): 4 passed in 106 s, cluster start included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from argo_pods import step_pod
from conftest import wait_for  # tests/e2e/conftest.py, beside argo_pods
from qiskit import QuantumCircuit, qpy

from pipeline.cluster import inputs as run_inputs
from pipeline.cluster.runs import RESULTS_PARAMETER
from qubelet.cli import main

NS = "qubelet-workloads"
GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "workflows"
ROOT = Path(__file__).resolve().parents[2]


def _circuit(path: Path) -> Path:
    """A 4-qubit circuit, different every call: each test's inputs ConfigMap is its own."""
    import random

    circuit = QuantumCircuit(4)
    for q in range(4):
        circuit.ry(random.uniform(-3, 3), q)
    circuit.cx(0, 1)
    circuit.cx(1, 2)
    circuit.cx(2, 3)
    with path.open("wb") as handle:
        qpy.dump(circuit, handle)
    return path


def _workflows(e2e: Any) -> list[dict[str, Any]]:
    return list(e2e.custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"])


@pytest.fixture
def submitted(e2e_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``qubelet submit --circuit my.qpy --no-follow`` run from a clean directory; the Workflow."""
    laptop = tmp_path / f"laptop-{uuid.uuid4().hex[:6]}"
    laptop.mkdir()
    _circuit(laptop / "my.qpy")
    monkeypatch.chdir(laptop)
    before = {w["metadata"]["name"] for w in _workflows(e2e_cluster)}
    run_id = f"journey-{uuid.uuid4().hex[:6]}"
    argv = [
        "submit", f"--kubeconfig={e2e_cluster.kubeconfig}", "--circuit=my.qpy", "--partition=AABB",
        "--shots=64", "--backends=cpu", f"--run-id={run_id}", "--no-follow",
    ]  # fmt: skip
    assert main(argv) == 0
    (workflow,) = [w for w in _workflows(e2e_cluster) if w["metadata"]["name"] not in before]
    return {"workflow": workflow, "laptop": laptop, "run_id": run_id}


def test_submit_from_a_clean_dir_gets_the_circuit_into_the_generate_step(
    e2e_cluster: Any, submitted: dict[str, Any], tmp_path: Path
) -> None:
    workflow, laptop = submitted["workflow"], submitted["laptop"]
    assert str(laptop) not in json.dumps(workflow)
    volume = next(v for v in workflow["spec"]["volumes"] if v["name"] == run_inputs.INPUTS_VOLUME)
    name = volume["configMap"]["name"]
    configmap = e2e_cluster.kubectl_json("get", "configmap", name, "-n", NS)
    (owner,) = configmap["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Workflow",
        workflow["metadata"]["name"],
        workflow["metadata"]["uid"],
    )

    # The generate step's pod as Argo creates it: accepted, mounted, no laptop path, admitted.
    pod = step_pod(workflow, "generate", f"{workflow['metadata']['name']}-generate")
    assert str(laptop) not in json.dumps(pod)
    e2e_cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    try:
        stored = e2e_cluster.kubectl_json("get", "pod", pod["metadata"]["name"], "-n", NS)
        mounts = {m["mountPath"]: m["name"] for m in stored["spec"]["containers"][0]["volumeMounts"]}
        assert mounts[run_inputs.INPUTS_MOUNT] == run_inputs.INPUTS_VOLUME
        assert "--circuit=inputs/circuit.qpy" in stored["spec"]["containers"][0]["args"]

        def bound() -> Any:
            p = e2e_cluster.kubectl_json("get", "pod", pod["metadata"]["name"], "-n", NS)
            return p if p["spec"].get("nodeName") and not p["spec"].get("schedulingGates") else None

        wait_for(bound, 90, "the generate pod admitted by Kueue and bound")
    finally:
        e2e_cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", NS, "--wait=false")

    # The circuit, read back from the API server, runs the step's command in an empty directory.
    pod_dir, pvc = tmp_path / "pod", tmp_path / "pvc"
    (pod_dir / "tmp").mkdir(parents=True)
    run_inputs.materialise(configmap, pod_dir)
    # The pod's /runs (the PVC) is a directory here; Argo already substituted the parameters.
    args = [a.replace("--run-dir=/runs/", f"--run-dir={pvc}/") for a in pod["spec"]["containers"][0]["args"]]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "HOME": str(pod_dir),
        "QUBELET_METRICS_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "qubelet.cli", *args],
        cwd=pod_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((pvc / submitted["run_id"] / "manifest.json").read_text())
    assert manifest["config"]["circuit_file"] == "inputs/circuit.qpy" and manifest["circuit_qubits"] == 4


def test_render_against_a_cluster_without_gpus_plans_no_gpu_step(
    e2e_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = e2e_cluster.kubectl_json("get", "nodes")["items"]
    assert not any(int(n["status"].get("allocatable", {}).get("nvidia.com/gpu", "0")) for n in nodes)
    out = tmp_path / "wf.yaml"
    argv = [
        "render", f"--kubeconfig={e2e_cluster.kubeconfig}", "--qubits=42", "--cuts=1", "--shots=64",
        "--policy=size", "--backends=cpu,gpu,qpu", "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "cluster: left out gpu: no node has nvidia.com/gpu capacity" in printed
    workflow = [d for d in yaml.safe_load_all(out.read_text()) if d][-1]
    assert not any(t["name"] == "execute-gpu" for t in workflow["spec"]["templates"])
    assert "--backends=cpu,qpu" in workflow["spec"]["templates"][1]["container"]["args"]


def test_runs_list_get_cancel_fetch_on_the_real_workflow(
    e2e_cluster: Any, submitted: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workflow = submitted["workflow"]
    name = workflow["metadata"]["name"]
    kubeconfig = f"--kubeconfig={e2e_cluster.kubeconfig}"
    capsys.readouterr()
    assert main(["runs", "list", kubeconfig]) == 0
    assert name in capsys.readouterr().out
    assert main(["runs", "get", name, kubeconfig]) == 0
    assert f"run id:    {submitted['run_id']}" in capsys.readouterr().out
    assert main(["runs", "cancel", name, kubeconfig]) == 0
    stored = e2e_cluster.custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    assert stored["spec"]["shutdown"] == "Stop"

    # Argo's controller's part: the reconstruct node's output parameter into status.nodes.
    summary = {"qubits": 4, "cuts": 1, "policy": "size", "observables": [], "backends": {}}
    published = json.dumps({"set_dir": ".", "summary": summary, "table": "observable\n", "timeline_png": ""})
    node = {
        "id": f"{name}-1",
        "name": f"{name}.reconstruct",
        "type": "Pod",
        "templateName": "reconstruct",
        "phase": "Succeeded",
        "outputs": {"parameters": [{"name": RESULTS_PARAMETER, "value": published}]},
    }
    stored["status"] = {"phase": "Succeeded", "nodes": {node["id"]: node}}
    e2e_cluster.custom.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, name, stored)
    dest = tmp_path / "fetched"
    assert main(["runs", "fetch", name, kubeconfig, "-o", str(dest)]) == 0
    assert json.loads((dest / "summary.json").read_text()) == summary
    # The ConfigMap goes with the Workflow (the garbage collector follows the ownerReference).
    e2e_cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    volume = next(v for v in workflow["spec"]["volumes"] if v["name"] == run_inputs.INPUTS_VOLUME)
    cm = volume["configMap"]["name"]
    wait_for(
        lambda: not e2e_cluster.kubectl("get", "configmap", cm, "-n", NS, "--ignore-not-found"),
        60,
        "the inputs ConfigMap garbage-collected with its Workflow",
    )


def test_render_parameters_is_one_sweep_the_api_server_accepts(e2e_cluster: Any, tmp_path: Path) -> None:
    """One Workflow for the whole sweep (a chain per set) and its inputs, as the API server stores them."""
    from qiskit.circuit import Parameter

    theta = Parameter("theta")
    circuit = QuantumCircuit(4)
    circuit.ry(theta, range(4))
    circuit.cx(0, 1)
    circuit.cx(1, 2)
    circuit.cx(2, 3)
    with (tmp_path / "p.qpy").open("wb") as handle:
        qpy.dump(circuit, handle)
    (tmp_path / "sets.json").write_text(json.dumps([{"theta": 0.2}, {"theta": 1.3}]))
    out = tmp_path / "sweep.yaml"
    argv = [
        "render", f"--kubeconfig={e2e_cluster.kubeconfig}", f"--circuit={tmp_path / 'p.qpy'}",
        "--partition=AABB", f"--parameters={tmp_path / 'sets.json'}", "--shots=64", "--backends=cpu",
        "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    workflow = docs[-1]
    workflow["metadata"]["name"] = f"sweep-{uuid.uuid4().hex[:6]}"
    e2e_cluster.kubectl("create", "-f", "-", input=yaml.safe_dump_all([*docs[:-1], workflow]))
    stored = e2e_cluster.kubectl_json("get", "workflow", workflow["metadata"]["name"], "-n", NS)
    names = [t["name"] for t in stored["spec"]["templates"][0]["dag"]["tasks"]]
    assert "set-0000-generate" in names and "set-0001-reconstruct" in names
    assert str(tmp_path) not in json.dumps(stored)
