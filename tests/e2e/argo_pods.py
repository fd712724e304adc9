"""The pod Argo's workflow-controller creates for one step of a Workflow (a double of that one step).

Argo Workflows is not built or run by the e2e suite (docs/cluster-guide.md, "Tested against":
its controller is a large build of its own, and the suite's budget goes to Kubernetes and
Kueue). What qubelet depends on is the pod Argo makes from a template, so this builds that pod
the way ``workflow/controller/workflowpod.go`` (v3.6/v4.x) does for a container template:

- metadata: the Workflow's ``podMetadata`` merged with the template's ``metadata`` (labels and
  annotations, the template winning), plus Argo's own labels/annotations;
- spec: ``restartPolicy: Never``, the Workflow's ``serviceAccountName``, ``securityContext``
  and ``volumes`` plus the template's, the template's ``container`` as ``main`` with its
  parameters substituted, and the template's typed ``resourceClaims`` (Argo >= v4.1) as the
  pod's; a ``podSpecPatch`` (older Argo) is applied as a strategic merge (containers by name).

It leaves out Argo's ``init``/``wait`` executor containers: they hold no claim and ask for
little; Kueue counts the pod's requests, so the quota charged here is the main container's.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any


def _substitute(value: Any, params: dict[str, str]) -> Any:
    if isinstance(value, str):
        return re.sub(r"\{\{\s*([\w.-]+)\s*\}\}", lambda m: params.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_substitute(v, params) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, params) for k, v in value.items()}
    return value


def _merge_by_name(base: list[dict[str, Any]], patch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [copy.deepcopy(b) for b in base]
    for item in patch:
        target = next((o for o in out if o.get("name") == item.get("name")), None)
        if target is None:
            out.append(copy.deepcopy(item))
        else:
            for key, val in item.items():
                if isinstance(val, dict) and isinstance(target.get(key), dict):
                    target[key] = {**target[key], **val}
                else:
                    target[key] = copy.deepcopy(val)
    return out


def step_pod(
    workflow: dict[str, Any], template_name: str, pod_name: str, inputs: dict[str, str] | None = None
) -> dict[str, Any]:
    """The Pod for ``template_name`` of ``workflow`` (a Workflow or WorkflowTemplate object)."""
    spec = workflow["spec"]
    template = next(t for t in spec["templates"] if t["name"] == template_name)
    params = {
        f"workflow.parameters.{p['name']}": str(p.get("value", "")) for p in spec["arguments"]["parameters"]
    }
    params.update({f"inputs.parameters.{k}": v for k, v in (inputs or {}).items()})
    params["workflow.name"] = workflow["metadata"].get("name") or "wf"
    pod_meta = spec.get("podMetadata") or {}
    tmpl_meta = template.get("metadata") or {}
    labels = {
        **(pod_meta.get("labels") or {}),
        **(tmpl_meta.get("labels") or {}),
        "workflows.argoproj.io/workflow": params["workflow.name"],
        "workflows.argoproj.io/completed": "false",
    }
    annotations = {
        **(pod_meta.get("annotations") or {}),
        **(tmpl_meta.get("annotations") or {}),
        "workflows.argoproj.io/node-name": f"{params['workflow.name']}.{template_name}",
    }
    container = _substitute(copy.deepcopy(template["container"]), params)
    container["name"] = "main"
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": template.get("serviceAccountName") or spec.get("serviceAccountName"),
        "containers": [container],
        "volumes": [*copy.deepcopy(spec.get("volumes") or []), *copy.deepcopy(template.get("volumes") or [])],
    }
    if spec.get("securityContext"):
        pod_spec["securityContext"] = copy.deepcopy(spec["securityContext"])
    if template.get("resourceClaims"):
        pod_spec["resourceClaims"] = copy.deepcopy(template["resourceClaims"])
    if template.get("podSpecPatch"):
        patch = json.loads(_substitute(template["podSpecPatch"], params))
        for key, val in patch.items():
            if key == "containers":
                pod_spec["containers"] = _merge_by_name(pod_spec["containers"], val)
            elif isinstance(val, list) and isinstance(pod_spec.get(key), list):
                pod_spec[key] = _merge_by_name(pod_spec[key], val)
            else:
                pod_spec[key] = val
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": workflow["metadata"]["namespace"],
            "labels": labels,
            "annotations": annotations,
        },
        "spec": pod_spec,
    }
