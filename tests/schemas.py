"""Test support: offline validation of qubelet's objects (core kinds via kubernetes-validate, CRs via CRDs).

Why: the render output and the manifests must be accepted by a real API server, and most test
machines have none. The CRD schemas are vendored (trimmed) in ``manifests/crds`` by
``manifests/crds/vendor_crds.py``. Validation is strict like ``kubectl --validate=strict``: an
unknown field anywhere the schema does not allow arbitrary keys is an error. CEL rules
(``x-kubernetes-validations``) cannot be evaluated here and are skipped.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

CRD_DIR = Path(__file__).resolve().parents[1] / "manifests" / "crds"
KUBERNETES_VERSION = "1.34"


class SchemaError(ValueError):
    """An object does not match the schema of its kind; the message names the object and field."""


def _strict(node: Any) -> Any:
    """Forbid unknown keys in every structural object schema, as strict field validation does."""
    if isinstance(node, dict):
        out = {key: _strict(value) for key, value in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(item) for item in node]
    return node


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    """The strict JSON schema of a vendored CRD kind, or None when not vendored."""
    group, _, version = api_version.rpartition("/")
    path = CRD_DIR / f"{group}_{version}_{kind}.json"
    if not path.is_file():
        return None
    schema = copy.deepcopy(json.loads(path.read_text())["openAPIV3Schema"])
    return _strict(schema)


def _where(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or "?"
    return f"{obj.get('kind', '?')}/{name}"


def validate_custom(obj: dict[str, Any]) -> None:
    """Validate a custom resource against its vendored CRD schema; raise SchemaError on failure."""
    import jsonschema

    schema = crd_schema(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    if schema is None:
        raise SchemaError(
            f"{_where(obj)}: no vendored CRD schema for {obj.get('apiVersion')} {obj.get('kind')}"
        )
    meta = obj.get("metadata") or {}
    if not (meta.get("name") or meta.get("generateName")):
        raise SchemaError(f"{_where(obj)}: metadata.name or metadata.generateName is required")
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in err.absolute_path) or "<root>"
        raise SchemaError(f"{_where(obj)}: {path}: {err.message[:300]} ({len(errors)} error(s))")


def validate_core(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Validate a built-in kind with the Kubernetes OpenAPI schemas, strict about unknown fields."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "<root>"
        raise SchemaError(f"{_where(obj)}: {path}: {exc.message[:300]}") from exc


def is_custom(obj: dict[str, Any]) -> bool:
    """Whether the object is a CR we validate from a vendored CRD (group has a dot, not k8s.io)."""
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def validate(obj: dict[str, Any]) -> None:
    """Validate any object we ship: custom resources by CRD, everything else by Kubernetes schema."""
    if is_custom(obj):
        validate_custom(obj)
    else:
        validate_core(obj)
