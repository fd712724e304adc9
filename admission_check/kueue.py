"""The Kueue objects the controller reads and writes, as plain dicts, behind a small protocol.

``KueueAPI`` is what the controller needs: list Workloads, read a Workload's owner Pod (Kueue's
pod integration copies only the pod *spec* into the Workload, so a plain pod's fidelity-floor
annotation is read from the pod itself), replace a Workload's status (with its
``resourceVersion``, so a stale writer gets a Conflict instead of overwriting), read and update an
AdmissionCheck's status. :class:`KubeKueueAPI` is the real one (kubernetes ``CustomObjectsApi``,
status subresource); tests use the double in ``tests/doubles/fake_kueue_api.py``.
"""

from __future__ import annotations

from typing import Any, Protocol

from admission_check.names import KUEUE_GROUP, KUEUE_VERSION
from qubelet.kube import api_errors


class KueueAPI(Protocol):
    """Workload and AdmissionCheck access (kueue.x-k8s.io/v1beta2)."""

    def list_workloads(self) -> list[dict[str, Any]]:
        """Every Workload in every namespace."""
        ...

    def replace_workload_status(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Write ``body``'s status; ``metadata.resourceVersion`` must be current (else Conflict)."""
        ...

    def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """One Pod as a dict (NotFound when absent): the owner of a pod-integration Workload."""
        ...

    def list_admission_checks(self) -> list[dict[str, Any]]:
        """Every AdmissionCheck (cluster-scoped)."""
        ...

    def replace_admission_check_status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Write an AdmissionCheck's status (``resourceVersion`` checked)."""
        ...


class KubeKueueAPI:
    """:class:`KueueAPI` over a kubernetes ``ApiClient``; API errors become qubelet errors."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self._serialize = api_client.sanitize_for_serialization

    def list_workloads(self) -> list[dict[str, Any]]:
        """Every Workload in every namespace."""
        with api_errors("list workloads"):
            items = self.api.list_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "workloads")["items"]
        return list(items)

    def replace_workload_status(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT ``workloads/<name>/status`` (Conflict on a stale ``resourceVersion``)."""
        with api_errors(f"update workload {namespace}/{name} status"):
            out = self.api.replace_namespaced_custom_object_status(
                KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads", name, body
            )
        return dict(out)

    def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """GET ``pods/<name>`` (the ClusterRole grants ``get`` on pods, nothing more)."""
        with api_errors(f"get pod {namespace}/{name}"):
            pod = self.core.read_namespaced_pod(name, namespace)
        return dict(self._serialize(pod))

    def list_admission_checks(self) -> list[dict[str, Any]]:
        """Every AdmissionCheck."""
        with api_errors("list admissionchecks"):
            items = self.api.list_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "admissionchecks")[
                "items"
            ]
        return list(items)

    def replace_admission_check_status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT ``admissionchecks/<name>/status``."""
        with api_errors(f"update admissioncheck {name} status"):
            out = self.api.replace_cluster_custom_object_status(
                KUEUE_GROUP, KUEUE_VERSION, "admissionchecks", name, body
            )
        return dict(out)
