"""Scenario 2 (issue 19): qubelet's claims through the real resourceclaim controller and scheduler.

Claim templates come from ``qubelet render`` (ranked and single) or from the same code with a
fidelity floor (``pipeline.cluster.claims``); pods reference them by ``resourceClaimTemplateName``
so the controller-manager's resourceclaim controller generates each claim and kube-scheduler's
DRA plugin allocates it from the slices the daemons published (example inventory:
``adonis-onprem`` x2 bound to qpu-node-1, 2q fidelity 0.965; ``apollo-cloud`` x4, network
attached, 0.975). These pods carry no Kueue queue label: Kueue is not in the way here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TENANT, wait_for

from pipeline.cluster import claims
from qubelet.cli import main
from qubelet.inventory.names import DEVICE_CLASS_NAME, DRIVER_NAME

ATTRS = f'device.attributes["{DRIVER_NAME}"]'


@pytest.fixture
def ns(e2e_cluster: Any) -> Iterator[str]:
    name = f"alloc-{uuid.uuid4().hex[:6]}"
    e2e_cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": TENANT}})
    wait_for(lambda: e2e_cluster.kubectl("get", "serviceaccount", "default", "-n", name), 30, "default SA")
    yield name
    e2e_cluster.kubectl("delete", "namespace", name, "--wait=false")


def pod(name: str, ns: str, claim: dict[str, str], node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "resourceClaims": [{"name": "qpu", **claim}],
        "containers": [{"name": "main", "image": "busybox", "resources": {"claims": [{"name": "qpu"}]}}],
    }
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def allocation(
    e2e: Any, ns: str, pod_name: str, timeout: float = 60
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the bound pod, its claim's single allocation result)."""

    def bound() -> Any:
        p = e2e.kubectl_json("get", "pod", pod_name, "-n", ns)
        return p if p["spec"].get("nodeName") else None

    p = wait_for(bound, timeout, f"{ns}/{pod_name} bound")
    status = p["status"].get("resourceClaimStatuses")
    claim_name = (
        status[0]["resourceClaimName"] if status else p["spec"]["resourceClaims"][0]["resourceClaimName"]
    )
    claim = e2e.kubectl_json("get", "resourceclaim", claim_name, "-n", ns)
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    return p, result


def unschedulable(e2e: Any, ns: str, pod_name: str) -> dict[str, Any]:
    def cond() -> Any:
        p = e2e.kubectl_json("get", "pod", pod_name, "-n", ns)
        c = {c["type"]: c for c in p["status"].get("conditions", [])}.get("PodScheduled")
        return c if c and c["status"] == "False" and c.get("reason") == "Unschedulable" else None

    return wait_for(cond, 60, f"{ns}/{pod_name} reported unschedulable")


def template(name: str, ns: str, request: dict[str, Any]) -> dict[str, Any]:
    return claims.resource_claim_template(name, ns, request)


def wait_apollo_free(e2e: Any) -> None:
    """Earlier tests' claims are deallocated asynchronously after their pods go."""

    def free() -> bool:
        items = e2e.kubectl_json("get", "resourceclaims", "-A")["items"]
        return not any(
            r["device"].startswith("apollo-cloud")
            for c in items
            for r in ((c.get("status") or {}).get("allocation") or {}).get("devices", {}).get("results", [])
        )

    wait_for(free, 90, "every apollo-cloud replica to be free")


def test_rendered_ranked_and_single_templates_allocate_the_policys_pick(
    e2e_cluster: Any, ns: str, tmp_path: Path
) -> None:
    for mode in ("ranked", "single"):
        out = tmp_path / f"{mode}.yaml"
        argv = [
            "render",
            "--qubits=10",
            "--cuts=3",
            "--policy=size",
            f"--claim-choices={mode}",
            "--namespace",
            ns,
        ]
        assert main([*argv, "-o", str(out)]) == 0
        (rct,) = [
            d for d in yaml.safe_load_all(out.read_text()) if d and d["kind"] == "ResourceClaimTemplate"
        ]
        e2e_cluster.apply(rct)
        name = f"{mode}-step"
        e2e_cluster.apply(pod(name, ns, {"resourceClaimTemplateName": rct["metadata"]["name"]}))
        _, result = allocation(e2e_cluster, ns, name)
        # the resourceclaim controller generated the claim; the scheduler took the policy's pick
        assert result["device"].startswith("apollo-cloud-r"), result
        assert result["request"] == ("qpu/model-apollo" if mode == "ranked" else "qpu"), result


