"""Lease-based leader election for qubelet's controllers (client-go's leaderelection rules).

Several replicas of a controller may run; only the holder of a coordination.k8s.io/v1 Lease acts,
the others stand by and take over when it expires: acquire when absent or expired, renew while
held, optimistic concurrency through ``resourceVersion`` (a lost race is a Conflict, not a second
leader). Used by the DRA driver's cloud-pool controller and the Kueue admission check.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from kubernetes import client as k8s

from qubelet import klog
from qubelet.errors import Conflict, NotFound

log = klog.get_logger("qubelet.leader")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaseAPI(Protocol):
    """The Lease calls an elector makes (NotFound/Conflict as :mod:`qubelet.errors`)."""

    def read_lease(self, namespace: str, name: str) -> Any:
        """The Lease, or NotFound."""
        ...

    def create_lease(self, namespace: str, body: Any) -> Any:
        """Create it, or Conflict when it exists."""
        ...

    def replace_lease(self, namespace: str, name: str, body: Any) -> Any:
        """Replace it, or Conflict on a stale ``resourceVersion``."""
        ...


class LeaderElector:
    """Lease-based leader election (one attempt per call; the caller loops)."""

    def __init__(
        self,
        api: LeaseAPI,
        identity: str,
        *,
        namespace: str,
        name: str,
        lease_duration_seconds: int = 15,
        now: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.api = api
        self.identity = identity
        self.namespace = namespace
        self.name = name
        self.lease_duration_seconds = lease_duration_seconds
        self.now = now
        self.is_leader = False
        #: "" after an attempt that reached the API server, else its error (None: no attempt).
        self.last_error: str | None = None

    def _spec(self, transitions: int, acquire: dt.datetime) -> k8s.V1LeaseSpec:
        return k8s.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.lease_duration_seconds,
            acquire_time=acquire,
            renew_time=self.now(),
            lease_transitions=transitions,
        )

    def try_acquire_or_renew(self) -> bool:
        """True when this identity holds the lease after the call."""
        try:
            self.is_leader = self._attempt()
            self.last_error = ""
        except Exception as exc:
            log.error("leader election attempt failed", err=str(exc), identity=self.identity)
            self.is_leader = False
            self.last_error = (str(exc) or type(exc).__name__).splitlines()[0]
        return self.is_leader

    def _attempt(self) -> bool:
        now = self.now()
        try:
            lease = self.api.read_lease(self.namespace, self.name)
        except NotFound:
            body = k8s.V1Lease(
                metadata=k8s.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(0, now),
            )
            try:
                self.api.create_lease(self.namespace, body)
            except Conflict:
                return False  # someone else created it first
            log.info("acquired leader lease", identity=self.identity, lease=f"{self.namespace}/{self.name}")
            return True
        spec = lease.spec or k8s.V1LeaseSpec()
        holder = spec.holder_identity
        renewed = spec.renew_time or spec.acquire_time
        duration = spec.lease_duration_seconds or self.lease_duration_seconds
        expired = renewed is None or renewed + dt.timedelta(seconds=duration) < now
        if holder and holder != self.identity and not expired:
            return False
        mine = holder == self.identity
        transitions = int(spec.lease_transitions or 0) + (0 if mine else 1)
        lease.spec = self._spec(transitions, spec.acquire_time if mine and spec.acquire_time else now)
        try:
            self.api.replace_lease(self.namespace, self.name, lease)
        except Conflict:
            return False  # lost the race for an expired lease
        if not mine:
            log.info("took over leader lease", identity=self.identity, previous=holder or "")
        return True


class KubeLeaseAPI:
    """:class:`LeaseAPI` over a kubernetes ``ApiClient`` (coordination.k8s.io/v1)."""

    def __init__(self, api_client: Any, request_timeout: float = 10.0) -> None:
        from kubernetes import client

        self._api = client.CoordinationV1Api(api_client)
        self.request_timeout = request_timeout

    def read_lease(self, namespace: str, name: str) -> Any:
        """The Lease, or NotFound."""
        from qubelet.kube import api_errors

        with api_errors(f"read lease {namespace}/{name}"):
            return self._api.read_namespaced_lease(name, namespace, _request_timeout=self.request_timeout)

    def create_lease(self, namespace: str, body: Any) -> Any:
        """Create it, or Conflict when it exists."""
        from qubelet.kube import api_errors

        with api_errors(f"create lease in {namespace}"):
            return self._api.create_namespaced_lease(namespace, body, _request_timeout=self.request_timeout)

    def replace_lease(self, namespace: str, name: str, body: Any) -> Any:
        """Replace it, or Conflict on a stale ``resourceVersion``."""
        from qubelet.kube import api_errors

        with api_errors(f"replace lease {namespace}/{name}"):
            return self._api.replace_namespaced_lease(
                name, namespace, body, _request_timeout=self.request_timeout
            )
