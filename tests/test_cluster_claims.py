"""QPU steps carry the policy's ranking: ``firstAvailable`` CEL alternatives on DRA attributes.

The rendered ResourceClaimTemplates and Workflow are checked against the Kubernetes 1.37 schema
and Argo's CRD; every CEL selector reads only attributes the DRA driver publishes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import schemas
import yaml

from dra_driver.slices import device_attributes, to_dict
from pipeline.cluster import claims, render
from pipeline.planning import Batch, batch_decisions
from policy.interface import BackendState, Decision
from qubelet.cli import main
from qubelet.inventory import parse_config
from qubelet.inventory.names import DEVICE_CLASS_NAME, DRIVER_NAME, MIN_FIDELITY_ANNOTATION

pytestmark = pytest.mark.timeout(180)
K8S = "1.37"

APOLLO = BackendState(name="qpu:apollo", kind="qpu", max_qubits=20, model="Apollo", fidelity_2q=0.995)
ADONIS = BackendState(name="qpu:adonis", kind="qpu", max_qubits=5, model="Adonis", fidelity_2q=0.97)
CRYSTAL = BackendState(name="qpu:crystal", kind="qpu", max_qubits=54, model="Crystal", fidelity_2q=0.996)


def _decision(key: str, backend: str) -> Decision:
    alternatives = {
        "cpu": {"seconds": 9.0, "error": 0.0, "wait": 0.0},
        "qpu:apollo": {"seconds": 0.1, "error": 0.2, "wait": 0.0},
        "qpu:crystal": {"seconds": 0.1, "error": 0.15, "wait": 30.0},
        "qpu:adonis": {"seconds": 0.1, "error": 0.3, "wait": 0.0},
    }
    return Decision(key, backend, "qpu", min_qubits=5, min_fidelity_2q=0.99, alternatives=alternatives)


def _batch() -> Batch:
    decisions = [_decision(f"k{i}", "qpu:apollo") for i in range(4)]
    (batch,) = batch_decisions(decisions, 64, {}, states=[APOLLO, ADONIS, CRYSTAL])
    return batch


def test_batch_ranks_the_policy_pick_first_then_by_predicted_finish_within_the_floor() -> None:
    batch = _batch()
    assert [c["backend"] for c in batch.choices] == ["qpu:apollo", "qpu:crystal"]  # adonis < floor
    assert batch.min_qubits == 5 and batch.min_fidelity_2q == 0.99


def test_ranked_claim_has_ordered_cel_alternatives_and_is_valid_kubernetes() -> None:
    batch = _batch()
    opts = render.RenderOptions(claim_choices="ranked")
    (template,) = render.claim_templates([batch], opts)
    schemas.validate_core(template, K8S)
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    assert request["name"] == "qpu" and "exactly" not in request
    subs = request["firstAvailable"]
    assert [s["name"] for s in subs] == ["model-apollo", "model-crystal", "any"]
    exprs = [s["selectors"][0]["cel"]["expression"] for s in subs]
    assert '.model == "Apollo"' in exprs[0] and '.model == "Crystal"' in exprs[1]
    assert "model" not in exprs[2]
    for expression in exprs:  # every alternative keeps the qubit and fidelity floor
        assert ".qubits >= 5" in expression and ".fidelity2qPpm >= 990000" in expression
    assert all(s["allocationMode"] == "ExactCount" and s["count"] == 1 for s in subs)

    workflow = render.build_workflow(render.RunArgs(), "r1", [batch], opts)
    schemas.validate(workflow)
    refs = [c for t in workflow["spec"]["templates"] for c in t.get("resourceClaims", [])]
    assert refs == [{"name": "qpu", "resourceClaimTemplateName": template["metadata"]["name"]}]
    # the admission check reads the floor from the step's pod annotation
    (step,) = [t for t in workflow["spec"]["templates"] if t.get("resourceClaims")]
    assert step["metadata"]["annotations"] == {MIN_FIDELITY_ANNOTATION: "0.99"}


def test_single_choice_for_clusters_without_prioritized_lists() -> None:
    (template,) = render.claim_templates([_batch()], render.RenderOptions(claim_choices="single"))
    schemas.validate_core(template, K8S)
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    assert "firstAvailable" not in request
    assert '== "Apollo"' in request["exactly"]["selectors"][0]["cel"]["expression"]


def test_selectors_read_only_attributes_the_driver_publishes() -> None:
    cfg = parse_config(
        {"version": "v1", "qpus": [{
            "name": "apollo", "vendor": "IQM", "model": "Apollo", "qubits": 20,
            "technology": "superconducting", "location": "onprem", "backend": "fake:IQMFakeApollo",
            "calibration": {"fidelity2q": 0.995, "readoutFidelity": 0.97, "time": 1_790_000_000},
        }]},
        "test",
    )  # fmt: skip
    published = set(device_attributes(cfg.qpus[0], True))
    alts = claims.alternatives(_batch().choices, 5, 0.99)
    used = {
        m for a in alts for m in re.findall(rf'attributes\["{re.escape(DRIVER_NAME)}"\]\.(\w+)', a.expression)
    }
    assert used and used <= published, used - published


def test_default_claim_is_one_device_of_the_class_kueue_admits() -> None:
    """Kueue (through v0.19) refuses firstAvailable and CEL selectors: the default asks neither.

    tests/e2e/test_kueue.py shows the real Kueue admitting this and refusing the ranked form.
    """
    batch = _batch()
    (template,) = render.claim_templates([batch], render.RenderOptions())
    schemas.validate_core(template, K8S)
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    assert request == {
        "name": "qpu",
        "exactly": {"deviceClassName": DEVICE_CLASS_NAME, "allocationMode": "ExactCount", "count": 1},
    }
    ranking = template["metadata"]["annotations"]["qubelet.quantum.example.com/ranking"]
    assert ranking.startswith("not enforced under Kueue") and "model-apollo" in ranking
    workflow = render.build_workflow(render.RunArgs(), "r1", [batch], render.RenderOptions())
    (step,) = [t for t in workflow["spec"]["templates"] if t.get("resourceClaims")]
    name = template["metadata"]["name"]
    assert step["resourceClaims"] == [{"name": "qpu", "resourceClaimTemplateName": name}]
    # the floor travels on the pod: the admission check enforces it before Kueue admits
    assert step["metadata"]["annotations"] == {MIN_FIDELITY_ANNOTATION: "0.99"}
    assert step["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "qubelet-qpu"


def test_render_cli_for_qpu_backends(tmp_path: Path) -> None:
    out = tmp_path / "wf.yaml"
    argv = ["render", "--qubits=6", "--cuts=1", "--shots=64", "--backends=qpu", "--claim-choices=ranked"]
    argv += ["-o", str(out)]
    assert main(argv) == 0
    docs: list[dict[str, Any]] = list(yaml.safe_load_all(out.read_text()))
    templates = [d for d in docs if d["kind"] == "ResourceClaimTemplate"]
    assert templates and docs[-1]["kind"] == "Workflow"
    for doc in templates:
        schemas.validate_core(doc, K8S)
        (request,) = doc["spec"]["spec"]["devices"]["requests"]
        assert len(request["firstAvailable"]) >= 2
    schemas.validate(docs[-1])
    names = {t["metadata"]["name"] for t in templates}
    qpu_steps = [t for t in docs[-1]["spec"]["templates"] if t.get("resourceClaims")]
    assert (
        qpu_steps
        and {c["resourceClaimTemplateName"] for t in qpu_steps for c in t["resourceClaims"]} <= names
    )


def _device(model: str, qubits: int, fidelity_2q: float | None) -> dict[str, Any]:
    """A device's attributes as CEL sees them, built by the DRA driver's own attribute code."""
    entry: dict[str, Any] = {
        "name": model.lower(), "vendor": "IQM", "model": model, "qubits": qubits,
        "technology": "superconducting", "location": "onprem", "backend": "fake:IQMFakeApollo",
    }  # fmt: skip
    if fidelity_2q is not None:
        entry["calibration"] = {"fidelity2q": fidelity_2q, "readoutFidelity": 0.97}
    (qpu,) = parse_config({"version": "v1", "qpus": [entry]}, "test").qpus
    attrs = {
        name: next(iter(to_dict(value).values())) for name, value in device_attributes(qpu, True).items()
    }
    return {"attributes": {DRIVER_NAME: attrs}}


def test_the_scheduler_would_take_the_first_alternative_a_device_satisfies() -> None:
    """Evaluate the rendered CEL (cel-python) on devices described by the driver's attributes."""
    import celpy

    env = celpy.Environment()
    alts = claims.alternatives(_batch().choices, 5, 0.99)
    programs = [env.program(env.compile(a.expression)) for a in alts]

    def first_match(device: dict[str, Any]) -> int | None:
        activation = {"device": celpy.json_to_cel(device)}
        return next((i for i, p in enumerate(programs) if bool(p.evaluate(activation))), None)

    assert first_match(_device("Apollo", 20, 0.995)) == 0  # the policy's pick
    assert first_match(_device("Crystal", 54, 0.996)) == 1  # its second choice
    assert first_match(_device("Garnet", 20, 0.999)) == 2  # any other QPU above the floor
    assert first_match(_device("Apollo", 20, 0.98)) is None  # drifted below the budget's floor
    assert first_match(_device("Adonis", 4, 0.999)) is None  # too small
    assert first_match(_device("Apollo", 20, None)) is None  # no calibration: not an error, no match


def test_subrequest_names_are_unique_dns_labels_whatever_the_model_names() -> None:
    """Issue 19 (6): "Apollo" and "apollo" both became ``model-apollo``; a cut could end in ``-``."""
    models = ["Apollo", "apollo", "APOLLO!", "x" * 39 + " tail", "Crystal 54"]
    choices = [{"model": m, "backend": f"qpu:{i}"} for i, m in enumerate(models)]
    alts = claims.alternatives(choices, 5, 0.99)
    names = [a.name for a in alts]
    assert len(set(names)) == len(names) == len(models) + 1
    label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    assert all(label.match(n) and len(n) <= 63 for n in names), names
    assert names[0] == "model-apollo" and names[-1] == "any"
    again = [a.name for a in claims.alternatives(choices, 5, 0.99)]
    assert again == names  # deterministic: the same ranking renders the same template
