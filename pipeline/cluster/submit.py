"""Create a rendered Workflow through the Kubernetes API and follow it to the end.

Uses ``CustomObjectsApi`` (Argo's Workflow is a CRD) and ``ResourceV1Api`` for generated
ResourceClaimTemplates; no Argo client needed. The API objects passed in are those from
``pipeline.cluster.render``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from qubelet import klog
from qubelet.errors import ApiError, Conflict, QubeletError
from qubelet.kube import api_errors

log = klog.get_logger("qubelet.cluster.submit")

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "workflows"
DONE_PHASES = frozenset({"Succeeded", "Failed", "Error"})


class SubmitError(QubeletError):
    """The cluster refused the objects or the Workflow did not finish in time; one line."""


def create(
    api_client: Any,
    workflow: dict[str, Any],
    claim_templates: Sequence[dict[str, Any]] = (),
    dry_run: bool = False,
    configmaps: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Create the claim templates and inputs ConfigMaps (existing ones are kept), then the Workflow.

    ``dry_run`` asks the server to validate and admit without persisting (``dryRun=All``). The
    ConfigMaps get the Workflow as an owner, so deleting the Workflow (or its TTL) removes them.
    """
    from kubernetes import client

    namespace = workflow["metadata"]["namespace"]
    dry = "All" if dry_run else None
    core = client.CoreV1Api(api_client)
    for cm in configmaps:
        name = cm["metadata"]["name"]
        try:
            with api_errors(f"ConfigMap {namespace}/{name}"):
                core.create_namespaced_config_map(namespace, cm, dry_run=dry)
        except Conflict:
            pass  # kept: its name is its content's digest
        except ApiError as exc:
            raise SubmitError(str(exc)) from None
    resource_api = client.ResourceV1Api(api_client)
    for rct in claim_templates:
        name = rct["metadata"]["name"]
        try:
            with api_errors(f"ResourceClaimTemplate {namespace}/{name}"):
                resource_api.create_namespaced_resource_claim_template(namespace, rct, dry_run=dry)
        except Conflict:
            pass  # kept: a template's name is derived from its content
        except ApiError as exc:
            raise SubmitError(str(exc)) from None
    custom = client.CustomObjectsApi(api_client)
    try:
        with api_errors(f"Workflow in {namespace}"):
            created: dict[str, Any] = custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, workflow, dry_run=dry
            )
    except ApiError as exc:
        raise SubmitError(str(exc)) from None
    log.info("workflow created", namespace=namespace, name=created["metadata"].get("name"), dry_run=dry_run)
    uid = created["metadata"].get("uid")
    if not dry_run and uid:
        owner = {
            "apiVersion": workflow["apiVersion"],
            "kind": "Workflow",
            "name": created["metadata"]["name"],
            "uid": uid,
        }
        for cm in configmaps:
            name = cm["metadata"]["name"]
            try:
                with api_errors(f"ConfigMap {namespace}/{name}"):
                    core.patch_namespaced_config_map(
                        name,
                        namespace,
                        {"metadata": {"ownerReferences": [owner]}},
                        _content_type="application/strategic-merge-patch+json",  # merged by uid
                    )
            except ApiError as exc:  # the run is created: a ConfigMap left behind is only untidy
                log.warning("inputs not owned by the workflow", configmap=name, err=str(exc))
    return created


def follow(
    api_client: Any,
    namespace: str,
    name: str,
    timeout_seconds: float = 6 * 3600,
    poll_seconds: float = 5.0,
    on_change: Callable[[str, dict[str, Any]], None] | None = None,
) -> str:
    """Poll ``status.phase`` until the Workflow is done or the timeout passes; return the phase."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api_client)
    deadline = time.monotonic() + timeout_seconds
    last = ""
    while True:
        try:
            with api_errors(f"Workflow {namespace}/{name}"):
                obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiError as exc:
            raise SubmitError(str(exc)) from None
        status = obj.get("status") or {}
        phase = status.get("phase") or "Pending"
        progress = status.get("progress", "")
        key = f"{phase} {progress}"
        if key != last:
            last = key
            log.info("workflow", name=name, phase=phase, progress=progress)
            if on_change:
                on_change(phase, status)
        if phase in DONE_PHASES:
            return str(phase)
        if time.monotonic() >= deadline:
            raise SubmitError(f"Workflow {namespace}/{name}: still {phase} after {timeout_seconds:.0f}s")
        time.sleep(poll_seconds)
