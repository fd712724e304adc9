"""FakeResourceAPI: an in-memory stand-in for the Kubernetes API server (no cluster here).

It implements ``dra_driver.client.ResourceAPI`` with the semantics the driver depends on: the
real ``kubernetes.client`` model objects go in and come out (deep copies, so callers cannot
mutate stored state), names are unique (``Conflict`` on create), ``resourceVersion`` guards
replace (``Conflict`` when stale), missing objects raise ``NotFound``, and list honours
equality label selectors and the ResourceSlice field selectors the API server supports
(``spec.nodeName``, ``spec.driver``, ``spec.pool.name``). It counts calls so tests can
assert "no write on an unchanged reconcile".

Every write is validated as the API server would (``apiserver_validation``): the 1.34 OpenAPI
schema in strict mode, then the ResourceSlice rules no schema expresses (128 devices per slice,
attribute name/value formats, exactly one of nodeName/nodeSelector/allNodes, immutable pool).
An invalid object is rejected with the server's 422 and message, and nothing is stored.
A stored slice is what the server stores: each device taint without ``timeAdded`` gets the
current time, truncated to seconds (``SetDefaults_DeviceTaint``; ``clock`` is settable), and
empty lists and maps are dropped (every list and map of a ResourceSlice is ``omitempty``).
``scheduler_devices`` is the scheduler's view of the stored slices: per pool, only the slices of
the newest ``generation``, and only when all ``resourceSliceCount`` of them are present.

Objects are stored in their JSON form and deserialized on every read, as they would be after a
trip over the wire: callers never share state with the store, and the cost of a read is what
the real client pays for deserialization (not a deep copy of model objects).
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from kubernetes.client import ApiClient, ResourceV1ResourceClaim, V1Lease, V1Node, V1ResourceSlice

from doubles.apiserver_validation import validate
from qubelet.errors import ApiError, Conflict, NotFound

_FIELD_PATHS: dict[str, Any] = {
    "spec.nodeName": lambda d: d["spec"].get("nodeName"),
    "spec.driver": lambda d: d["spec"].get("driver"),
    "spec.pool.name": lambda d: (d["spec"].get("pool") or {}).get("name"),
}


def _parse_selector(selector: str) -> list[tuple[str, str]]:
    pairs = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, sep, value = term.partition("=")
        if not sep or value.startswith("="):
            raise ApiError(f"unsupported selector term {term!r}", status=400, reason="BadRequest")
        pairs.append((key.strip(), value.strip()))
    return pairs


_CODEC = ApiClient()


def _encode(obj: Any) -> dict[str, Any]:
    return _CODEC.sanitize_for_serialization(obj)  # type: ignore[no-any-return]


def _with_kind(data: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    """apiVersion and kind as the server infers them from the URL when the body omits them."""
    data.setdefault("apiVersion", api_version)
    data.setdefault("kind", kind)
    return data


def _omitempty(value: Any) -> Any:
    """Drop None, empty lists and empty maps from every map, as Go's ``omitempty`` encodes them."""
    if isinstance(value, dict):
        out = {k: _omitempty(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        return [_omitempty(v) for v in value]
    return value


def _decode(data: dict[str, Any], klass: str) -> Any:
    return _CODEC._ApiClient__deserialize(data, klass)  # type: ignore[attr-defined]


class FakeResourceAPI:
    """In-memory ResourceSlices, ResourceClaims and Leases with API-server-like errors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rv = itertools.count(1)
        self._slices: dict[str, dict[str, Any]] = {}
        self._claims: dict[tuple[str, str], dict[str, Any]] = {}
        self._leases: dict[tuple[str, str], dict[str, Any]] = {}
        self._nodes: dict[str, dict[str, Any]] = {}
        #: when True, a Node nobody put is read as existing (kubelet registers its Node before
        #: any plugin runs); tests of a missing Node set it False
        self.every_node_exists = True
        self.calls: Counter[str] = Counter()
        #: core/v1 Events recorded (JSON form), oldest first
        self.events: list[dict[str, Any]] = []
        #: the server's clock for defaulted taint ``timeAdded`` (tests move it)
        self.clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    def _defaulted_slice(self, data: dict[str, Any]) -> dict[str, Any]:
        """The slice as the server stores it: taints get ``timeAdded``, empty fields go."""
        now = self.clock().replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
        for device in data.get("spec", {}).get("devices") or []:
            for taint in device.get("taints") or []:
                taint.setdefault("timeAdded", now)
        return _omitempty(data)  # type: ignore[no-any-return]

    # -- helpers ---------------------------------------------------------------------------
    def _stamp(self, obj: Any, uid: str | None = None) -> dict[str, Any]:
        data = _encode(obj)
        meta = data.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._rv))
        meta["uid"] = uid or meta.get("uid") or str(uuid.uuid4())
        return data

    @staticmethod
    def _not_found(kind: str, name: str) -> NotFound:
        return NotFound(f'{kind} "{name}" not found', status=404, reason="NotFound")

    @property
    def slices(self) -> dict[str, V1ResourceSlice]:
        """Snapshot of every stored slice by name (for assertions)."""
        with self._lock:
            return {name: _decode(d, "V1ResourceSlice") for name, d in self._slices.items()}

    @property
    def leases(self) -> dict[tuple[str, str], V1Lease]:
        """Snapshot of every stored Lease by (namespace, name)."""
        with self._lock:
            return {key: _decode(d, "V1Lease") for key, d in self._leases.items()}

    # -- ResourceSlices --------------------------------------------------------------------
    def list_resource_slices(
        self, label_selector: str = "", field_selector: str = ""
    ) -> list[V1ResourceSlice]:
        self.calls["list_resource_slices"] += 1
        labels = _parse_selector(label_selector)
        fields = _parse_selector(field_selector)
        for key, _ in fields:
            if key not in _FIELD_PATHS:
                raise ApiError(f'field label not supported: "{key}"', status=400, reason="BadRequest")
        with self._lock:
            stored = list(self._slices.values())
        out = []
        for data in stored:
            have = data["metadata"].get("labels") or {}
            if all(have.get(k) == v for k, v in labels) and all(
                _FIELD_PATHS[k](data) == v for k, v in fields
            ):
                out.append(_decode(data, "V1ResourceSlice"))
        return out

    def scheduler_devices(self) -> list[tuple[str, str, str]]:
        """(driver, pool, device) for every device the scheduler would consider, duplicates kept.

        Like the allocator: a pool counts only at its newest generation, and only when all of that
        generation's ``resourceSliceCount`` slices are present (an incomplete pool is skipped).
        """
        with self._lock:
            stored = [d["spec"] for d in self._slices.values()]
        newest: dict[tuple[str, str], int] = {}
        for spec in stored:
            key = (spec["driver"], spec["pool"]["name"])
            newest[key] = max(newest.get(key, -1), spec["pool"].get("generation") or 0)
        current = [
            s
            for s in stored
            if (s["pool"].get("generation") or 0) == newest[(s["driver"], s["pool"]["name"])]
        ]
        out = []
        for key in newest:
            pool_slices = [s for s in current if (s["driver"], s["pool"]["name"]) == key]
            if len(pool_slices) != pool_slices[0]["pool"]["resourceSliceCount"]:
                continue  # incomplete pool: the scheduler waits for the rest
            out.extend((key[0], key[1], d["name"]) for s in pool_slices for d in s.get("devices") or [])
        return out

    def create_resource_slice(self, body: V1ResourceSlice) -> V1ResourceSlice:
        self.calls["create_resource_slice"] += 1
        data = _with_kind(_encode(body), "resource.k8s.io/v1", "ResourceSlice")
        validate(data)
        data = self._defaulted_slice(data)
        with self._lock:
            name = data["metadata"]["name"]
            if name in self._slices:
                raise Conflict(f'resourceslices "{name}" already exists', status=409, reason="Conflict")
            data = self._stamp(data)
            self._slices[name] = data
        return _decode(data, "V1ResourceSlice")

    def replace_resource_slice(self, name: str, body: V1ResourceSlice) -> V1ResourceSlice:
        self.calls["replace_resource_slice"] += 1
        data = _with_kind(_encode(body), "resource.k8s.io/v1", "ResourceSlice")
        with self._lock:
            current = self._slices.get(name)
            if current is None:
                raise self._not_found("resourceslices", name)
            validate(data, current)
            rv = data["metadata"].get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise Conflict(
                    f'Operation cannot be fulfilled on "{name}": conflict', status=409, reason="Conflict"
                )
            data = self._stamp(self._defaulted_slice(data), uid=current["metadata"]["uid"])
            self._slices[name] = data
        return _decode(data, "V1ResourceSlice")

    def delete_resource_slice(self, name: str) -> None:
        self.calls["delete_resource_slice"] += 1
        with self._lock:
            if self._slices.pop(name, None) is None:
                raise self._not_found("resourceslices", name)

    # -- ResourceClaims (the scheduler's side, set by tests) -------------------------------
    def put_claim(self, claim: ResourceV1ResourceClaim) -> ResourceV1ResourceClaim:
        """Store a claim as the scheduler would have allocated it."""
        with self._lock:
            data = self._stamp(claim)
            self._claims[(data["metadata"]["namespace"], data["metadata"]["name"])] = data
        return _decode(data, "ResourceV1ResourceClaim")

    def delete_claim(self, namespace: str, name: str) -> None:
        with self._lock:
            self._claims.pop((namespace, name), None)

    def read_resource_claim(self, namespace: str, name: str) -> ResourceV1ResourceClaim:
        self.calls["read_resource_claim"] += 1
        with self._lock:
            data = self._claims.get((namespace, name))
        if data is None:
            raise self._not_found("resourceclaims", name)
        return _decode(data, "ResourceV1ResourceClaim")

    # -- Nodes (kubelet's side) -----------------------------------------------------------
    def put_node(self, name: str) -> str:
        """Store a Node as kubelet registers it; returns its uid."""
        with self._lock:
            data = self._stamp(_with_kind({"metadata": {"name": name}}, "v1", "Node"))
            self._nodes[name] = data
        return str(data["metadata"]["uid"])

    def read_node(self, name: str) -> V1Node:
        self.calls["read_node"] += 1
        with self._lock:
            data = self._nodes.get(name)
        if data is None and self.every_node_exists:
            data = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name))},
            }
        if data is None:
            raise self._not_found("nodes", name)
        return _decode(data, "V1Node")

    def list_resource_claims(self) -> list[ResourceV1ResourceClaim]:
        """Every claim (the reservation controller's list)."""
        self.calls["list_resource_claims"] += 1
        with self._lock:
            stored = list(self._claims.values())
        return [_decode(d, "ResourceV1ResourceClaim") for d in stored]

    def replace_resource_claim_status(
        self, namespace: str, name: str, body: ResourceV1ResourceClaim
    ) -> ResourceV1ResourceClaim:
        """PUT status: only ``status`` changes, guarded by ``resourceVersion``, schema-validated."""
        self.calls["replace_resource_claim_status"] += 1
        with self._lock:
            current = self._claims.get((namespace, name))
            if current is None:
                raise self._not_found("resourceclaims", name)
            if body.metadata.resource_version != current["metadata"]["resourceVersion"]:
                raise Conflict(
                    f'Operation cannot be fulfilled on resourceclaims "{name}"', status=409, reason="Conflict"
                )
            data = dict(current)
            data["status"] = _encode(body).get("status")
            validate(_with_kind(data, "resource.k8s.io/v1", "ResourceClaim"), current)
            data["metadata"] = {**current["metadata"], "resourceVersion": str(next(self._rv))}
            self._claims[(namespace, name)] = data
        return _decode(data, "ResourceV1ResourceClaim")

    def create_event(self, namespace: str, body: Any) -> Any:
        """Record a core/v1 Event (kept in ``events``)."""
        self.calls["create_event"] += 1
        data = _encode(body)
        with self._lock:
            self.events.append(data)
        return body

    # -- Leases ----------------------------------------------------------------------------
    def read_lease(self, namespace: str, name: str) -> V1Lease:
        self.calls["read_lease"] += 1
        with self._lock:
            data = self._leases.get((namespace, name))
        if data is None:
            raise self._not_found("leases", name)
        return _decode(data, "V1Lease")

    def create_lease(self, namespace: str, body: V1Lease) -> V1Lease:
        self.calls["create_lease"] += 1
        validate(_with_kind(_encode(body), "coordination.k8s.io/v1", "Lease"))
        with self._lock:
            key = (namespace, body.metadata.name)
            if key in self._leases:
                raise Conflict(f'leases "{key[1]}" already exists', status=409, reason="Conflict")
            data = self._stamp(body)
            self._leases[key] = data
        return _decode(data, "V1Lease")

    def replace_lease(self, namespace: str, name: str, body: V1Lease) -> V1Lease:
        self.calls["replace_lease"] += 1
        with self._lock:
            current = self._leases.get((namespace, name))
            if current is None:
                raise self._not_found("leases", name)
            if body.metadata.resource_version != current["metadata"]["resourceVersion"]:
                raise Conflict(
                    f'Operation cannot be fulfilled on lease "{name}"', status=409, reason="Conflict"
                )
            validate(_with_kind(_encode(body), "coordination.k8s.io/v1", "Lease"), current)
            data = self._stamp(body, uid=current["metadata"]["uid"])
            self._leases[(namespace, name)] = data
        return _decode(data, "V1Lease")


def allocated_claim(
    namespace: str,
    name: str,
    results: list[tuple[str, str, str, str]] | None,
    uid: str | None = None,
) -> ResourceV1ResourceClaim:
    """A ResourceClaim as the scheduler leaves it: ``results`` are (driver, pool, device, request).

    ``results=None`` gives a claim that is not allocated yet.
    """
    from kubernetes.client import (
        V1AllocationResult,
        V1DeviceAllocationResult,
        V1DeviceClaim,
        V1DeviceRequest,
        V1ExactDeviceRequest,
        V1ObjectMeta,
        V1ResourceClaimSpec,
        V1ResourceClaimStatus,
    )
    from kubernetes.client import V1DeviceRequestAllocationResult as Result

    status = V1ResourceClaimStatus()
    if results is not None:
        status.allocation = V1AllocationResult(
            devices=V1DeviceAllocationResult(
                results=[Result(driver=d, pool=p, device=dev, request=r) for d, p, dev, r in results]
            )
        )
    return ResourceV1ResourceClaim(
        api_version="resource.k8s.io/v1",
        kind="ResourceClaim",
        metadata=V1ObjectMeta(namespace=namespace, name=name, uid=uid or str(uuid.uuid4())),
        spec=V1ResourceClaimSpec(
            devices=V1DeviceClaim(
                requests=[
                    V1DeviceRequest(
                        name="qpu",
                        exactly=V1ExactDeviceRequest(device_class_name="qpu.quantum.example.com"),
                    )
                ]
            )
        ),
        status=status,
    )
