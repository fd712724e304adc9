"""Scenario 4 (issue 19): the default render and the WorkflowTemplate under the real Kueue.

The cluster runs Kueue with the project's fragment merged into its Configuration and the DRA
overlay applied as docs/cluster-guide.md says (hack/cluster.py); the step pods are built from
the rendered templates as Argo's controller would (tests/e2e/argo_pods.py).

- Defect 1: every QPU step pod of the default ``qubelet render`` output is gated by Kueue,
  admitted with ``quantum.example.com/qpu`` charged through ``deviceClassMappings`` (the
  admission check ``qubelet`` Ready), un-gated, then allocated and bound by the scheduler. The
  ranked form (``firstAvailable``) is what Kueue refuses: its Workload is Inadmissible and the
  pod stays gated (the default before the fix).
- Defect 5: the overlay ships the admission-check controller; the cluster runs exactly the
  command the overlay's Deployment runs (hack/cluster.py ``shipped_process``), so work is
  admitted only because applying the overlay brings that controller. A check nobody serves
  keeps its ClusterQueue inactive (Kueue's rule, shown on a second queue).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import yaml
from argo_pods import step_pod
from conftest import wait_for

from qubelet.cli import main
from qubelet.inventory.names import MIN_FIDELITY_ANNOTATION

NS = "qubelet-workloads"
GATE = "kueue.x-k8s.io/admission"
QPU = "quantum.example.com/qpu"


def render(tmp_path: Path, *flags: str) -> list[dict[str, Any]]:
    out = tmp_path / f"render-{uuid.uuid4().hex[:6]}.yaml"
    argv = ["render", "--qubits=10", "--cuts=3", "--policy=size", "--shots=1024", *flags, "-o", str(out)]
    assert main(argv) == 0
    return [d for d in yaml.safe_load_all(out.read_text()) if d]


def qpu_step_pods(docs: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """One pod per QPU DAG task of the rendered Workflow, as Argo would create them."""
    workflow = docs[-1]
    workflow["metadata"]["name"] = prefix
    templates = {t["name"]: t for t in workflow["spec"]["templates"]}
    dag = templates["main"]["dag"]["tasks"]
    pods = []
    for task in dag:
        template = templates[task["template"]]
        if (template.get("metadata") or {}).get("labels", {}).get(
            "kueue.x-k8s.io/queue-name"
        ) != "qubelet-qpu":
            continue
        batch = task["arguments"]["parameters"][0]["value"]
        pods.append(step_pod(workflow, task["template"], f"{prefix}-{task['name']}", {"batch": batch}))
    assert pods, "the rendered run has no QPU step"
    return pods


def workload_for(e2e: Any, pod_name: str) -> dict[str, Any] | None:
    pod = e2e.kubectl_json("get", "pod", pod_name, "-n", NS)
    for wl in e2e.kubectl_json("get", "workloads.kueue.x-k8s.io", "-n", NS)["items"]:
        if any(o["uid"] == pod["metadata"]["uid"] for o in wl["metadata"].get("ownerReferences", [])):
            return wl
    return None


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def create(e2e: Any, *objects: dict[str, Any]) -> None:
    e2e.kubectl("create", "-f", "-", input=yaml.safe_dump_all(objects))


def create_one(e2e: Any, obj: dict[str, Any]) -> dict[str, Any]:
    """Create ``obj``; returns the object as stored (after the mutating webhooks)."""
    return json.loads(e2e.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(obj)))


def delete_pods(e2e: Any, pods: list[dict[str, Any]]) -> None:
    names = [p["metadata"]["name"] for p in pods]
    e2e.kubectl("delete", "pod", "-n", NS, "--wait=false", "--ignore-not-found", *names)


def test_default_render_qpu_steps_gated_admitted_charged_ungated_and_bound(
    e2e_cluster: Any, tmp_path: Path
) -> None:
    docs = render(tmp_path)
    templates = [d for d in docs if d["kind"] == "ResourceClaimTemplate"]
    assert templates, "the size policy puts the 5-qubit subexperiments on the QPU"
    e2e_cluster.apply(*templates)
    pods = qpu_step_pods(docs, f"k1-{uuid.uuid4().hex[:4]}")
    try:
        created = {p["metadata"]["name"]: create_one(e2e_cluster, p) for p in pods}
        for pod in pods:
            name = pod["metadata"]["name"]
            # The object as the API server stored it: Kueue's pod webhook gated it at creation.
            assert {"name": GATE} in created[name]["spec"]["schedulingGates"], created[name]["spec"]
            assert created[name]["metadata"]["labels"].get("kueue.x-k8s.io/managed") == "true"

            def admitted(name: str = name) -> Any:
                wl = workload_for(e2e_cluster, name)
                return wl if wl and conditions(wl).get("Admitted", {}).get("status") == "True" else None

            wl = wait_for(admitted, 90, f"Kueue to admit {name}")
            (assignment,) = wl["status"]["admission"]["podSetAssignments"]
            assert assignment["flavors"][QPU] == "qpu", assignment
            assert assignment["resourceUsage"][QPU] == "1", assignment
            checks = {c["name"]: c for c in wl["status"]["admissionChecks"]}
            assert checks["qubelet"]["state"] == "Ready", checks

            def bound(name: str = name) -> Any:
                p = e2e_cluster.kubectl_json("get", "pod", name, "-n", NS)
                return p if p["spec"].get("nodeName") and not p["spec"].get("schedulingGates") else None

            bound_pod = wait_for(bound, 60, f"{name} un-gated and bound")
            claim_name = bound_pod["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
            claim = e2e_cluster.kubectl_json("get", "resourceclaim", claim_name, "-n", NS)
            (result,) = claim["status"]["allocation"]["devices"]["results"]
            assert result["request"] == "qpu"
            record = e2e_cluster.prepared(NS, name)
            assert record["claims"]["qpu"]["error"] == ""

        def charged() -> dict[str, Any] | None:
            # Kueue writes the ClusterQueue's usage asynchronously: wait for the last admission
            queue = e2e_cluster.kubectl_json("get", "clusterqueue", "qubelet")
            usage = {
                r["name"]: r["total"]
                for f in queue["status"].get("flavorsUsage", [])
                if f["name"] == "qpu"
                for r in f["resources"]
            }
            return queue if usage.get(QPU) == str(len(pods)) else None

        wait_for(charged, 30, f"ClusterQueue qubelet charged {len(pods)} {QPU}")
    finally:
        delete_pods(e2e_cluster, pods)


def test_ranked_claim_is_what_kueue_refuses(e2e_cluster: Any, tmp_path: Path) -> None:
    """The pre-fix default: firstAvailable alternatives make the Workload Inadmissible forever."""
    docs = render(tmp_path, "--claim-choices=ranked")
    e2e_cluster.apply(*[d for d in docs if d["kind"] == "ResourceClaimTemplate"])
    pod = qpu_step_pods(docs, f"k2-{uuid.uuid4().hex[:4]}")[0]
    name = pod["metadata"]["name"]
    try:
        create(e2e_cluster, pod)

        def refused() -> Any:
            wl = workload_for(e2e_cluster, name)
            cond = conditions(wl).get("QuotaReserved") if wl else None
            return cond if cond and cond["reason"] == "Inadmissible" else None

        cond = wait_for(refused, 60, "Kueue to mark the ranked step Inadmissible")
        assert "FirstAvailable device selection is not supported" in cond["message"], cond
        live = e2e_cluster.kubectl_json("get", "pod", name, "-n", NS)
        assert any(g["name"] == GATE for g in live["spec"]["schedulingGates"])
        assert not live["spec"].get("nodeName")
    finally:
        delete_pods(e2e_cluster, [pod])


def test_a_check_nobody_serves_keeps_its_cluster_queue_inactive(e2e_cluster: Any) -> None:
    """Why the overlay must ship the controller: Kueue's rule, on a queue of its own."""
    suffix = uuid.uuid4().hex[:6]
    check = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "AdmissionCheck",
        "metadata": {"name": f"unserved-{suffix}"},
        "spec": {"controllerName": "example.com/nobody"},
    }
    queue = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ClusterQueue",
        "metadata": {"name": f"unserved-{suffix}"},
        "spec": {
            "namespaceSelector": {},
            "admissionChecksStrategy": {"admissionChecks": [{"name": f"unserved-{suffix}"}]},
            "resourceGroups": [
                {
                    "coveredResources": ["cpu"],
                    "flavors": [{"name": "cpu", "resources": [{"name": "cpu", "nominalQuota": 1}]}],
                }
            ],
        },
    }
    try:
        create(e2e_cluster, check, queue)

        def inactive() -> Any:
            cond = conditions(e2e_cluster.kubectl_json("get", "clusterqueue", queue["metadata"]["name"])).get(
                "Active"
            )
            return cond if cond and cond["status"] == "False" else None

        cond = wait_for(inactive, 30, "Kueue to report the queue inactive")
        assert "AdmissionCheck" in cond["reason"] or "admission check" in cond["message"].lower(), cond
        served = conditions(e2e_cluster.kubectl_json("get", "clusterqueue", "qubelet"))["Active"]
        assert served["status"] == "True", served
    finally:
        e2e_cluster.kubectl("delete", "clusterqueue", queue["metadata"]["name"], "--ignore-not-found")
        e2e_cluster.kubectl("delete", "admissioncheck", check["metadata"]["name"], "--ignore-not-found")


