"""ValidatingAdmissionPolicy evaluation for tests: the policy's own CEL, run by cel-python.

No API server runs here (until the e2e control plane does); this evaluates a policy as
kube-apiserver's admission plugin does, for one request: the binding's namespaceSelector
(``matchExpressions`` with In/NotIn/Exists/DoesNotExist, ``matchLabels``), the policy's
``matchConstraints.resourceRules`` (group, resource, operation), its ``matchConditions`` (all
true, else the policy does not apply), its ``variables`` in order (each may use the earlier
ones), then its ``validations``: the first false one denies with its ``messageExpression`` (or
``message``). What it cannot model: CEL optionals (``?``, ``orValue``) and typed schemas; the
manifests avoid the former so the same expressions run here and on the real server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import celpy


@dataclass(frozen=True)
class Request:
    """One admission request: who asks, what, where, and the objects involved."""

    username: str
    operation: str
    group: str
    resource: str
    namespace: str = ""
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None
    extra: dict[str, list[str]] | None = None
    namespace_labels: dict[str, str] | None = None


def _selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not ok:
            return False
    return True


def _rules_match(policy: dict[str, Any], req: Request) -> bool:
    for rule in policy["spec"]["matchConstraints"]["resourceRules"]:
        if (
            req.group in rule["apiGroups"]
            and req.resource in rule["resources"]
            and req.operation in rule["operations"]
        ):
            return True
    return False


class Policy:
    """A policy and its binding, compiled once."""

    def __init__(self, policy: dict[str, Any], binding: dict[str, Any]) -> None:
        assert binding["spec"]["policyName"] == policy["metadata"]["name"]
        self.policy = policy
        self.binding = binding
        self.env = celpy.Environment()
        spec = policy["spec"]
        self.conditions = [self._compile(c["expression"]) for c in spec.get("matchConditions", [])]
        self.variables = [(v["name"], self._compile(v["expression"])) for v in spec.get("variables", [])]
        self.validations = [
            (
                self._compile(v["expression"]),
                self._compile(v["messageExpression"]) if "messageExpression" in v else None,
                v.get("message", ""),
            )
            for v in spec["validations"]
        ]

    def _compile(self, text: str) -> Any:
        return self.env.program(self.env.compile(text))

    def admit(self, req: Request) -> str:
        """'' when admitted (or the policy does not apply), else the denial message."""
        selector = (self.binding["spec"].get("matchResources") or {}).get("namespaceSelector")
        if req.namespace and not _selector_matches(selector, req.namespace_labels or {}):
            return ""
        if not _rules_match(self.policy, req):
            return ""
        request = {
            "operation": req.operation,
            "namespace": req.namespace,
            "userInfo": {"username": req.username, "extra": req.extra or {}},
        }
        activation: dict[str, Any] = {
            "request": celpy.json_to_cel(request),
            "object": celpy.json_to_cel(req.object),
            "oldObject": celpy.json_to_cel(req.old_object),
        }
        if not all(bool(c.evaluate(activation)) for c in self.conditions):
            return ""
        variables: dict[str, Any] = {}
        for name, program in self.variables:
            activation["variables"] = celpy.celtypes.MapType(
                {celpy.celtypes.StringType(k): v for k, v in variables.items()}
            )
            variables[name] = program.evaluate(activation)
        activation["variables"] = celpy.celtypes.MapType(
            {celpy.celtypes.StringType(k): v for k, v in variables.items()}
        )
        for check, message_program, message in self.validations:
            result = check.evaluate(activation)
            if isinstance(result, Exception):
                raise result
            if not bool(result):
                return str(message_program.evaluate(activation)) if message_program else message.strip()
        return ""
