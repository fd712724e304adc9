"""What the API server checks before it stores an object, for the API doubles (no server here).

Two layers, as in kube-apiserver:

1. The OpenAPI schema of the kind for Kubernetes 1.34 (kubernetes-validate, strict: unknown
   fields and wrong types are rejected, as server-side field validation ``Strict`` does).
2. The hand-written validation of ``pkg/apis/resource/validation`` for ResourceSlices that no
   schema expresses: at most 128 devices per slice (64 when a device has taints), device names
   are DNS labels and unique, at most 32 attributes+capacities per device, attribute names are
   C identifiers (optionally ``<domain>/``-qualified, 32 characters at most), exactly one value
   per attribute, string values of at most 64 bytes, exactly one of ``nodeName``,
   ``nodeSelector``, ``allNodes`` (``perDeviceNodeSelection`` is not used by this driver),
   a node selector with exactly one term, a pool with ``resourceSliceCount > 0`` and
   ``generation >= 0``, and ``driver``/``pool.name``/``nodeName`` immutable on update.

Errors read like the API server's: ``ResourceSlice.resource.k8s.io "<name>" is invalid:
<field>: <type>: <detail>`` (several in ``[...]``), status 422 with reason ``Invalid``, raised as
the :class:`qubelet.errors.ApiError` that ``qubelet.kube`` makes of the client's ApiException.
"""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate

from qubelet.errors import ApiError

K8S_VERSION = "1.34"

#: Limits from k8s.io/api/resource/v1 (types.go).
RESOURCE_SLICE_MAX_DEVICES = 128
RESOURCE_SLICE_MAX_DEVICES_WITH_TAINTS = 64
MAX_ATTRIBUTES_AND_CAPACITIES_PER_DEVICE = 32
DEVICE_MAX_ID_LENGTH = 32
DEVICE_MAX_DOMAIN_LENGTH = 63
DEVICE_ATTRIBUTE_MAX_VALUE_LENGTH = 64

_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_EXACTLY_ONE = "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` is required"


def _q(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)


def _invalid(path: str, value: Any, detail: str) -> str:
    return f"{path}: Invalid value: {_q(value)}: {detail}"


def _c_identifier(name: str, path: str) -> list[str]:
    errs = []
    if len(name) > DEVICE_MAX_ID_LENGTH:
        errs.append(f"{path}: Too long: may not be more than {DEVICE_MAX_ID_LENGTH} bytes")
    if not _C_IDENTIFIER.match(name):
        errs.append(
            _invalid(
                path,
                name,
                "a valid C identifier must start with alphabetic character or '_', followed by a "
                "string of alphanumeric characters or '_' (e.g. 'my_name',  or 'MY_NAME',  or "
                "'MyName', regex used for validation is '[A-Za-z_][A-Za-z0-9_]*')",
            )
        )
    return errs


def _dns_subdomain(name: str, path: str, max_length: int = 253) -> list[str]:
    errs = []
    if len(name) > max_length:
        errs.append(f"{path}: Too long: may not be more than {max_length} bytes")
    if not _DNS1123_SUBDOMAIN.match(name):
        errs.append(
            _invalid(
                path,
                name,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character",
            )
        )
    return errs


def _qualified_name(name: str, path: str) -> list[str]:
    if not name:
        return [f"{path}: Required value: name required"]
    parts = name.split("/")
    if len(parts) == 1:
        return _c_identifier(parts[0], path)
    errs = []
    domain, ident = parts[0], "/".join(parts[1:])
    if not domain:
        errs.append(f"{path}: Required value: the domain must not be empty")
    else:
        errs.extend(_dns_subdomain(domain, path, DEVICE_MAX_DOMAIN_LENGTH))
    if not ident:
        errs.append(f"{path}: Required value: the name must not be empty")
    else:
        errs.extend(_c_identifier(ident, path))
    return errs


def _attribute(attr: dict[str, Any], path: str) -> list[str]:
    errs = []
    values = [k for k in ("bool", "int", "string", "version") if attr.get(k) is not None]
    if not values:
        errs.append(f"{path}: Required value: exactly one value must be specified")
    elif len(values) > 1:
        errs.append(_invalid(path, attr, "exactly one value must be specified"))
    for kind in ("string", "version"):
        text = attr.get(kind)
        if isinstance(text, str) and len(text.encode()) > DEVICE_ATTRIBUTE_MAX_VALUE_LENGTH:
            errs.append(
                f"{path}.{kind}: Too long: may not be more than {DEVICE_ATTRIBUTE_MAX_VALUE_LENGTH} bytes"
            )
    return errs


def _device(device: dict[str, Any], path: str) -> list[str]:
    errs = []
    name = device.get("name") or ""
    if not _DNS1123_LABEL.match(name) or len(name) > 63:
        errs.append(
            _invalid(
                f"{path}.name",
                name,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
                "'-', and must start and end with an alphanumeric character",
            )
        )
    attrs = device.get("attributes") or {}
    capacity = device.get("capacity") or {}
    total = len(attrs) + len(capacity)
    if total > MAX_ATTRIBUTES_AND_CAPACITIES_PER_DEVICE:
        errs.append(
            _invalid(
                path,
                total,
                "the total number of attributes and capacities must not exceed "
                f"{MAX_ATTRIBUTES_AND_CAPACITIES_PER_DEVICE}",
            )
        )
    for key, attr in attrs.items():
        errs.extend(_qualified_name(key, f"{path}.attributes[{key}]"))
        errs.extend(_attribute(attr or {}, f"{path}.attributes[{key}]"))
    for key in capacity:
        errs.extend(_qualified_name(key, f"{path}.capacity[{key}]"))
    return errs


