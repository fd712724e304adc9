"""``qubelet runs list|get|logs|cancel|fetch``: a cluster run after ``submit``, without the argo CLI.

Everything goes through the Kubernetes API with the ``kubernetes`` client: Argo Workflows are
custom objects, their steps are pods (Argo labels each with ``workflows.argoproj.io/workflow``
and annotates its DAG node name), QPU claims are ResourceClaims.

- **list / get** read the Workflow's phase and progress, and per step pod where it stands:
  waiting for Kueue admission (the ``kueue.x-k8s.io/admission`` scheduling gate), waiting for
  its ResourceClaim's allocation (and which QPU it got), running, done.
- **logs** read the step pods' ``main`` container logs.
- **cancel** is Argo's own ``argo stop`` / ``argo terminate``: a merge patch of
  ``spec.shutdown`` (``Stop`` lets exit handlers run; ``Terminate`` does not). Argo's controller
  then stops the pods; qubelet's steps cancel their QPU jobs on SIGTERM.
- **fetch** reads the results the reconstruct step published as its Argo output parameter
  ``results`` (summary, table, timeline; :func:`pipeline.cluster.tasks.write_results`): Argo's
  executor reports it through a WorkflowTaskResult and the controller copies it into
  ``status.nodes[*].outputs``, so no PVC access, exec or extra RBAC is needed on the laptop.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.cluster.render import PART_OF, RUN_ID_ANNOTATION, STEP_LABEL, SWEEP_SETS_ANNOTATION
from pipeline.cluster.submit import DONE_PHASES, GROUP, PLURAL, VERSION, SubmitError
from qubelet.errors import ApiError, NotFound, UsageError
from qubelet.kube import api_errors

WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
NODE_NAME_ANNOTATION = "workflows.argoproj.io/node-name"
KUEUE_GATE = "kueue.x-k8s.io/admission"
#: The reconstruct step's Argo output parameter carrying the results (tasks.RESULTS_FILE).
RESULTS_PARAMETER = "results"
SHUTDOWN = {"stop": "Stop", "terminate": "Terminate"}


@dataclass(frozen=True)
class StepStatus:
    """Where one step pod stands, in the words ``get`` and ``--watch`` print."""

    step: str
    pod: str
    phase: str
    stage: str  #: admission, claim or execution: the part of the journey it is in
    detail: str

    def line(self) -> str:
        """``step  phase  stage: detail``."""
        return f"{self.step:<32} {self.phase:<10} {self.stage}: {self.detail}"


def _custom(api_client: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api_client)


def _fail(exc: ApiError) -> UsageError:
    return UsageError(str(exc))


def list_runs(api_client: Any, namespace: str) -> list[dict[str, Any]]:
    """The qubelet Workflows in ``namespace``, newest first: name, phase, progress, run id, age."""
    selector = ",".join(f"{k}={v}" for k, v in PART_OF.items())
    try:
        with api_errors(f"list workflows in {namespace}"):
            listed = _custom(api_client).list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, label_selector=selector
            )
    except ApiError as exc:
        raise _fail(exc) from None
    rows = []
    for wf in listed.get("items", []):
        meta, status = wf.get("metadata", {}), wf.get("status") or {}
        rows.append(
            {
                "name": meta.get("name", ""),
                "phase": status.get("phase") or "Pending",
                "progress": status.get("progress", ""),
                "run_id": (meta.get("annotations") or {}).get(RUN_ID_ANNOTATION, ""),
                "created": meta.get("creationTimestamp", ""),
                "sets": (meta.get("annotations") or {}).get(SWEEP_SETS_ANNOTATION, ""),
            }
        )
    return sorted(rows, key=lambda r: r["created"], reverse=True)


def get_workflow(api_client: Any, namespace: str, name: str) -> dict[str, Any]:
    """The Workflow object (one-line error when it does not exist)."""
    try:
        with api_errors(f"Workflow {namespace}/{name}"):
            wf: dict[str, Any] = _custom(api_client).get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
    except NotFound:
        raise UsageError(
            f"no run {name!r} in namespace {namespace} (qubelet runs list -n {namespace})"
        ) from None
    except ApiError as exc:
        raise _fail(exc) from None
    return wf


def step_pods(api_client: Any, namespace: str, name: str) -> list[Any]:
    """The Workflow's step pods (Argo labels each with the Workflow's name), oldest first."""
    from kubernetes import client

    try:
        with api_errors(f"list pods of {namespace}/{name}"):
            pods = (
                client.CoreV1Api(api_client)
                .list_namespaced_pod(namespace, label_selector=f"{WORKFLOW_LABEL}={name}")
                .items
            )
    except ApiError as exc:
        raise _fail(exc) from None
    return sorted(pods, key=lambda p: (str(p.metadata.creation_timestamp or ""), p.metadata.name))


def _claim_detail(api_client: Any, namespace: str, pod: Any) -> str | None:
    """``waiting for allocation`` or ``allocated <device>`` for a pod's ResourceClaims, else None."""
    from kubernetes import client

    statuses = getattr(pod.status, "resource_claim_statuses", None) or []
    declared = getattr(pod.spec, "resource_claims", None) or []
    if not declared:
        return None
    if not statuses:
        return "claim not created yet"
    parts = []
    resource = client.ResourceV1Api(api_client)
    for status in statuses:
        claim_name = status.resource_claim_name
        if not claim_name:
            parts.append(f"{status.name}: not needed")
            continue
        try:
            with api_errors(f"ResourceClaim {namespace}/{claim_name}"):
                claim = resource.read_namespaced_resource_claim(claim_name, namespace)
        except ApiError:
            parts.append(f"{claim_name}: unreadable")
            continue
        allocation = claim.status.allocation if claim.status else None
        results = allocation.devices.results if allocation and allocation.devices else []
        if results:
            parts.append(f"{claim_name}: allocated " + ", ".join(f"{r.pool}/{r.device}" for r in results))
        else:
            parts.append(f"{claim_name}: waiting for allocation")
    return "; ".join(parts)


