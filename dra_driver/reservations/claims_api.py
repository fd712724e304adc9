"""The API calls the reservation controller makes: claims (list, status) and Events.

Kept apart from :class:`dra_driver.client.ResourceAPI` (slices, one claim read, leases): only
the controller writes claim status, and its RBAC (``resourceclaims/status`` plus the per-driver
``resourceclaims/driver`` verb ``arbitrary-node:update``) is granted to it alone.
``tests/doubles/fake_resource_api.FakeResourceAPI`` implements these too.
"""

from __future__ import annotations

from typing import Any, Protocol

from qubelet.kube import api_errors, load_kube_client

__all__ = ["ClaimStatusAPI", "KubeClaimStatusAPI"]


class ClaimStatusAPI(Protocol):
    """ResourceClaims across namespaces, their status, and Events; errors as in ``ResourceAPI``."""

    def list_resource_claims(self) -> list[Any]:
        """Every ResourceClaim of the cluster."""

    def replace_resource_claim_status(self, namespace: str, name: str, body: Any) -> Any:
        """Write a claim's status (``Conflict`` when its ``resourceVersion`` is stale)."""

    def create_event(self, namespace: str, body: Any) -> Any:
        """Record a core/v1 Event."""


class KubeClaimStatusAPI:
    """:class:`ClaimStatusAPI` over a real API server."""

    def __init__(
        self, api_client: Any = None, kubeconfig: str | None = None, request_timeout: float = 5.0
    ) -> None:
        from kubernetes import client

        self.api_client = api_client if api_client is not None else load_kube_client(kubeconfig)
        self.request_timeout = request_timeout
        self._resource = client.ResourceV1Api(self.api_client)
        self._core = client.CoreV1Api(self.api_client)

    def list_resource_claims(self) -> list[Any]:
        """List ResourceClaims in all namespaces."""
        with api_errors("list resource claims"):
            return list(
                self._resource.list_resource_claim_for_all_namespaces(
                    _request_timeout=self.request_timeout
                ).items
            )

    def replace_resource_claim_status(self, namespace: str, name: str, body: Any) -> Any:
        """PUT the claim's status subresource."""
        with api_errors("replace resource claim status"):
            return self._resource.replace_namespaced_resource_claim_status(
                name, namespace, body, _request_timeout=self.request_timeout
            )

    def create_event(self, namespace: str, body: Any) -> Any:
        """POST a core/v1 Event."""
        with api_errors("create event"):
            return self._core.create_namespaced_event(namespace, body, _request_timeout=self.request_timeout)