def test_cel_on_calibration_skips_a_model_below_the_fidelity_floor(e2e_cluster: Any, ns: str) -> None:
    # The policy ranked Adonis first, but its calibrated 2q fidelity (0.965) is below the floor.
    choices = [{"model": "Adonis", "backend": "qpu:adonis"}, {"model": "Apollo", "backend": "qpu:apollo"}]
    alts = claims.alternatives(choices, 5, 0.97)
    assert [a.name for a in alts] == ["model-adonis", "model-apollo", "any"]
    rct = claims.claim_template("floor-097", ns, alts, single=False)
    e2e_cluster.apply(rct)
    e2e_cluster.apply(pod("floor", ns, {"resourceClaimTemplateName": "floor-097"}))
    _, result = allocation(e2e_cluster, ns, "floor")
    assert result["request"] == "qpu/model-apollo" and result["device"].startswith("apollo-cloud-r"), result
    # no QPU at all meets 0.99: the claim is never allocated
    e2e_cluster.apply(
        claims.claim_template("floor-099", ns, claims.alternatives(choices, 5, 0.99), single=False)
    )
    e2e_cluster.apply(pod("floor-unmet", ns, {"resourceClaimTemplateName": "floor-099"}))
    unschedulable(e2e_cluster, ns, "floor-unmet")


def test_best_model_taken_falls_back_to_the_next_alternative_on_its_node(e2e_cluster: Any, ns: str) -> None:
    wait_apollo_free(e2e_cluster)
    blocker = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "all-apollo", "namespace": ns},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "qpu",
                        "exactly": {
                            "deviceClassName": DEVICE_CLASS_NAME,
                            "count": 4,
                            "selectors": [{"cel": {"expression": f'{ATTRS}.model == "Apollo"'}}],
                        },
                    }
                ]
            }
        },
    }
    e2e_cluster.apply(blocker, pod("holder", ns, {"resourceClaimName": "all-apollo"}))
    allocation_holder = wait_for(
        lambda: e2e_cluster.kubectl_json("get", "resourceclaim", "all-apollo", "-n", ns)["status"][
            "allocation"
        ],
        60,
        "all four Apollo replicas allocated",
    )
    assert len(allocation_holder["devices"]["results"]) == 4
    choices = [{"model": "Apollo", "backend": "qpu:apollo"}, {"model": "Adonis", "backend": "qpu:adonis"}]
    e2e_cluster.apply(
        claims.claim_template("ranked", ns, claims.alternatives(choices, 5, None), single=False)
    )
    e2e_cluster.apply(pod("fallback", ns, {"resourceClaimTemplateName": "ranked"}))
    bound, result = allocation(e2e_cluster, ns, "fallback")
    assert result["request"] == "qpu/model-adonis" and result["device"].startswith("adonis-onprem-r"), result
    # the on-prem QPU is only in qpu-node-1's pool: the pod went where the QPU is cabled
    assert bound["spec"]["nodeName"] == "qpu-node-1"
    assert e2e_cluster.prepared(ns, "fallback")["claims"]["qpu"]["error"] == ""


def test_on_prem_qpu_only_on_its_bound_node(e2e_cluster: Any, ns: str) -> None:
    adonis = {"name": "qpu", "exactly": {"deviceClassName": DEVICE_CLASS_NAME, "selectors": [
        {"cel": {"expression": f'{ATTRS}.model == "Adonis"'}}]}}  # fmt: skip
    e2e_cluster.apply(template("adonis", ns, adonis))
    e2e_cluster.apply(pod("anywhere", ns, {"resourceClaimTemplateName": "adonis"}))
    bound, result = allocation(e2e_cluster, ns, "anywhere")
    assert bound["spec"]["nodeName"] == "qpu-node-1" and result["pool"] == "qpu-node-1", result
    e2e_cluster.apply(pod("elsewhere", ns, {"resourceClaimTemplateName": "adonis"}, node="cpu-node-1"))
    cond = unschedulable(e2e_cluster, ns, "elsewhere")
    assert "cannot allocate all claims" in cond["message"] or "resourceclaim" in cond["message"].lower(), cond