def test_workflow_template_steps_are_admitted_as_applied_by_the_overlay(e2e_cluster: Any) -> None:
    """The WorkflowTemplate the overlay applied: its QPU step (shared ``qpu`` claim template) and a
    CPU step are admitted and bound; only the QPU one waits for the check and is charged a QPU."""
    template = e2e_cluster.kubectl_json("get", "workflowtemplate", "qubelet-cutting", "-n", NS)
    template["metadata"]["name"] = f"k4-{uuid.uuid4().hex[:4]}"
    run = {"name": "run-id", "value": "e2e-wt"}
    template["spec"]["arguments"]["parameters"].append(run)
    pods = [
        step_pod(template, "execute-qpu", f"{template['metadata']['name']}-qpu", {"batch": "qpu-000"}),
        step_pod(template, "execute-cpu", f"{template['metadata']['name']}-cpu", {"batch": "cpu-000"}),
    ]
    try:
        for pod in pods:
            created = create_one(e2e_cluster, pod)
            assert {"name": GATE} in created["spec"]["schedulingGates"]
        for pod, kind in zip(pods, ("qpu", "cpu"), strict=True):
            name = pod["metadata"]["name"]

            def admitted(name: str = name) -> Any:
                wl = workload_for(e2e_cluster, name)
                return wl if wl and conditions(wl).get("Admitted", {}).get("status") == "True" else None

            wl = wait_for(admitted, 90, f"Kueue to admit {name}")
            (assignment,) = wl["status"]["admission"]["podSetAssignments"]
            if kind == "qpu":
                assert assignment["resourceUsage"][QPU] == "1"
                assert {c["name"]: c["state"] for c in wl["status"]["admissionChecks"]} == {
                    "qubelet": "Ready"
                }
            else:
                assert QPU not in assignment["resourceUsage"] and assignment["flavors"]["cpu"] == "cpu"
                assert not wl["status"].get("admissionChecks")
            wait_for(
                lambda name=name: e2e_cluster.kubectl_json("get", "pod", name, "-n", NS)["spec"].get(
                    "nodeName"
                ),
                60,
                f"{name} bound",
            )
    finally:
        delete_pods(e2e_cluster, pods)