def step_status(api_client: Any, namespace: str, pod: Any) -> StepStatus:
    """One pod's place in the journey: Kueue admission, then claim allocation, then execution."""
    meta = pod.metadata
    step = (meta.annotations or {}).get(NODE_NAME_ANNOTATION, "") or (meta.labels or {}).get(STEP_LABEL, "")
    step = step.split(".", 1)[-1] if "." in step else step or meta.name
    phase = pod.status.phase if pod.status and pod.status.phase else "Pending"
    gates = [g.name for g in (pod.spec.scheduling_gates or [])]
    if KUEUE_GATE in gates:
        return StepStatus(step, meta.name, phase, "admission", "waiting for Kueue admission")
    claim = _claim_detail(api_client, namespace, pod)
    if phase == "Pending":
        if claim is not None and "allocated" not in claim:
            return StepStatus(step, meta.name, phase, "claim", claim)
        reason = _pending_reason(pod)
        return StepStatus(step, meta.name, phase, "execution", reason + (f" ({claim})" if claim else ""))
    detail = {"Running": "running", "Succeeded": "done", "Failed": "failed"}.get(phase, phase.lower())
    terminated = _terminated(pod)
    if terminated:
        detail += f": {terminated}"
    if claim:
        detail += f" ({claim})"
    return StepStatus(step, meta.name, phase, "execution", detail)


def _pending_reason(pod: Any) -> str:
    for condition in (pod.status.conditions if pod.status else None) or []:
        if condition.type == "PodScheduled" and condition.status != "True":
            return f"unschedulable: {condition.message or condition.reason}"
    if pod.spec.node_name:
        return f"admitted, starting on {pod.spec.node_name}"
    return "admitted, waiting for the scheduler"


def _terminated(pod: Any) -> str:
    for cs in (pod.status.container_statuses if pod.status else None) or []:
        state = cs.state.terminated if cs.state else None
        if state is not None and state.exit_code:
            return f"exit {state.exit_code} {state.reason or ''}".strip()
    return ""


def describe(api_client: Any, namespace: str, name: str) -> tuple[dict[str, Any], list[StepStatus]]:
    """The Workflow and its steps' statuses (for ``runs get`` and ``submit --watch``)."""
    wf = get_workflow(api_client, namespace, name)
    return wf, [step_status(api_client, namespace, pod) for pod in step_pods(api_client, namespace, name)]


def get_lines(wf: dict[str, Any], steps: list[StepStatus]) -> list[str]:
    """What ``runs get`` prints."""
    meta, status = wf["metadata"], wf.get("status") or {}
    annotations = meta.get("annotations") or {}
    lines = [
        f"name:      {meta['name']}",
        f"namespace: {meta.get('namespace', '')}",
        f"run id:    {annotations.get(RUN_ID_ANNOTATION, '')}",
        f"phase:     {status.get('phase') or 'Pending'} {status.get('progress', '')}".rstrip(),
    ]
    if status.get("message"):
        lines.append(f"message:   {status['message']}")
    if (wf.get("spec") or {}).get("shutdown"):
        lines.append(f"shutdown:  {wf['spec']['shutdown']}")
    dag = [t for t in wf.get("spec", {}).get("templates", []) if t.get("name") == "main"]
    planned = len(dag[0]["dag"]["tasks"]) if dag and "dag" in dag[0] else 0
    lines.append(f"steps:     {len(steps)} pods of {planned} DAG tasks")
    lines.extend("  " + s.line() for s in steps)
    return lines


