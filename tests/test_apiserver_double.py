"""The API double rejects what kube-apiserver 1.34 rejects, with the same reason.

Each case breaks one rule of ResourceSlice validation (or the OpenAPI schema) on an otherwise
valid slice built by the driver, and checks the 422 and the message the real server gives.
The last tests pin the scheduler's view: only a complete pool at its newest generation counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from doubles.apiserver_validation import RESOURCE_SLICE_MAX_DEVICES, validate
from doubles.fake_resource_api import FakeResourceAPI

from dra_driver.devices import devices_for
from dra_driver.slices import build_pool, device_model, to_dict
from qubelet.errors import ApiError
from qubelet.inventory import parse_config

QPU = parse_config(
    {
        "version": "v1",
        "qpus": [
            {
                "name": "adonis",
                "vendor": "IQM",
                "model": "Adonis",
                "qubits": 5,
                "technology": "superconducting",
                "location": "onprem",
                "backend": "fake:IQMFakeAdonis",
                "replicas": 130,
            }
        ],
    }
).qpus[0]


def slice_dict(n: int = 2, **where: Any) -> dict[str, Any]:
    """A valid node slice (JSON form) with ``n`` devices."""
    devices = [device_model(d, True, "remove") for d in devices_for(QPU, "node-a")[:n]]
    where = where or {"node_name": "node-a"}
    return to_dict(build_pool("node-a", devices, "test", **where)[0])  # type: ignore[no-any-return]


def rejected(data: dict[str, Any], old: dict[str, Any] | None = None) -> str:
    with pytest.raises(ApiError) as info:
        validate(data, old)
    assert (info.value.status, info.value.reason) == (422, "Invalid")
    return str(info.value)


def test_valid_slices_pass() -> None:
    validate(slice_dict())
    validate(slice_dict(node_selector={"qpu": "adonis"}))
    validate(slice_dict(RESOURCE_SLICE_MAX_DEVICES))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value

    return apply


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "two-node-fields",
        _set("spec.allNodes", True),
        'spec: Invalid value: "{`nodeName`, `allNodes`}": exactly one of `nodeName`, `nodeSelector`, '
        "`allNodes`, `perDeviceNodeSelection` is required, but multiple fields are set",
    ),
    (
        "no-node-field",
        lambda d: d["spec"].pop("nodeName"),
        "spec: Required value: exactly one of `nodeName`, `nodeSelector`, `allNodes`, "
        "`perDeviceNodeSelection` is required",
    ),
    (
        "all-nodes-false",
        _set("spec.allNodes", False),
        "spec.allNodes: Invalid value: False: must be either unset",
    ),
    (
        "attribute-name",
        lambda d: d["spec"]["devices"][0]["attributes"].update({"readout-fidelity": {"string": "0.9"}}),
        'spec.devices[0].attributes[readout-fidelity]: Invalid value: "readout-fidelity": '
        "a valid C identifier",
    ),
    (
        "attribute-name-length",
        lambda d: d["spec"]["devices"][0]["attributes"].update({"a" * 33: {"int": 1}}),
        "Too long: may not be more than 32 bytes",
    ),
    (
        "attribute-value-length",
        _set("spec.devices.0.attributes.model", {"string": "x" * 65}),
        "spec.devices[0].attributes[model].string: Too long: may not be more than 64 bytes",
    ),
    (
        "attribute-two-values",
        _set("spec.devices.0.attributes.qubits", {"int": 5, "string": "5"}),
        "spec.devices[0].attributes[qubits]: Invalid value:",
    ),
    (
        "device-name",
        _set("spec.devices.0.name", "Adonis_r0"),
        'spec.devices[0].name: Invalid value: "Adonis_r0"',
    ),
    (
        "duplicate-device",
        _set("spec.devices.1.name", "adonis-r0"),
        'spec.devices[1]: Duplicate value: "adonis-r0"',
    ),
    (
        "slice-count",
        _set("spec.pool.resourceSliceCount", 0),
        "spec.pool.resourceSliceCount: Invalid value: 0",
    ),
    ("schema-unknown-field", _set("spec.devices.0.fidelity", "0.9"), "'fidelity' was unexpected"),
    ("schema-type", _set("spec.pool.generation", "one"), "spec.pool.generation: Invalid value:"),
]


@pytest.mark.parametrize(("case", "break_it", "message"), CASES, ids=[c[0] for c in CASES])
def test_rejects_like_the_api_server(
    case: str, break_it: Callable[[dict[str, Any]], None], message: str
) -> None:
    data = slice_dict()
    break_it(data)
    reason = rejected(data)
    assert reason.startswith('ResourceSlice.resource.k8s.io "node-a-qpu.quantum.example.com-0" is invalid: ')
    assert message in reason


def test_too_many_devices() -> None:
    data = slice_dict(RESOURCE_SLICE_MAX_DEVICES)
    data["spec"]["devices"].append(dict(data["spec"]["devices"][0], name="adonis-r128"))
    assert "spec.devices: Too many: 129: must have at most 128 items" in rejected(data)


def test_selector_needs_exactly_one_term() -> None:
    data = slice_dict(node_selector={"qpu": "adonis"})
    terms = data["spec"]["nodeSelector"]["nodeSelectorTerms"]
    terms.append(terms[0])
    assert "spec.nodeSelector.nodeSelectorTerms: Invalid value:" in rejected(data)


def test_pool_and_node_are_immutable_on_update() -> None:
    old = slice_dict()
    moved = slice_dict()
    moved["spec"]["nodeName"] = "node-b"
    assert 'spec.nodeName: Invalid value: "node-b": field is immutable' in rejected(moved, old)


def test_store_keeps_nothing_on_rejection() -> None:
    from kubernetes.client import V1ResourceSlice

    api = FakeResourceAPI()
    data = slice_dict()
    data["spec"]["allNodes"] = True
    from doubles.fake_resource_api import _decode

    body = _decode(data, "V1ResourceSlice")
    assert isinstance(body, V1ResourceSlice)
    with pytest.raises(ApiError):
        api.create_resource_slice(body)
    assert api.slices == {}


def _stored(
    api: FakeResourceAPI, pool: str, generation: int, count: int, index: int, names: list[str]
) -> None:
    from doubles.fake_resource_api import _decode

    devices = [device_model(d, True, "remove") for d in devices_for(QPU, pool)[: len(names)]]
    for dev, name in zip(devices, names, strict=True):
        dev.name = name
    data = to_dict(build_pool(pool, devices, "test", node_name=pool, generation=generation)[0])
    data["metadata"]["name"] = f"{pool}-{generation}-{index}"
    data["spec"]["pool"]["resourceSliceCount"] = count
    api.create_resource_slice(_decode(data, "V1ResourceSlice"))


def test_scheduler_sees_only_complete_pools_at_the_newest_generation() -> None:
    api = FakeResourceAPI()
    _stored(api, "node-a", 1, 1, 0, ["old-r0"])
    _stored(api, "node-a", 2, 1, 0, ["new-r0"])  # the old generation's slice is ignored
    _stored(api, "node-b", 1, 2, 0, ["half-r0"])  # 1 of 2 slices: incomplete, skipped
    assert sorted(api.scheduler_devices()) == [("qpu.quantum.example.com", "node-a", "new-r0")]
    _stored(api, "node-b", 1, 2, 1, ["half-r1"])
    assert sorted(d for _, _, d in api.scheduler_devices()) == ["half-r0", "half-r1", "new-r0"]
