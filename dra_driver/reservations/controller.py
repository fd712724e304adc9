"""The reservation controller: a provider reservation for every allocated device that waits for one.

Runs inside ``qubelet dra-driver controller`` and acts only while that process holds the leader
Lease. Each pass (every ``resync_seconds``):

1. **Ask.** For every ResourceClaim whose allocation carries our ``reserved`` binding condition,
   it asks the QPU's provider for a window, keyed by claim, device and allocation time
   (idempotent: asking again returns the same reservation), and writes the answer into the
   claim's ``status.devices[]``: ``reserved=True`` once granted (the scheduler then binds),
   ``reserved=False/Pending`` while the provider queues it, ``reservation-failed=True`` when the
   provider refuses, or stays unreachable past ``deadline_seconds`` after the allocation.
2. **Steer.** A refusal withholds that QPU's devices from its published pool for the QPU's
   ``cooldownSeconds`` and records a Warning Event on the pod and the claim: the scheduler,
   seeing the failure condition, deallocates and its next attempt takes another device (the next
   ``firstAvailable`` alternative), or leaves the pod pending, with the reason in its events.
3. **Release.** It lists what the provider holds for this owner and releases every reservation
   no allocated claim still needs: the claim was deallocated or deleted (its pod is gone), the
   allocation changed, or a controller killed mid-request left it behind. The claims are the
   only record, so a restart reconciles from them and nothing leaks.

Provider faults (timeouts, 5xx, a rejected token) never crash the loop: they are counted, logged
in one line without the token, and retried on the next pass.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes import client as k8s

from dra_driver.metrics import DRAMetrics
from dra_driver.reservations.claims_api import ClaimStatusAPI
from dra_driver.reservations.provider import ProviderError, Reservation, ReservationProvider
from dra_driver.reservations.status import (
    Outcome,
    find_status,
    reservation_data,
    reservation_key,
    reserving_results,
    status_entry,
)
from qubelet import klog
from qubelet.errors import ApiError, Conflict, NotFound
from qubelet.inventory import QPUConfig, device_id
from qubelet.inventory.names import DRIVER_NAME

__all__ = ["ReservationController", "reserving_qpus"]

log = klog.get_logger("qubelet.dra.reservations")

#: Who records the Events (``source.component`` / ``reportingComponent``).
EVENT_COMPONENT = f"{DRIVER_NAME}/reservation-controller"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def reserving_qpus(qpus: Iterable[QPUConfig]) -> tuple[QPUConfig, ...]:
    """The QPUs whose inventory entry turns reservations on."""
    return tuple(q for q in qpus if q.reservation is not None)


class ReservationController:
    """Asks, records, steers and releases (see the module docstring); one pass per :meth:`reconcile`."""

    def __init__(
        self,
        qpus: Iterable[QPUConfig],
        api: ClaimStatusAPI,
        providers: Mapping[str, ReservationProvider],
        *,
        metrics: DRAMetrics | None = None,
        deadline_seconds: float = 120.0,
        now: Callable[[], dt.datetime] = _utcnow,
        clock: Callable[[], float] = time.monotonic,
        on_withheld_change: Callable[[], None] | None = None,
    ) -> None:
        self.qpus = {q.name: q for q in reserving_qpus(qpus)}
        self.api = api
        self.providers = dict(providers)
        self.metrics = metrics or DRAMetrics()
        self.deadline_seconds = deadline_seconds
        self.now = now
        self.clock = clock
        self.on_withheld_change = on_withheld_change
        #: device name -> QPU (device names are ``<qpu>-r<i>``, unique in the inventory)
        self._by_device = {
            device_id(q.name, i): q for q in self.qpus.values() for i in range(max(1, q.replicas))
        }
        self._cooling: dict[str, float] = {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        #: keys already counted as requested / granted (a lost status write asks again)
        self._counted: set[tuple[str, str]] = set()
        for name in self.qpus:
            self.metrics.reservations_pending.labels(qpu=name).set(0)
            self.metrics.reservation_oldest_pending.labels(qpu=name).set(0)
            for counter in (
                self.metrics.reservations_requested,
                self.metrics.reservations_granted,
                self.metrics.reservations_refused,
                self.metrics.reservations_released,
            ):
                counter.labels(qpu=name)

    # --- steering ---------------------------------------------------------------------------------
    def withheld(self) -> set[str]:
        """QPUs whose devices stay out of the published pools (cooling down after a refusal)."""
        now = self.clock()
        with self._lock:
            for name in [n for n, until in self._cooling.items() if until <= now]:
                del self._cooling[name]
                log.info("QPU back in its pool after a refused reservation", qpu=name)
            return set(self._cooling)

    def _cool_down(self, qpu: QPUConfig) -> None:
        assert qpu.reservation is not None
        with self._lock:
            self._cooling[qpu.name] = self.clock() + qpu.reservation.cooldown_seconds
        if self.on_withheld_change is not None:
            self.on_withheld_change()

    # --- one pass ---------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Ask for, record and release reservations once (raises ApiError when claims can't be listed)."""
        claims = self.api.list_resource_claims()
        wanted: dict[str, set[str]] = {name: set() for name in self.qpus}
        pending: dict[str, list[float]] = {name: [] for name in self.qpus}
        for claim in claims:
            self._reconcile_claim(claim, wanted, pending)
        for name in self.qpus:
            ages = pending[name]
            self.metrics.reservations_pending.labels(qpu=name).set(len(ages))
            self.metrics.reservation_oldest_pending.labels(qpu=name).set(max(ages, default=0.0))
        self._release_unwanted(wanted)

    def _age(self, claim: Any) -> float:
        stamp = claim.status.allocation.allocation_timestamp
        return max(0.0, (self.now() - stamp).total_seconds()) if stamp else 0.0

    def _reconcile_claim(
        self, claim: Any, wanted: dict[str, set[str]], pending: dict[str, list[float]]
    ) -> None:
        deleting = claim.metadata.deletion_timestamp is not None
        if deleting and not claim.status.reserved_for:
            return  # deleted and no pod uses it any more: whatever it held is released below
        updates: list[tuple[Any, Any]] = []
        refusals: list[tuple[QPUConfig, str]] = []
        for result in reserving_results(claim):
            qpu = self._by_device.get(result.device)
            if qpu is None or qpu.name not in self.providers:
                self._warn_once(result.device, "allocated device has no reservation provider here")
                continue
            key = reservation_key(claim, result)
            previous = find_status(claim, result)
            recorded = reservation_data(previous)
            state = recorded.get("state")
            if state in ("refused", "unavailable"):
                continue  # the scheduler deallocates it; nothing of it is wanted any more
            wanted[qpu.name].add(key)
            if state == "granted" or deleting:
                continue  # done, or going away: keep what it holds, ask for nothing new
            outcome = self._ask(claim, qpu, key)
            if outcome is None:
                pending[qpu.name].append(self._age(claim))
                continue
            if outcome.state == "pending":
                pending[qpu.name].append(self._age(claim))
                if (
                    outcome.reservation is not None
                    and recorded.get("reservationID") == outcome.reservation.id
                ):
                    continue  # recorded already
            if outcome.state in ("refused", "unavailable"):
                wanted[qpu.name].discard(key)
                refusals.append((qpu, outcome.message))
            updates.append((result, status_entry(result, outcome, previous, self.now())))
        if updates and self._write(claim, updates):
            for qpu, message in refusals:
                self._cool_down(qpu)
                self._event(claim, qpu, message)

    def _once(self, what: str, key: str) -> bool:
        """True the first time (``what``, ``key``) is seen: each reservation is counted once."""
        if (what, key) in self._counted:
            return False
        self._counted.add((what, key))
        return True

    def _ask(self, claim: Any, qpu: QPUConfig, key: str) -> Outcome | None:
        """The provider's answer as an outcome; None to ask again next pass (provider fault)."""
        assert qpu.reservation is not None
        where = f"{claim.metadata.namespace}/{claim.metadata.name}"
        if self._once("requested", key):
            self.metrics.reservations_requested.labels(qpu=qpu.name).inc()
        try:
            res = self.providers[qpu.name].request(key, qpu.reservation.duration_seconds)
        except ProviderError as exc:
            self.metrics.reservation_provider_errors.labels(qpu=qpu.name, kind=exc.kind).inc()
            age = self._age(claim)
            if age < self.deadline_seconds:
                log.warning("reservation request failed; will retry", claim=where, qpu=qpu.name, err=str(exc))
                return None
            self.metrics.reservations_refused.labels(qpu=qpu.name).inc()
            message = f"provider of QPU {qpu.name} unreachable for {age:.0f} s: {exc}"
            log.error("giving up on reservation", claim=where, qpu=qpu.name, err=str(exc))
            return Outcome("unavailable", qpu.name, None, message)
        return self._outcome(claim, qpu, key, res)

    def _outcome(self, claim: Any, qpu: QPUConfig, key: str, res: Reservation) -> Outcome:
        where = f"{claim.metadata.namespace}/{claim.metadata.name}"
        if res.state == "granted":
            if self._once("granted", key):
                self.metrics.reservations_granted.labels(qpu=qpu.name).inc()
                self.metrics.reservation_grant_duration.labels(qpu=qpu.name).observe(self._age(claim))
            log.info(
                "reservation granted",
                claim=where,
                qpu=qpu.name,
                reservation=res.id,
                start=res.start,
                end=res.end,
            )
            return Outcome("granted", qpu.name, res)
        if res.state == "pending":
            return Outcome("pending", qpu.name, res)
        if self._once("refused", key):
            self.metrics.reservations_refused.labels(qpu=qpu.name).inc()
        why = res.reason or ("released by the provider" if res.state == "released" else "refused")
        log.warning("reservation refused", claim=where, qpu=qpu.name, reservation=res.id, reason=why)
        return Outcome("refused", qpu.name, res, f"QPU {qpu.name} refused reservation {res.id}: {why}")

    def _write(self, claim: Any, updates: list[tuple[Any, Any]]) -> bool:
        """Replace the entries of ``updates`` in the claim's status.devices; False on a lost race."""
        keys = {(e.driver, e.pool, e.device, getattr(e, "share_id", None)) for _, e in updates}
        kept = [
            e
            for e in (claim.status.devices or [])
            if (e.driver, e.pool, e.device, getattr(e, "share_id", None)) not in keys
        ]
        claim.status.devices = kept + [entry for _, entry in updates]
        where = f"{claim.metadata.namespace}/{claim.metadata.name}"
        try:
            self.api.replace_resource_claim_status(claim.metadata.namespace, claim.metadata.name, claim)
        except (Conflict, NotFound) as exc:
            log.info("claim changed while recording its reservation; next pass", claim=where, err=str(exc))
            return False
        return True

    def _event(self, claim: Any, qpu: QPUConfig, message: str) -> None:
        assert qpu.reservation is not None
        text = (
            f"{message}; QPU {qpu.name} withheld from scheduling for "
            f"{qpu.reservation.cooldown_seconds:g} s, the scheduler retries with another device"
        )
        ns = claim.metadata.namespace
        targets = [
            k8s.V1ObjectReference(api_version="v1", kind="Pod", namespace=ns, name=ref.name, uid=ref.uid)
            for ref in (claim.status.reserved_for or [])
            if ref.resource == "pods"
        ]
        targets.append(
            k8s.V1ObjectReference(
                api_version="resource.k8s.io/v1",
                kind="ResourceClaim",
                namespace=ns,
                name=claim.metadata.name,
                uid=claim.metadata.uid,
            )
        )
        now = self.now()
        for target in targets:
            event = k8s.CoreV1Event(
                metadata=k8s.V1ObjectMeta(name=f"{target.name}.{uuid.uuid4().hex[:16]}", namespace=ns),
                involved_object=target,
                reason="ReservationRefused",
                message=text[:1024],
                type="Warning",
                source=k8s.V1EventSource(component=EVENT_COMPONENT),
                reporting_component=EVENT_COMPONENT,
                reporting_instance=EVENT_COMPONENT,
                first_timestamp=now,
                last_timestamp=now,
                count=1,
            )
            try:
                self.api.create_event(ns, event)
            except ApiError as exc:
                log.warning("cannot record event", object=f"{ns}/{target.name}", err=str(exc))

    def _release_unwanted(self, wanted: dict[str, set[str]]) -> None:
        for name, provider in self.providers.items():
            try:
                active = provider.active()
            except ProviderError as exc:
                self.metrics.reservation_provider_errors.labels(qpu=name, kind=exc.kind).inc()
                log.warning("cannot list reservations; will retry", qpu=name, err=str(exc))
                continue
            for res in active:
                if res.key in wanted.get(name, set()):
                    continue
                try:
                    provider.release(res.id)
                except ProviderError as exc:
                    self.metrics.reservation_provider_errors.labels(qpu=name, kind=exc.kind).inc()
                    log.warning(
                        "cannot release reservation; will retry", qpu=name, reservation=res.id, err=str(exc)
                    )
                    continue
                self.metrics.reservations_released.labels(qpu=name).inc()
                log.info("released reservation no claim needs", qpu=name, reservation=res.id)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, device=key)