def resource_slice_errors(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """The API server's ResourceSlice validation errors for ``obj`` (``old`` on update)."""
    errs: list[str] = []
    spec = obj.get("spec") or {}
    errs.extend(_dns_subdomain(spec.get("driver") or "", "spec.driver", 63))
    pool = spec.get("pool") or {}
    pool_name = pool.get("name") or ""
    if not pool_name:
        errs.append("spec.pool.name: Required value")
    for part in pool_name.split("/") if pool_name else []:
        errs.extend(_dns_subdomain(part, "spec.pool.name"))
    if (pool.get("resourceSliceCount") or 0) <= 0:
        errs.append(
            _invalid(
                "spec.pool.resourceSliceCount", pool.get("resourceSliceCount"), "must be greater than zero"
            )
        )
    if (pool.get("generation") or 0) < 0:
        errs.append(
            _invalid("spec.pool.generation", pool.get("generation"), "must be greater than or equal to zero")
        )
    if old is not None:
        old_spec = old.get("spec") or {}
        for field, now, before in (
            ("spec.pool.name", pool_name, (old_spec.get("pool") or {}).get("name")),
            ("spec.driver", spec.get("driver"), old_spec.get("driver")),
            ("spec.nodeName", spec.get("nodeName"), old_spec.get("nodeName")),
        ):
            if now != before:
                errs.append(_invalid(field, now, "field is immutable"))

    set_fields = []
    node_name = spec.get("nodeName")
    if node_name is not None:
        if node_name:
            set_fields.append("`nodeName`")
            errs.extend(_dns_subdomain(node_name, "spec.nodeName"))
        else:
            errs.append(
                _invalid("spec.nodeName", node_name, "must be either unset or set to a non-empty string")
            )
    selector = spec.get("nodeSelector")
    if selector is not None:
        set_fields.append("`nodeSelector`")
        terms = selector.get("nodeSelectorTerms") or []
        if len(terms) != 1:
            errs.append(
                _invalid(
                    "spec.nodeSelector.nodeSelectorTerms", terms, "must have exactly one node selector term"
                )
            )
    all_nodes = spec.get("allNodes")
    if all_nodes is not None:
        if all_nodes:
            set_fields.append("`allNodes`")
        else:
            errs.append(_invalid("spec.allNodes", all_nodes, "must be either unset or set to true"))
    if spec.get("perDeviceNodeSelection"):
        set_fields.append("`perDeviceNodeSelection`")
    if not set_fields:
        errs.append(f"spec: Required value: {_EXACTLY_ONE}")
    elif len(set_fields) > 1:
        errs.append(
            _invalid(
                "spec", "{" + ", ".join(set_fields) + "}", f"{_EXACTLY_ONE}, but multiple fields are set"
            )
        )

    devices = spec.get("devices") or []
    tainted = any(d.get("taints") for d in devices)
    limit = RESOURCE_SLICE_MAX_DEVICES_WITH_TAINTS if tainted else RESOURCE_SLICE_MAX_DEVICES
    if len(devices) > limit:
        errs.append(f"spec.devices: Too many: {len(devices)}: must have at most {limit} items")
    seen: set[str] = set()
    for index, device in enumerate(devices):
        path = f"spec.devices[{index}]"
        if device.get("name") in seen:
            errs.append(f"{path}: Duplicate value: {_q(device.get('name'))}")
        seen.add(device.get("name"))
        errs.extend(_device(device, path))
    return errs


def status_body(message: str) -> str:
    """The ``Status`` document kube-apiserver sends with a 422 (what an HTTP double serves)."""
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": "Invalid",
            "code": 422,
        }
    )


def invalid(kind: str, name: str, errors: list[str]) -> ApiError:
    """The 422 the API server answers, as qubelet.kube translates it (status 422, reason Invalid).

    The message is the server's: ``<Kind>.<group> "<name>" is invalid: <errors>``.
    """
    detail = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    return ApiError(f'{kind} "{name}" is invalid: {detail}', status=422, reason="Invalid")


def validate(data: dict[str, Any], old: dict[str, Any] | None = None) -> None:
    """Raise the API server's 422 for an invalid object in JSON form; return when it would store it."""
    kind = data.get("kind") or "?"
    group = (data.get("apiVersion") or "").rpartition("/")[0]
    qualified = f"{kind}.{group}" if group else kind
    name = (data.get("metadata") or {}).get("name") or ""
    try:
        kubernetes_validate.validate(data, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "<root>"
        raise invalid(qualified, name, [f"{where}: Invalid value: {exc.message}"]) from None
    if kind == "ResourceSlice":
        errors = resource_slice_errors(data, old)
        if errors:
            raise invalid(qualified, name, errors)
