"""The policy's ranking of QPUs as a ResourceClaimTemplate the scheduler enforces.

A QPU batch's claim has one request, ``qpu``, whose ``firstAvailable`` list (resource.k8s.io/v1
prioritized alternatives) holds the policy's choices best first; the scheduler allocates the
first sub-request it can satisfy, so it falls back in the policy's order and never to a device
outside it. Each sub-request is a CEL selector on the DRA driver's device attributes
(``docs/dra-driver.md``):

1. one per QPU model the policy ranked (``qpu_choices`` in ``pipeline/planning.py``), e.g.
   ``model == "Apollo" && qubits >= 20 && fidelity2qPpm >= 975000`` (each ``has()``-guarded);
2. then any QPU with at least the batch's qubits and two-qubit fidelity floor (the floor is the
   weakest fidelity that keeps every member within the error budget).

Every alternative keeps the fidelity floor, so a fallback can cost time but never the error
budget. Every attribute test is guarded by ``has(…)``, so a device that lacks the attribute
fails the selector instead of erroring the allocation. With ``single=True`` (clusters
without the DRAPrioritizedList feature) the claim asks ``exactly`` for the best choice only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qubelet.inventory.names import DEVICE_CLASS_NAME, DRIVER_NAME

#: Most sub-requests a request may list (resource.k8s.io/v1 FirstAvailableDeviceRequestMaxSize).
MAX_ALTERNATIVES = 8
REQUEST_NAME = "qpu"


@dataclass(frozen=True)
class Alternative:
    """One ranked choice: a sub-request name and its CEL selector."""

    name: str
    expression: str
    why: str


def _test(name: str, comparison: str) -> str:
    """``has(attr) && attr <comparison>`` on one of the driver's attributes."""
    attr = f'device.attributes["{DRIVER_NAME}"].{name}'
    return f"has({attr}) && {attr} {comparison}"


def _floor(min_qubits: int | None, min_fidelity_2q: float | None) -> list[str]:
    terms = []
    if min_qubits:
        terms.append(_test("qubits", f">= {int(min_qubits)}"))
    if min_fidelity_2q is not None:
        terms.append(_test("fidelity2qPpm", f">= {round(min_fidelity_2q * 1_000_000)}"))
    return terms


def _dns_label(text: str) -> str:
    """At most 40 characters of ``text`` as a DNS label part (cut first, so no trailing ``-``)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower())[:40].strip("-") or "x"


def _subrequest_name(model: str, taken: set[str]) -> str:
    """``model-<label>``, unique among ``taken``.

    Models that differ only in case or punctuation ("Apollo", "apollo") get a suffix from a
    hash of the exact name, so names stay deterministic.
    """
    name = f"model-{_dns_label(model)}"
    if name in taken:
        name = f"{name}-{hashlib.sha256(model.encode()).hexdigest()[:6]}"
    index = 2
    base = name
    while name in taken:
        name = f"{base}-{index}"
        index += 1
    return name


def alternatives(
    choices: Sequence[dict[str, Any]], min_qubits: int | None, min_fidelity_2q: float | None
) -> list[Alternative]:
    """The ranked sub-requests: one per model the policy ranked, then any QPU above the floor."""
    floor = _floor(min_qubits, min_fidelity_2q)
    out: list[Alternative] = []
    seen: set[str] = set()
    names: set[str] = {"any"}
    for choice in choices:
        model = str(choice.get("model") or "")
        if not model or model in seen or len(out) >= MAX_ALTERNATIVES - 1:
            continue
        seen.add(model)
        named = _test("model", f"== {json.dumps(model)}")
        why = f"policy's choice {choice.get('backend')}"
        name = _subrequest_name(model, names)
        names.add(name)
        out.append(Alternative(name, " && ".join([named, *floor]), why))
    generic = " && ".join(floor) or "true"
    floor_text = f"at least {min_qubits or 1} qubits" + (
        f" and 2q fidelity >= {min_fidelity_2q:g}" if min_fidelity_2q is not None else ""
    )
    out.append(Alternative("any", generic, f"any QPU with {floor_text}"))
    return out


def template_name(alts: Sequence[Alternative], single: bool) -> str:
    """A deterministic name: the same ranking renders (and reuses) the same template."""
    digest = hashlib.sha256(
        json.dumps([[a.name, a.expression] for a in alts] + [single]).encode()
    ).hexdigest()[:8]
    return f"qpu-{alts[0].name}-{digest}"[:63]


def _subrequest(alt: Alternative) -> dict[str, Any]:
    return {
        "name": alt.name,
        "deviceClassName": DEVICE_CLASS_NAME,
        "selectors": [{"cel": {"expression": alt.expression}}],
        "allocationMode": "ExactCount",
        "count": 1,
    }


def claim_template(name: str, namespace: str, alts: Sequence[Alternative], single: bool) -> dict[str, Any]:
    """The ResourceClaimTemplate: ``firstAvailable`` over ``alts``, or ``exactly`` the first one."""
    if single:
        request: dict[str, Any] = {"name": REQUEST_NAME, "exactly": _subrequest(alts[0])}
        del request["exactly"]["name"]
    else:
        request = {"name": REQUEST_NAME, "firstAvailable": [_subrequest(a) for a in alts]}
    ranking = "; ".join(f"{a.name}: {a.why}" for a in alts)
    return resource_claim_template(name, namespace, request, {"qubelet.quantum.example.com/ranking": ranking})


def resource_claim_template(
    name: str, namespace: str, request: dict[str, Any], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A ``resource.k8s.io/v1`` ResourceClaimTemplate holding one device ``request``."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/part-of": "qubelet"},
    }
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": metadata,
        "spec": {"spec": {"devices": {"requests": [request]}}},
    }


def kueue_template_name(alts: Sequence[Alternative]) -> str:
    """The Kueue-mode template's name: deterministic per ranking, distinct from the ranked one's."""
    key = json.dumps(["kueue", [[a.name, a.expression] for a in alts]])
    return f"qpu-kueue-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def kueue_claim_template(name: str, namespace: str, alts: Sequence[Alternative]) -> dict[str, Any]:
    """A claim Kueue admits: ``exactly`` one device of the class, no selectors, the ranking as a note.

    Kueue (v0.17 through v0.19) marks a Workload inadmissible when a claim request uses
    ``firstAvailable`` or CEL ``selectors`` (``pkg/dra/claims.go``: "FirstAvailable device
    selection is not supported", "CEL selectors are not supported"), so a Kueue-managed step
    may only ask for a count of the DeviceClass it maps in ``deviceClassMappings``. The policy's
    ranking stays on the template as the annotation ``qubelet.quantum.example.com/ranking``
    (marked not enforced); the fidelity floor is enforced before admission by the admission
    check, from the step pod's ``min-fidelity-2q`` annotation (read from the Workload's owner
    pod: Kueue v0.17's pod integration copies only the pod's spec into the Workload).
    """
    request = {
        "name": REQUEST_NAME,
        "exactly": {"deviceClassName": DEVICE_CLASS_NAME, "allocationMode": "ExactCount", "count": 1},
    }
    ranking = "not enforced under Kueue (any device of the class); " + "; ".join(
        f"{a.name}: {a.why}" for a in alts
    )
    return resource_claim_template(name, namespace, request, {"qubelet.quantum.example.com/ranking": ranking})
