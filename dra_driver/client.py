"""The small slice of the Kubernetes API the driver uses, behind one interface.

The reconcile loop, NodePrepareResources and leader election talk to this protocol only; the
real implementation wraps ``kubernetes.client.ResourceV1Api`` / ``CoordinationV1Api`` and the
unit tests use ``tests/doubles/fake_resource_api.FakeResourceAPI``, an in-memory API server with
the same methods and the same model objects.

Errors are part of the interface: a missing object raises :class:`qubelet.errors.NotFound`, an
existing or changed one :class:`qubelet.errors.Conflict`, any other refusal
:class:`qubelet.errors.ApiError`. :class:`KubeResourceAPI` translates the client's
``ApiException`` here (:mod:`qubelet.kube`), so callers catch meaning instead of HTTP statuses.

Every real call carries a request timeout (``request_timeout``, 5 s by default, for the whole
request): without one, a single API read that never answers holds its caller forever. The
daemons build their client with urllib3's retries off (``load_kube_client(retries=False)``), so
a hung read ends after one timeout, says "timed out", and is not repeated behind the caller's
back; NodePrepareResources reads its claims in parallel under one deadline
(:data:`dra_driver.driver.PREPARE_DEADLINE_SECONDS`), inside kubelet's 45 s (docs/reliability.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from qubelet.kube import api_errors, load_kube_client

if TYPE_CHECKING:
    from kubernetes.client import ResourceV1ResourceClaim, V1Lease, V1Node, V1ResourceSlice

__all__ = ["KubeResourceAPI", "ResourceAPI"]

_F = TypeVar("_F", bound=Callable[..., Any])


class ResourceAPI(Protocol):
    """ResourceSlices (write), ResourceClaims (read), Leases (election), Nodes (slice owner).

    Every method raises ``qubelet.errors.NotFound`` (404), ``Conflict`` (409) or ``ApiError``.
    """

    def list_resource_slices(
        self, label_selector: str = "", field_selector: str = ""
    ) -> list[V1ResourceSlice]:
        """ResourceSlices matching the label and field selectors."""

    def create_resource_slice(self, body: V1ResourceSlice) -> V1ResourceSlice:
        """Create a ResourceSlice (``Conflict`` if the name exists)."""

    def replace_resource_slice(self, name: str, body: V1ResourceSlice) -> V1ResourceSlice:
        """Replace a ResourceSlice (``Conflict`` if ``resourceVersion`` is stale)."""

    def delete_resource_slice(self, name: str) -> None:
        """Delete a ResourceSlice (``NotFound`` if it is gone)."""

    def read_resource_claim(self, namespace: str, name: str) -> ResourceV1ResourceClaim:
        """Read a ResourceClaim (``NotFound`` if it does not exist)."""

    def read_node(self, name: str) -> V1Node:
        """Read a Node (``NotFound`` if it does not exist)."""

    def read_lease(self, namespace: str, name: str) -> V1Lease:
        """Read a Lease (``NotFound`` if it does not exist)."""

    def create_lease(self, namespace: str, body: V1Lease) -> V1Lease:
        """Create a Lease (``Conflict`` if another holder created it first)."""

    def replace_lease(self, namespace: str, name: str, body: V1Lease) -> V1Lease:
        """Replace a Lease (``Conflict`` if it changed since it was read)."""


def _translated(method: _F) -> _F:
    """Turn the client's ``ApiException`` raised by ``method`` into NotFound/Conflict/ApiError."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with api_errors(method.__name__.replace("_", " ")):
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


#: Seconds each API request may take to connect and then between bytes of the answer.
DEFAULT_REQUEST_TIMEOUT = 5.0


class KubeResourceAPI:
    """:class:`ResourceAPI` over a real API server (kubeconfig or in-cluster credentials)."""

    def __init__(
        self,
        kubeconfig: str | None = None,
        api_client: Any = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        """Load credentials (kubeconfig, else in-cluster, else default kubeconfig)."""
        from kubernetes import client

        self.request_timeout = request_timeout

        if api_client is None:
            api_client = load_kube_client(kubeconfig)
        self.api_client = api_client
        self._resource = client.ResourceV1Api(api_client)
        self._coordination = client.CoordinationV1Api(api_client)
        self._core = client.CoreV1Api(api_client)

    @_translated
    def list_resource_slices(self, label_selector: str = "", field_selector: str = "") -> list[Any]:
        """List ResourceSlices (``resource.k8s.io/v1``) by label and field selector."""
        return list(
            self._resource.list_resource_slice(
                label_selector=label_selector,
                field_selector=field_selector,
                _request_timeout=self.request_timeout,
            ).items
        )

    @_translated
    def create_resource_slice(self, body: Any) -> Any:
        """Create a ResourceSlice."""
        return self._resource.create_resource_slice(body, _request_timeout=self.request_timeout)

    @_translated
    def replace_resource_slice(self, name: str, body: Any) -> Any:
        """Replace a ResourceSlice, guarded by its ``resourceVersion``."""
        return self._resource.replace_resource_slice(name, body, _request_timeout=self.request_timeout)

    @_translated
    def delete_resource_slice(self, name: str) -> None:
        """Delete a ResourceSlice."""
        self._resource.delete_resource_slice(name, _request_timeout=self.request_timeout)

    @_translated
    def read_resource_claim(self, namespace: str, name: str) -> Any:
        """Read a namespaced ResourceClaim."""
        return self._resource.read_namespaced_resource_claim(
            name, namespace, _request_timeout=self.request_timeout
        )

    @_translated
    def read_node(self, name: str) -> Any:
        """Read a Node (the owner of the node's ResourceSlices)."""
        return self._core.read_node(name, _request_timeout=self.request_timeout)

    @_translated
    def read_lease(self, namespace: str, name: str) -> Any:
        """Read a namespaced Lease."""
        return self._coordination.read_namespaced_lease(
            name, namespace, _request_timeout=self.request_timeout
        )

    @_translated
    def create_lease(self, namespace: str, body: Any) -> Any:
        """Create a namespaced Lease."""
        return self._coordination.create_namespaced_lease(
            namespace, body, _request_timeout=self.request_timeout
        )

    @_translated
    def replace_lease(self, namespace: str, name: str, body: Any) -> Any:
        """Replace a namespaced Lease, guarded by its ``resourceVersion``."""
        return self._coordination.replace_namespaced_lease(
            name, namespace, body, _request_timeout=self.request_timeout
        )