def test_a_step_pods_fidelity_floor_is_enforced_by_the_check(e2e_cluster: Any, tmp_path: Path) -> None:
    """Kueue's pod integration copies only the pod spec into the Workload; the check reads the
    step pod's ``min-fidelity-2q`` annotation from the owner pod. 0.9999 is above every QPU's
    calibration: the check says Rejected (the overlay's Deployment runs ``--reject-unmeetable``;
    Retry without it) and the pod is never un-gated or bound; a meetable floor is admitted."""
    (deployment,) = [
        d
        for d in yaml.safe_load_all(Path("manifests/admission-check/deployment.yaml").read_text())
        if d and d["kind"] == "Deployment"
    ]
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    expected = "Rejected" if "--reject-unmeetable" in command else "Retry"
    docs = render(tmp_path)
    e2e_cluster.apply(*[d for d in docs if d["kind"] == "ResourceClaimTemplate"])
    unmeetable, meetable = qpu_step_pods(docs, f"k9-{uuid.uuid4().hex[:4]}")[:2]
    unmeetable["metadata"].setdefault("annotations", {})[MIN_FIDELITY_ANNOTATION] = "0.9999"
    meetable["metadata"].setdefault("annotations", {})[MIN_FIDELITY_ANNOTATION] = "0.9"
    pods = [unmeetable, meetable]
    bad, good = unmeetable["metadata"]["name"], meetable["metadata"]["name"]
    try:
        bad_uid = create_one(e2e_cluster, unmeetable)["metadata"]["uid"]
        create_one(e2e_cluster, meetable)

        def verdict() -> Any:
            # Kueue deactivates a Rejected Workload and stops its gated pod, which garbage-collects
            # the Workload within a second: its Warning event (reason AdmissionCheckRejected,
            # carrying the check's message) outlives it, so the check's verdict is read from both.
            for wl in e2e_cluster.kubectl_json("get", "workloads.kueue.x-k8s.io", "-n", NS)["items"]:
                if any(o["uid"] == bad_uid for o in wl["metadata"].get("ownerReferences", [])):
                    checks = {c["name"]: c for c in (wl.get("status") or {}).get("admissionChecks", [])}
                    check = checks.get("qubelet") or {}
                    if check.get("state") == expected or f"Previously: {expected}" in check.get(
                        "message", ""
                    ):
                        return str(check.get("message", ""))
            for event in e2e_cluster.kubectl_json("get", "events", "-n", NS)["items"]:
                obj = event.get("involvedObject") or {}
                ours = obj.get("kind") == "Workload" and obj.get("name", "").startswith(f"pod-{bad}-")
                if ours and f"was {expected}" in event.get("message", ""):
                    return str(event["message"])
            return None

        seen = wait_for(verdict, 90, f"the check's {expected} for {bad} (floor 0.9999)")
        assert "2q fidelity >= 0.9999" in seen or seen.endswith(f"Previously: {expected}"), seen

        def admitted() -> Any:
            w = workload_for(e2e_cluster, good)
            return w if w and conditions(w).get("Admitted", {}).get("status") == "True" else None

        ok = wait_for(admitted, 90, f"Kueue to admit {good} (floor 0.9)")
        checks = {c["name"]: c for c in ok["status"]["admissionChecks"]}
        assert checks["qubelet"]["state"] == "Ready", checks
        assert "2q fidelity >= 0.9" in checks["qubelet"]["message"], checks
        out = e2e_cluster.kubectl("get", "pod", bad, "-n", NS, "-o", "json", "--ignore-not-found")
        # Kueue may stop (delete) a deactivated Workload's pod; it never un-gates or binds it.
        spec = json.loads(out)["spec"] if out.strip() else None
        assert spec is None or (
            {"name": GATE} in spec.get("schedulingGates", []) and not spec.get("nodeName")
        ), spec
    finally:
        delete_pods(e2e_cluster, pods)