def logs(api_client: Any, namespace: str, name: str, step: str | None = None) -> Iterator[tuple[str, str]]:
    """(step, log text) of every step pod's ``main`` container (or only ``step``'s)."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    found = False
    for pod in step_pods(api_client, namespace, name):
        status = step_status(api_client, namespace, pod)
        if step is not None and status.step != step:
            continue
        found = True
        try:
            with api_errors(f"logs of pod {namespace}/{pod.metadata.name}"):
                text = core.read_namespaced_pod_log(pod.metadata.name, namespace, container="main")
        except ApiError as exc:
            text = f"(no logs: {exc})"
        yield status.step, str(text)
    if step is not None and not found:
        raise UsageError(f"run {name}: no pod for step {step!r} (qubelet runs get {name})")


def cancel(api_client: Any, namespace: str, name: str, terminate: bool = False) -> str:
    """Stop (or terminate) the run as ``argo stop``/``argo terminate`` do: set ``spec.shutdown``."""
    get_workflow(api_client, namespace, name)  # a one-line error for a wrong name
    value = SHUTDOWN["terminate" if terminate else "stop"]
    try:
        with api_errors(f"Workflow {namespace}/{name}"):
            _custom(api_client).patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"spec": {"shutdown": value}},
                _content_type="application/merge-patch+json",
            )
    except ApiError as exc:
        raise _fail(exc) from None
    return value


def results_of(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The published results in a Workflow's status, by run directory (``.`` or ``sets/NNNN``)."""
    out: dict[str, dict[str, Any]] = {}
    for node in ((wf.get("status") or {}).get("nodes") or {}).values():
        for param in ((node.get("outputs") or {}).get("parameters")) or []:
            if param.get("name") != RESULTS_PARAMETER or not param.get("value"):
                continue
            try:
                data = json.loads(param["value"])
            except ValueError:
                continue
            if isinstance(data, dict):
                out[str(data.get("set_dir") or ".")] = data
    return out


def fetch(api_client: Any, namespace: str, name: str, dest: Path) -> list[Path]:
    """Write the run's summary.json, table.txt and timeline.png under ``dest``; return the files."""
    wf = get_workflow(api_client, namespace, name)
    published = results_of(wf)
    phase = (wf.get("status") or {}).get("phase") or "Pending"
    if not published:
        raise UsageError(
            f"run {name} ({phase}) has no published results yet"
            + ("" if phase in DONE_PHASES else ": wait for it (qubelet runs get)")
        )
    written = []
    for set_dir, data in sorted(published.items()):
        target = dest if set_dir == "." else dest / set_dir
        target.mkdir(parents=True, exist_ok=True)
        (target / "summary.json").write_text(json.dumps(data["summary"], indent=1, sort_keys=True))
        written.append(target / "summary.json")
        if data.get("table"):
            (target / "table.txt").write_text(data["table"])
            written.append(target / "table.txt")
        if data.get("timeline_png"):
            (target / "timeline.png").write_bytes(base64.b64decode(data["timeline_png"]))
            written.append(target / "timeline.png")
    return written


def watch(
    api_client: Any,
    namespace: str,
    name: str,
    timeout_seconds: float = 6 * 3600,
    poll_seconds: float = 2.0,
    out: Callable[[str], None] = print,
) -> str:
    """Print every change of the run's phase and of each step's stage until it is done."""
    deadline = time.monotonic() + timeout_seconds
    seen: dict[str, str] = {}
    last_phase = ""
    while True:
        try:
            wf, steps = describe(api_client, namespace, name)
        except UsageError as exc:
            raise SubmitError(str(exc)) from None
        status = wf.get("status") or {}
        phase = status.get("phase") or "Pending"
        head = f"{name}: {phase} {status.get('progress', '')}".rstrip()
        if head != last_phase:
            last_phase = head
            out(head)
        for step in steps:
            key = f"{step.phase} {step.stage} {step.detail}"
            if seen.get(step.pod) != key:
                seen[step.pod] = key
                out("  " + step.line())
        if phase in DONE_PHASES:
            return str(phase)
        if time.monotonic() >= deadline:
            raise SubmitError(f"Workflow {namespace}/{name}: still {phase} after {timeout_seconds:.0f}s")
        time.sleep(poll_seconds)
