"""A workflow author's way from her laptop to the cluster (issue 24), without the cluster.

- Her files travel in the Workflow: ``render`` puts the circuit (an OpenQASM 3 file, as QPY), the
  observables file and the policy model into an inputs ConfigMap; the rendered steps, run as
  processes in an empty directory holding only what the pod would see (the ConfigMap's files
  under ``inputs/`` and the PVC), find them, and no laptop path appears anywhere.
- ``render --parameters`` gives one Workflow with one chain per parameter set.
- The plan fits the cluster: a cluster without GPUs (from ``--cluster-profile`` or read with
  ``--kubeconfig``) gets no GPU step, and ``render`` says so; without either, it says what it
  assumed. ``task execute`` of a GPU batch on a machine without one is one line, exit 2.
- ``runs list|get|logs|cancel|fetch`` on Workflow objects. Argo's controller does not run here, so
  the test plays it where it must: it copies the reconstruct step's output parameter (the file
  the step wrote, as Argo's executor reports it) into ``status.nodes``, as the controller does.

The kube-apiserver is :mod:`doubles.fake_kube_objects` (the real client, real HTTP); the same
journey on the local control plane is ``tests/e2e``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import schemas
import yaml
from doubles import fake_kube_objects as fko

from pipeline.cluster import inputs as run_inputs
from pipeline.cluster import render
from qubelet.cli import main

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[1]
NS = "qubelet-workloads"
WORKFLOWS = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows"
PODS = f"/api/v1/namespaces/{NS}/pods"

QASM4 = """OPENQASM 3.0;
include "stdgates.inc";
qubit[4] q;
ry(0.3) q[0];
ry(1.1) q[1];
ry(-0.4) q[2];
ry(0.9) q[3];
cx q[0], q[1];
cx q[1], q[2];
cx q[2], q[3];
"""


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _templates(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in workflow["spec"]["templates"]}


def _dag(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_templates(workflow)["main"]["dag"]["tasks"])


def _run_step(
    workflow: dict[str, Any], task: dict[str, Any], pod_dir: Path, pvc: Path
) -> subprocess.CompletedProcess[str]:
    """Run a DAG task's container command as its pod would: in ``pod_dir`` (the container's
    working directory, holding ``inputs/``), with Argo's parameters substituted and the PVC at ``pvc``."""
    template = _templates(workflow)[task["template"]]
    params = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    values = {f"{{{{workflow.parameters.{k}}}}}": v for k, v in params.items()}
    values["{{workflow.parameters.runs-root}}"] = str(pvc)
    for p in task.get("arguments", {}).get("parameters", []):
        value = p["value"]
        for key, sub in values.items():
            value = value.replace(key, sub)
        values[f"{{{{inputs.parameters.{p['name']}}}}}"] = value

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        assert "{{" not in text, f"unsubstituted Argo parameter in {text!r}"
        return text

    container = template["container"]
    assert container["workingDir"] == run_inputs.STEP_WORKDIR
    argv = [fill(a) for a in container["args"]]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "HOME": str(pod_dir),
        "MPLCONFIGDIR": str(pod_dir / "tmp"),
        **{e["name"]: e["value"] for e in container.get("env", []) if e["name"] != "QUBELET_PUSHGATEWAY"},
        "QUBELET_METRICS_PORT": "0",
        "QUBELET_METRICS_LINGER": "0",
        "QUBELET_RUNS_ROOT": str(pvc),
    }
    return subprocess.run(
        [sys.executable, "-m", "qubelet.cli", *argv],
        cwd=pod_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _run_chain(workflow: dict[str, Any], tasks: list[dict[str, Any]], pod_dir: Path, pvc: Path) -> None:
    for task in tasks:
        done = _run_step(workflow, task, pod_dir, pvc)
        assert done.returncode == 0, f"{task['name']}: {done.stderr[-2000:]}"


@pytest.fixture
def laptop(tmp_path: Path) -> Path:
    """The author's files, in a directory no step may name."""
    home = tmp_path / "laptop-only-dir"
    home.mkdir()
    (home / "my4.qasm").write_text(QASM4)
    (home / "obs.json").write_text(
        json.dumps([{"name": "energy", "terms": [["ZZII", 1.0], ["IIZZ", -0.5]]}, "Z0Z3"])
    )
    from policy.models import PolicyModel

    PolicyModel().save(home / "model.json")
    return home


def test_inputs_travel_with_the_workflow_and_steps_find_them_in_a_clean_dir(
    laptop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "wf.yaml"
    argv = [
        "render",
        f"--circuit={laptop / 'my4.qasm'}",
        "--partition=AABB",
        f"--observables-file={laptop / 'obs.json'}",
        f"--policy-model={laptop / 'model.json'}",
        "--policy=telemetry",
        "--shots=128",
        "--backends=cpu",
        "--run-id=journey-1",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    text = out.read_text()
    assert str(laptop) not in text and "laptop-only-dir" not in text, "a laptop path reached the Workflow"
    docs = _docs(out)
    for doc in docs:
        schemas.validate(doc)
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    workflow = docs[-1]
    assert set(configmap["binaryData"]) == {run_inputs.CIRCUIT}
    assert set(configmap["data"]) == {run_inputs.OBSERVABLES, run_inputs.POLICY_MODEL}
    assert f"inputs: ConfigMap {configmap['metadata']['name']}" in printed
    # mounted into the generate step only, from the Workflow's own volume
    volumes = {v["name"]: v for v in workflow["spec"]["volumes"]}
    assert volumes[run_inputs.INPUTS_VOLUME]["configMap"]["name"] == configmap["metadata"]["name"]
    generate = _templates(workflow)["generate"]["container"]
    assert {"name": "inputs", "mountPath": "/inputs", "readOnly": True} in generate["volumeMounts"]
    assert "--circuit=inputs/circuit.qpy" in generate["args"]
    assert not any(a.startswith(("--qubits", "--cuts")) for a in generate["args"])

    # The pod's view: an empty working directory with the ConfigMap's files, and the PVC.
    pod_dir, pvc = tmp_path / "pod", tmp_path / "pvc"
    pod_dir.mkdir()
    (pod_dir / "tmp").mkdir()
    run_inputs.materialise(configmap, pod_dir)
    _run_chain(workflow, _dag(workflow), pod_dir, pvc)
    run_dir = pvc / "journey-1"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["circuit_file"] == "inputs/circuit.qpy"
    assert manifest["config"]["policy_model"] == "inputs/policy-model.json"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [o["name"] for o in summary["observables"]] == ["energy", "Z0Z3"]
    results = json.loads((run_dir / render.RESULTS_FILE).read_text())
    assert results["summary"] == summary and results["timeline_png"] and "energy" in results["table"]


def test_render_parameters_is_one_cluster_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qiskit import QuantumCircuit, qpy
    from qiskit.circuit import Parameter

    theta = Parameter("theta")
    circuit = QuantumCircuit(4)
    circuit.ry(theta, range(4))
    circuit.cx(0, 1)
    circuit.cx(1, 2)
    circuit.cx(2, 3)
    laptop = tmp_path / "laptop-only-dir"
    laptop.mkdir()
    with (laptop / "p4.qpy").open("wb") as handle:
        qpy.dump(circuit, handle)
    (laptop / "sets.json").write_text(json.dumps([{"theta": 0.2}, {"theta": 1.3}, {"theta": 2.0}]))
    out = tmp_path / "wf.yaml"
    argv = [
        "render",
        f"--circuit={laptop / 'p4.qpy'}",
        "--partition=AABB",
        f"--parameters={laptop / 'sets.json'}",
        "--shots=64",
        "--backends=cpu",
        "--policy=size",
        "--run-id=sweep-1",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    assert "per parameter set, 3 sets" in capsys.readouterr().out
    assert "laptop-only-dir" not in out.read_text()
    docs = _docs(out)
    for doc in docs:
        schemas.validate(doc)
    workflow, configmap = docs[-1], next(d for d in docs if d["kind"] == "ConfigMap")
    assert json.loads(configmap["data"][run_inputs.PARAMETERS]) == [
        {"theta": 0.2},
        {"theta": 1.3},
        {"theta": 2.0},
    ]
    tasks = _dag(workflow)
    assert [t["name"] for t in tasks if t["template"] == "generate"] == [
        "set-0000-generate",
        "set-0001-generate",
        "set-0002-generate",
    ]
    assert workflow["metadata"]["annotations"][render.SWEEP_SETS_ANNOTATION] == "3"
    # Run set 1's chain as its pods would.
    pod_dir, pvc = tmp_path / "pod", tmp_path / "pvc"
    pod_dir.mkdir()
    (pod_dir / "tmp").mkdir()
    run_inputs.materialise(configmap, pod_dir)
    chain = [t for t in tasks if t["name"].startswith("set-0001-")]
    _run_chain(workflow, chain, pod_dir, pvc)
    set_dir = pvc / "sweep-1" / "sets" / "0001"
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["parameter_values"] == {"theta": 1.3}
    assert json.loads((set_dir / render.RESULTS_FILE).read_text())["set_dir"] == "sets/0001"
    assert not (pvc / "sweep-1" / "sets" / "0000").exists()


def test_inputs_too_large_for_a_configmap_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import itertools

    labels = ["".join(p) for p in itertools.islice(itertools.product("IXYZ", repeat=12), 60000)]
    terms = [[label, 0.0012345] for label in labels]
    (tmp_path / "big.json").write_text(json.dumps([{"name": "h", "terms": terms}]))
    (tmp_path / "c.qasm").write_text(QASM4.replace("qubit[4]", "qubit[12]"))
    code = main(
        [
            "render",
            f"--circuit={tmp_path / 'c.qasm'}",
            "--partition=AAAAAABBBBBB",
            f"--observables-file={tmp_path / 'big.json'}",
            "--backends=cpu",
            "--estimate-only",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "above the 1008 KiB a ConfigMap holds (largest: observables.json" in err


PROFILE_NO_GPU = {
    "gpus": 0,
    "deviceClasses": ["qpu.quantum.example.com"],
    "qpus": ["apollo-cloud"],
    "localQueues": ["qubelet-cpu", "qubelet-gpu", "qubelet-qpu"],
}
#: The size rule gives this run's widest subexperiments to the GPU (when there is one).
GPU_RUN = ["--qubits=42", "--cuts=1", "--shots=64", "--policy=size", "--backends=cpu,gpu,qpu"]


def _render(argv: list[str], out: Path) -> dict[str, Any]:
    assert main(["render", *argv, "-o", str(out)]) == 0
    return _docs(out)[-1]


def test_no_cluster_facts_are_said_as_assumptions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workflow = _render(GPU_RUN, tmp_path / "wf.yaml")
    printed = capsys.readouterr().out
    assert "no --kubeconfig or --cluster-profile: assumed the cluster runs every requested backend" in printed
    assert "execute-gpu" in _templates(workflow)
    assert "estimate: " in printed and "shots" in printed and "QPU-seconds" in printed


def test_a_cluster_without_gpus_gets_no_gpu_step_and_is_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "cluster.yaml"
    profile.write_text(yaml.safe_dump(PROFILE_NO_GPU))
    workflow = _render([*GPU_RUN, f"--cluster-profile={profile}"], tmp_path / "wf.yaml")
    printed = capsys.readouterr().out
    assert (
        f"cluster: left out gpu: no node has nvidia.com/gpu capacity (--cluster-profile {profile})" in printed
    )
    assert "execute-gpu" not in _templates(workflow)
    assert not any("nvidia.com/gpu" in json.dumps(t) for t in workflow["spec"]["templates"])
    generate = _templates(workflow)["generate"]["container"]["args"]
    assert "--backends=cpu,qpu" in generate


def _cluster(server: fko.FakeKubeObjects, gpus: int, kueue: bool = True) -> None:
    server.put(
        "/api/v1/nodes",
        {"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "8", "nvidia.com/gpu": str(gpus)}}},
    )
    server.put(
        "/apis/resource.k8s.io/v1/deviceclasses",
        {"metadata": {"name": "qpu.quantum.example.com"}, "spec": {}},
    )
    server.put(
        "/apis/resource.k8s.io/v1/resourceslices",
        {
            "metadata": {"name": "s1"},
            "spec": {
                "driver": "qpu.quantum.example.com",
                "pool": {"name": "cloud", "generation": 1, "resourceSliceCount": 1},
                "allNodes": True,
                "devices": [{"name": "apollo-cloud-0", "attributes": {"qpu": {"string": "apollo-cloud"}}}],
            },
        },
    )
    if kueue:
        for name in ("qubelet-cpu", "qubelet-qpu"):
            server.put(
                f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{NS}/localqueues",
                {"metadata": {"name": name, "namespace": NS}},
            )


SERVED = [
    "/api/v1/nodes",
    "/apis/resource.k8s.io/v1/deviceclasses",
    "/apis/resource.k8s.io/v1/resourceslices",
    "/apis/kueue.x-k8s.io/v1beta2/namespaces/{ns}/localqueues",
    "/api/v1/namespaces/{ns}/configmaps",
    "/api/v1/namespaces/{ns}/pods",
    "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaimtemplates",
    "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims",
    "/apis/argoproj.io/v1alpha1/namespaces/{ns}/workflows",
]


def test_render_reads_the_cluster_through_kubeconfig(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with fko.serving(SERVED) as server:
        _cluster(server, gpus=0)
        kubeconfig = fko.kubeconfig(server, tmp_path / "kubeconfig")
        workflow = _render([*GPU_RUN, f"--kubeconfig={kubeconfig}"], tmp_path / "wf.yaml")
    printed = capsys.readouterr().out
    assert f"cluster: left out gpu: no node has nvidia.com/gpu capacity (kubeconfig {kubeconfig})" in printed
    assert "QPUs published: apollo-cloud" in printed
    assert "execute-gpu" not in _templates(workflow)
    assert "no Kueue LocalQueue" not in printed


def test_what_the_author_may_not_read_is_assumed_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A workflow author often may not list nodes (cluster-scoped): render keeps the GPU and says
    it assumed so, instead of failing or silently dropping it."""
    with fko.serving(SERVED) as server:
        _cluster(server, gpus=0)
        server.forbidden.add("/api/v1/nodes")
        server.put(
            f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{NS}/localqueues",
            {"metadata": {"name": "qubelet-gpu", "namespace": NS}},
        )
        kubeconfig = fko.kubeconfig(server, tmp_path / "kubeconfig")
        workflow = _render([*GPU_RUN, f"--kubeconfig={kubeconfig}"], tmp_path / "wf.yaml")
    printed = capsys.readouterr().out
    assert "cluster: could not read nodes (list nodes: 403 Forbidden" in printed
    assert "assumed they allow the requested backends" in printed
    assert "execute-gpu" in _templates(workflow)


def test_capabilities_fit_says_why_each_class_is_left_out() -> None:
    from pipeline.cluster.capabilities import ClusterCapabilities, fit

    caps = ClusterCapabilities(source="s", gpus=2, local_queues=("qubelet-cpu",), namespace="ns")
    result = fit(("cpu", "gpu", "qpu"), caps)
    assert result.kept == ("cpu",)
    assert result.left_out == {
        "gpu": "no Kueue LocalQueue qubelet-gpu in namespace ns",
        "qpu": "no DeviceClass qpu.quantum.example.com (s)",
    }
    extended = fit(("qpu",), ClusterCapabilities(source="s", qpu_extended=1), qpu_request="extended-resource")
    assert extended.kept == ("qpu",) and "Kueue is not installed (s): steps are not queued" in extended.notes


def test_no_backend_left_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "cluster.yaml"
    profile.write_text(yaml.safe_dump({"gpus": 0}))
    assert main(["render", "--backends=gpu", f"--cluster-profile={profile}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qubelet: error: no backend of --backends gpu runs on this cluster: gpu: no node")
    profile.write_text(yaml.safe_dump({"gpu": 1}))
    assert main(["render", "--backends=cpu", f"--cluster-profile={profile}"]) == 2
    assert "unknown key 'gpu'" in capsys.readouterr().err


def test_task_execute_on_an_unavailable_backend_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.backends.factory import available_backends

    if not available_backends(("gpu",))[1]:
        pytest.skip("this machine has a GPU: the GPU backend is available")
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "task",
                "generate",
                f"--run-dir={run_dir}",
                "--qubits=4",
                "--cuts=1",
                "--shots=16",
                "--backends=gpu",
            ]
        )
        == 0
    )
    plan = json.loads((run_dir / "plan.json").read_text())
    batch = plan["batches"][0]["id"]
    capsys.readouterr()
    assert main(["task", "execute", f"--run-dir={run_dir}", f"--batch={batch}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("qubelet: error: ") and "CUDA" in err


# --- runs list|get|logs|cancel|fetch --------------------------------------------------------------


def _pod(
    workflow: str, node: str, step: str, phase: str, gated: bool = False, claim: bool = False
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "i"}]}
    if gated:
        spec["schedulingGates"] = [{"name": "kueue.x-k8s.io/admission"}]
    if claim:
        spec["resourceClaims"] = [{"name": "qpu", "resourceClaimTemplateName": "qpu"}]
    status: dict[str, Any] = {"phase": phase}
    if claim:
        status["resourceClaimStatuses"] = [{"name": "qpu", "resourceClaimName": f"{node}-qpu"}]
    return {
        "metadata": {
            "name": f"{workflow}-{step}",
            "namespace": NS,
            "labels": {"workflows.argoproj.io/workflow": workflow, render.STEP_LABEL: step.split("-")[0]},
            "annotations": {"workflows.argoproj.io/node-name": f"{workflow}.{step}"},
        },
        "spec": spec,
        "status": status,
    }


def test_runs_verbs_on_workflow_objects(
    laptop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """submit creates the inputs ConfigMap (owned by the Workflow) and the Workflow; runs list/get
    show where each step stands; logs reads the pods; cancel sets spec.shutdown; fetch brings back
    what the reconstruct step published."""
    with fko.serving(SERVED) as server:
        _cluster(server, gpus=0)
        kubeconfig = str(fko.kubeconfig(server, tmp_path / "kubeconfig"))
        code = main(
            [
                "submit",
                f"--kubeconfig={kubeconfig}",
                f"--circuit={laptop / 'my4.qasm'}",
                "--partition=AABB",
                "--shots=64",
                "--backends=cpu",
                "--run-id=r-7",
                "--no-follow",
            ]
        )
        printed = capsys.readouterr().out
        assert code == 0, printed
        (wf,) = server.items(WORKFLOWS)
        name = wf["metadata"]["name"]
        assert f"follow it: qubelet runs get {name}" in printed
        (cm,) = server.items(f"/api/v1/namespaces/{NS}/configmaps")
        assert cm["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Workflow",
                "name": name,
                "uid": wf["metadata"]["uid"],
            }
        ]
        assert "laptop-only-dir" not in json.dumps(wf)

        # The step pods as Argo and Kueue leave them: generate done, one execute gated, one claiming.
        server.put(PODS, _pod(name, "n1", "generate", "Succeeded"))
        server.put(PODS, _pod(name, "n2", "execute-cpu-000", "Pending", gated=True))
        server.put(PODS, _pod(name, "n3", "execute-qpu-000", "Pending", claim=True))
        server.put(
            f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaims",
            {"metadata": {"name": "n3-qpu", "namespace": NS}, "spec": {"devices": {}}, "status": {}},
        )
        server.logs[(NS, f"{name}-generate")] = "I generated batches=2\n"
        server.put(WORKFLOWS, {**wf, "status": {"phase": "Running", "progress": "1/4"}})

        assert main(["runs", "list", f"--kubeconfig={kubeconfig}"]) == 0
        listed = capsys.readouterr().out
        assert name in listed and "Running" in listed and "r-7" in listed
        assert main(["runs", "get", name, f"--kubeconfig={kubeconfig}"]) == 0
        got = capsys.readouterr().out
        assert "generate" in got and "execution: done" in got
        assert "admission: waiting for Kueue admission" in got
        assert "claim: n3-qpu: waiting for allocation" in got
        assert main(["runs", "logs", name, "--step=generate", f"--kubeconfig={kubeconfig}"]) == 0
        assert "I generated batches=2" in capsys.readouterr().out

        assert main(["runs", "fetch", name, f"--kubeconfig={kubeconfig}", "-o", str(tmp_path / "f")]) == 2
        assert "has no published results yet: wait for it" in capsys.readouterr().err

        assert main(["runs", "cancel", name, f"--kubeconfig={kubeconfig}"]) == 0
        assert server.get(WORKFLOWS, name)["spec"]["shutdown"] == "Stop"
        assert main(["runs", "cancel", name, "--terminate", f"--kubeconfig={kubeconfig}"]) == 0
        assert server.get(WORKFLOWS, name)["spec"]["shutdown"] == "Terminate"
        assert main(["runs", "get", "nope", f"--kubeconfig={kubeconfig}"]) == 2
        assert "no run 'nope' in namespace qubelet-workloads" in capsys.readouterr().err

        # Run the steps as the pods would, then play Argo's controller: the reconstruct node's
        # output parameter is the file the step wrote (argo/results.json).
        docs = [cm, server.get(WORKFLOWS, name)]
        pod_dir, pvc = tmp_path / "pod", tmp_path / "pvc"
        pod_dir.mkdir()
        (pod_dir / "tmp").mkdir()
        run_inputs.materialise(docs[0], pod_dir)
        _run_chain(docs[1], _dag(docs[1]), pod_dir, pvc)
        published = (pvc / "r-7" / render.RESULTS_FILE).read_text()
        nodes = {
            f"{name}-1": {
                "templateName": "reconstruct",
                "outputs": {"parameters": [{"name": "results", "value": published}]},
            }
        }
        server.put(
            WORKFLOWS, {**server.get(WORKFLOWS, name), "status": {"phase": "Succeeded", "nodes": nodes}}
        )
        dest = tmp_path / "fetched"
        assert main(["runs", "fetch", name, f"--kubeconfig={kubeconfig}", "-o", str(dest)]) == 0
    assert json.loads((dest / "summary.json").read_text()) == json.loads(
        (pvc / "r-7" / "summary.json").read_text()
    )
    assert (dest / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "observable" in (dest / "table.txt").read_text()


# --- one name per QPU from laptop to cluster --------------------------------------------------------

INVENTORY = REPO / "manifests" / "examples" / "qpus.yaml"


def _laptop_model(path: Path) -> Path:
    """A model fitted on laptop telemetry: the embedded fake Apollo is ``qpu:apollo`` there."""
    from policy.models import PolicyModel

    rows = [
        {
            "run_id": f"r{i % 3}", "backend": "qpu:apollo", "backend_kind": "qpu", "model": "Apollo",
            "num_qubits": 3, "depth": 12, "num_2q_gates": 3, "num_clbits": 3, "shots": 256,
            "run_seconds": 0.8, "queue_wait_seconds": 40.0, "success": True,
        }
        for i in range(12)
    ]  # fmt: skip
    PolicyModel(rows).save(path)  # type: ignore[arg-type]
    return path


def test_inventory_maps_laptop_qpu_names_to_the_clusters() -> None:
    from qubelet.inventory import load_config
    from qubelet.inventory.aliases import local_qpu_name, telemetry_aliases

    assert local_qpu_name("fake:IQMFakeApollo") == "apollo"
    assert telemetry_aliases(load_config(INVENTORY)) == {
        "qpu:adonis": "qpu:adonis-onprem",
        "qpu:apollo": "qpu:apollo-cloud",
    }


def test_policy_explain_inventory_shows_what_the_laptop_learned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _laptop_model(tmp_path / "model.json")
    argv = ["policy", "explain", f"--model={model}", f"--inventory={INVENTORY}", "--qubits=3", "--depth=12"]
    assert main([*argv, "--two-qubit-gates=3", "--shots=256"]) == 0
    out = capsys.readouterr().out
    assert "names: qpu:apollo (this laptop) is qpu:apollo-cloud" in out
    apollo = next(line for line in out.splitlines() if line.startswith("qpu:apollo-cloud"))
    assert "name=qpu:apollo-cloud (12 rows)" in apollo and " 40 " in f" {apollo.split()[2]} "


def test_render_inventory_plans_the_clusters_qpus_and_generate_agrees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _laptop_model(tmp_path / "model.json")
    out = tmp_path / "wf.yaml"
    argv = [
        "render", "--qubits=6", "--cuts=1", "--shots=64", "--policy=size", "--backends=cpu,qpu",
        f"--policy-model={model}", f"--inventory={INVENTORY}", "--run-id=names-1", "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "names: qpu:apollo (the model's) is qpu:apollo-cloud" in capsys.readouterr().out
    docs = _docs(out)
    workflow, configmap = docs[-1], next(d for d in docs if d["kind"] == "ConfigMap")
    shipped = json.loads(configmap["data"][run_inputs.POLICY_MODEL])
    assert {row["backend"] for row in shipped["rows"]} == {"qpu:apollo-cloud"}
    batches = [t["arguments"]["parameters"][0]["value"] for t in _dag(workflow) if "arguments" in t]
    assert batches and all("apollo-cloud" in b or "adonis-onprem" in b for b in batches), batches
    # The cluster's generate step, from a clean dir, plans the same batches (it fails otherwise).
    pod_dir, pvc = tmp_path / "pod", tmp_path / "pvc"
    pod_dir.mkdir()
    (pod_dir / "tmp").mkdir()
    run_inputs.materialise(configmap, pod_dir)
    _run_chain(workflow, _dag(workflow)[:1], pod_dir, pvc)
    plan = json.loads((pvc / "names-1" / "plan.json").read_text())
    assert sorted(b["id"] for b in plan["batches"]) == sorted(batches)


def test_submit_watch_shows_each_step_through_admission_claim_and_execution(
    laptop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``submit --watch`` prints the run's phase and every step's stage as they change; the test
    plays Kueue (gate removed), the scheduler (claim allocated) and Argo (phases)."""
    import threading
    import time

    with fko.serving(SERVED) as server:
        _cluster(server, gpus=0)
        kubeconfig = str(fko.kubeconfig(server, tmp_path / "kubeconfig"))

        def cluster_side() -> None:
            while not server.items(WORKFLOWS):
                time.sleep(0.05)
            name = server.items(WORKFLOWS)[0]["metadata"]["name"]
            claims = f"/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaims"
            server.put(claims, {"metadata": {"name": "n3-qpu", "namespace": NS}, "spec": {"devices": {}}})
            qpu_step = "execute-qpu-000"
            allocated = {
                "devices": {
                    "results": [
                        {
                            "request": "qpu",
                            "driver": "qpu.quantum.example.com",
                            "pool": "cloud",
                            "device": "apollo-cloud-0",
                        }
                    ]
                }
            }
            done = {"phase": "Succeeded", "progress": "3/3"}
            steps = [
                lambda: server.put(PODS, _pod(name, "n3", qpu_step, "Pending", gated=True, claim=True)),
                lambda: server.put(PODS, _pod(name, "n3", qpu_step, "Pending", claim=True)),
                lambda: server.put(
                    claims,
                    {
                        "metadata": {"name": "n3-qpu", "namespace": NS},
                        "spec": {"devices": {}},
                        "status": {"allocation": allocated},
                    },
                ),
                lambda: server.put(PODS, _pod(name, "n3", qpu_step, "Running", claim=True)),
                lambda: server.put(WORKFLOWS, {**server.get(WORKFLOWS, name), "status": done}),
            ]
            for step in steps:
                time.sleep(2.5)
                step()

        player = threading.Thread(target=cluster_side, daemon=True)
        player.start()
        code = main(
            [
                "submit",
                f"--kubeconfig={kubeconfig}",
                f"--circuit={laptop / 'my4.qasm'}",
                "--partition=AABB",
                "--shots=64",
                "--backends=cpu",
                "--watch",
                "--timeout=60",
            ]
        )
        player.join(timeout=30)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "admission: waiting for Kueue admission" in out
    assert "claim: n3-qpu: waiting for allocation" in out
    assert "execution: running (n3-qpu: allocated cloud/apollo-cloud-0)" in out
    assert ": Succeeded 3/3" in out and "results: qubelet runs fetch" in out


def test_inventory_qpus_the_cluster_does_not_publish_are_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "cluster.yaml"
    profile.write_text(yaml.safe_dump(PROFILE_NO_GPU))  # publishes apollo-cloud only
    out = tmp_path / "wf.yaml"
    argv = [
        "render", "--qubits=6", "--cuts=1", "--shots=64", "--policy=size", "--backends=cpu,qpu",
        f"--inventory={INVENTORY}", f"--cluster-profile={profile}", "--run-id=pub-1", "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    assert (
        f"cluster: left out QPU adonis-onprem: no ResourceSlice publishes it (--cluster-profile {profile})"
        in (capsys.readouterr().out)
    )
    docs = _docs(out)
    workflow, configmap = docs[-1], next(d for d in docs if d["kind"] == "ConfigMap")
    shipped = yaml.safe_load(configmap["data"][run_inputs.INVENTORY])
    assert [q["name"] for q in shipped["qpus"]] == ["apollo-cloud"]
    batches = [t["arguments"]["parameters"][0]["value"] for t in _dag(workflow) if "arguments" in t]
    assert batches and not any("adonis" in b for b in batches), batches
    pod_dir, pvc = tmp_path / "pod", tmp_path / "pvc"
    (pod_dir / "tmp").mkdir(parents=True)
    run_inputs.materialise(configmap, pod_dir)
    _run_chain(workflow, _dag(workflow)[:1], pod_dir, pvc)
    plan = json.loads((pvc / "pub-1" / "plan.json").read_text())
    assert sorted(b["id"] for b in plan["batches"]) == sorted(batches)


def test_fetch_of_a_sweep_writes_each_set(tmp_path: Path) -> None:
    """Each set's reconstruct node publishes its results; fetch lays them out as sets/NNNN."""
    from pipeline.cluster import runs

    def node(index: int) -> dict[str, Any]:
        value = {
            "set_dir": f"sets/{index:04d}",
            "summary": {"set": index},
            "table": f"t{index}\n",
            "timeline_png": "",
        }
        return {
            "templateName": "reconstruct",
            "outputs": {"parameters": [{"name": "results", "value": json.dumps(value)}]},
        }

    wf = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "sweep-x", "namespace": NS, "labels": dict(render.PART_OF)},
        "spec": {"templates": []},
        "status": {"phase": "Succeeded", "nodes": {"a": node(0), "b": node(1)}},
    }
    with fko.serving(SERVED) as server:
        server.put(WORKFLOWS, wf)
        written = runs.fetch(fko.api_client(server), NS, "sweep-x", tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "sets/0000/summary.json",
        "sets/0000/table.txt",
        "sets/0001/summary.json",
        "sets/0001/table.txt",
    ]
    assert json.loads((tmp_path / "sets/0001/summary.json").read_text()) == {"set": 1}
