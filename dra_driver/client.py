"""The small slice of the Kubernetes API the driver uses, behind one interface.

The reconcile loop, NodePrepareResources and leader election talk to this protocol only; the
real implementation wraps ``kubernetes.client.ResourceV1Api`` / ``CoordinationV1Api`` and the
unit tests use ``tests/doubles/fake_resource_api.FakeResourceAPI``, an in-memory API server with
the same methods, the same model objects and the same ``ApiException`` statuses (404, 409).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kubernetes.client import ResourceV1ResourceClaim, V1Lease, V1ResourceSlice


class ResourceAPI(Protocol):
    """ResourceSlices (write), ResourceClaims (read), Leases (election)."""

    def list_resource_slices(
        self, label_selector: str = "", field_selector: str = ""
    ) -> list[V1ResourceSlice]: ...

    def create_resource_slice(self, body: V1ResourceSlice) -> V1ResourceSlice: ...

    def replace_resource_slice(self, name: str, body: V1ResourceSlice) -> V1ResourceSlice: ...

    def delete_resource_slice(self, name: str) -> None: ...

    def read_resource_claim(self, namespace: str, name: str) -> ResourceV1ResourceClaim: ...

    def read_lease(self, namespace: str, name: str) -> V1Lease: ...

    def create_lease(self, namespace: str, body: V1Lease) -> V1Lease: ...

    def replace_lease(self, namespace: str, name: str, body: V1Lease) -> V1Lease: ...


def is_status(exc: BaseException, status: int) -> bool:
    """True for a ``kubernetes.client.ApiException`` with that HTTP status."""
    return getattr(exc, "status", None) == status


class KubeResourceAPI:
    """:class:`ResourceAPI` over a real API server (kubeconfig or in-cluster credentials)."""

    def __init__(self, kubeconfig: str | None = None, api_client: Any = None) -> None:
        from kubernetes import client, config

        if api_client is None:
            if kubeconfig:
                config.load_kube_config(config_file=kubeconfig)
            else:
                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    config.load_kube_config()
            api_client = client.ApiClient()
        self.api_client = api_client
        self._resource = client.ResourceV1Api(api_client)
        self._coordination = client.CoordinationV1Api(api_client)

    def list_resource_slices(self, label_selector: str = "", field_selector: str = "") -> list[Any]:
        return list(
            self._resource.list_resource_slice(
                label_selector=label_selector, field_selector=field_selector
            ).items
        )

    def create_resource_slice(self, body: Any) -> Any:
        return self._resource.create_resource_slice(body)

    def replace_resource_slice(self, name: str, body: Any) -> Any:
        return self._resource.replace_resource_slice(name, body)

    def delete_resource_slice(self, name: str) -> None:
        self._resource.delete_resource_slice(name)

    def read_resource_claim(self, namespace: str, name: str) -> Any:
        return self._resource.read_namespaced_resource_claim(name, namespace)

    def read_lease(self, namespace: str, name: str) -> Any:
        return self._coordination.read_namespaced_lease(name, namespace)

    def create_lease(self, namespace: str, body: Any) -> Any:
        return self._coordination.create_namespaced_lease(namespace, body)

    def replace_lease(self, namespace: str, name: str, body: Any) -> Any:
        return self._coordination.replace_namespaced_lease(name, namespace, body)
