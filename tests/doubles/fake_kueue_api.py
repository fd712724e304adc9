"""Test double for the Kueue part of an API server (cannot run here): Workloads, AdmissionChecks, Pods.

It keeps kueue.x-k8s.io/v1beta2 objects as JSON dicts and behaves like the API server does for
them: every write is validated against the vendored CRD schema (``manifests/crds``, strict about
unknown fields, as ``kubectl --validate=strict``), ``resourceVersion`` is bumped on every write
and a write with a stale one is a 409 Conflict, and a ``/status`` write changes only ``status``
(spec and metadata from the body are ignored, as for the status subresource).
"""

from __future__ import annotations

import copy
import itertools
import threading
from typing import Any

import schemas

from qubelet.errors import ApiError, Conflict, NotFound

GROUP_VERSION = "kueue.x-k8s.io/v1beta2"


class FakeKueueAPI:
    """In-memory Workloads (namespaced) and AdmissionChecks (cluster-scoped)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rv = itertools.count(1)
        self.workloads: dict[tuple[str, str], dict[str, Any]] = {}
        self.admission_checks: dict[str, dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.status_writes = 0

    # -- helpers ------------------------------------------------------------------------------
    def _validate(self, obj: dict[str, Any], kind: str) -> None:
        if obj.get("apiVersion") != GROUP_VERSION or obj.get("kind") != kind:
            raise ApiError(f"{kind}: apiVersion/kind must be {GROUP_VERSION}/{kind}", status=400)
        try:
            schemas.validate_custom(obj)
        except schemas.SchemaError as exc:
            raise ApiError(f"{kind} is invalid: {exc}", status=422, reason="Invalid") from exc

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        obj["metadata"].setdefault("generation", 1)
        return obj

    @staticmethod
    def _check_version(current: dict[str, Any], body: dict[str, Any]) -> None:
        sent = (body.get("metadata") or {}).get("resourceVersion")
        if sent is not None and sent != current["metadata"]["resourceVersion"]:
            raise Conflict(
                f"Operation cannot be fulfilled on {current['kind']} {current['metadata']['name']}: "
                "the object has been modified",
                status=409,
                reason="Conflict",
            )

    # -- test setup -----------------------------------------------------------------------------
    def create_workload(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a Workload (status included, as Kueue itself would have written it)."""
        obj = copy.deepcopy(body)
        self._validate(obj, "Workload")
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        with self._lock:
            if key in self.workloads:
                raise Conflict(f"workloads {key[1]} already exists", status=409, reason="AlreadyExists")
            self.workloads[key] = self._stamp(obj)
            return copy.deepcopy(obj)

    def create_admission_check(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create an AdmissionCheck."""
        obj = copy.deepcopy(body)
        self._validate(obj, "AdmissionCheck")
        with self._lock:
            self.admission_checks[obj["metadata"]["name"]] = self._stamp(obj)
            return copy.deepcopy(obj)

    def create_pod(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a Pod (the owner of a pod-integration Workload); a uid is assigned."""
        obj = copy.deepcopy(body)
        if obj.get("apiVersion") != "v1" or obj.get("kind") != "Pod":
            raise ApiError("Pod: apiVersion/kind must be v1/Pod", status=400)
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        with self._lock:
            if key in self.pods:
                raise Conflict(f"pods {key[1]} already exists", status=409, reason="AlreadyExists")
            obj["metadata"].setdefault("uid", f"uid-{key[1]}")
            self.pods[key] = self._stamp(obj)
            return copy.deepcopy(obj)

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a Pod (its Workload stays until Kueue's garbage collection)."""
        with self._lock:
            self.pods.pop((namespace, name), None)

    def read_workload(self, namespace: str, name: str) -> dict[str, Any]:
        """One Workload (NotFound when absent)."""
        with self._lock:
            if (namespace, name) not in self.workloads:
                raise NotFound(f"workloads {name} not found", status=404, reason="NotFound")
            return copy.deepcopy(self.workloads[(namespace, name)])

    # -- the KueueAPI contract -------------------------------------------------------------------
    def list_workloads(self) -> list[dict[str, Any]]:
        """Every Workload in every namespace."""
        with self._lock:
            return [copy.deepcopy(w) for _, w in sorted(self.workloads.items())]

    def replace_workload_status(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """The status subresource: only ``status`` changes; stale ``resourceVersion`` → Conflict."""
        with self._lock:
            current = self.workloads.get((namespace, name))
            if current is None:
                raise NotFound(f"workloads {name} not found", status=404, reason="NotFound")
            self._check_version(current, body)
            updated = copy.deepcopy(current)
            updated["status"] = copy.deepcopy(body.get("status") or {})
            self._validate(updated, "Workload")
            self.workloads[(namespace, name)] = self._stamp(updated)
            self.status_writes += 1
            return copy.deepcopy(updated)

    def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """One Pod (NotFound when absent), as ``GET pods/<name>`` returns it."""
        with self._lock:
            if (namespace, name) not in self.pods:
                raise NotFound(f'pods "{name}" not found', status=404, reason="NotFound")
            return copy.deepcopy(self.pods[(namespace, name)])

    def list_admission_checks(self) -> list[dict[str, Any]]:
        """Every AdmissionCheck."""
        with self._lock:
            return [copy.deepcopy(c) for _, c in sorted(self.admission_checks.items())]

    def replace_admission_check_status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """The AdmissionCheck status subresource."""
        with self._lock:
            current = self.admission_checks.get(name)
            if current is None:
                raise NotFound(f"admissionchecks {name} not found", status=404, reason="NotFound")
            self._check_version(current, body)
            updated = copy.deepcopy(current)
            updated["status"] = copy.deepcopy(body.get("status") or {})
            self._validate(updated, "AdmissionCheck")
            self.admission_checks[name] = self._stamp(updated)
            return copy.deepcopy(updated)
