"""A claim's view of its reservations: which devices need one, and what ``status.devices`` says.

Pure functions over ``kubernetes.client`` models, so the controller, the kubelet plugin and the
tests agree on one encoding. A device needs a reservation when the scheduler copied our
``reserved`` binding condition into its allocation result. Its entry in the claim's
``status.devices[]`` carries the two conditions the scheduler reads and, in ``data``, the
reservation: ``{"reservationID", "qpu", "state", "start", "end"}``. That ``data`` is also what a
restarted controller and the kubelet plugin read back: the claim is the record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from dra_driver.constants import RESERVATION_FAILED_CONDITION, RESERVED_CONDITION
from dra_driver.reservations.provider import Reservation
from qubelet.inventory.names import (
    DRIVER_NAME,
    ENV_RESERVATION_END,
    ENV_RESERVATION_ID,
    ENV_RESERVATION_START,
)

__all__ = [
    "Outcome",
    "find_status",
    "reservation_data",
    "reservation_env",
    "reservation_key",
    "reserving_results",
    "status_entry",
]


@dataclass(frozen=True)
class Outcome:
    """What the controller records for one device: granted, pending or failed (with why)."""

    state: str  # "granted", "pending", "refused", "unavailable"
    qpu: str
    reservation: Reservation | None = None
    message: str = ""


def reserving_results(claim: Any) -> Iterator[Any]:
    """This driver's allocation results that wait for our ``reserved`` binding condition."""
    allocation = claim.status.allocation if claim.status else None
    results = allocation.devices.results if allocation and allocation.devices else None
    for r in results or []:
        if r.driver == DRIVER_NAME and RESERVED_CONDITION in (r.binding_conditions or []):
            yield r


def reservation_key(claim: Any, result: Any) -> str:
    """The idempotency key of one allocation of one device to one claim.

    It includes the allocation time, so a claim allocated again after a refusal (possibly the
    same device, once its cool-down is over) asks afresh instead of getting the refusal back.
    """
    stamp = claim.status.allocation.allocation_timestamp
    text = f"{claim.metadata.uid}|{result.pool}|{result.device}|{stamp.isoformat() if stamp else ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def find_status(claim: Any, result: Any) -> Any:
    """The claim's ``status.devices`` entry of this result's device, or None."""
    for entry in (claim.status.devices if claim.status else None) or []:
        same = (entry.driver, entry.pool, entry.device) == (result.driver, result.pool, result.device)
        if same and getattr(entry, "share_id", None) == getattr(result, "share_id", None):
            return entry
    return None


def reservation_data(entry: Any) -> dict[str, Any]:
    """The ``data`` object of a status entry (empty when none or not a mapping)."""
    data = getattr(entry, "data", None) if entry is not None else None
    return data if isinstance(data, dict) else {}


def _condition(
    kind: str, true: bool, reason: str, message: str, previous: Any, now: dt.datetime
) -> k8s.V1Condition:
    status = "True" if true else "False"
    since = now
    for cond in (getattr(previous, "conditions", None) or []) if previous is not None else []:
        if cond.type == kind and cond.status == status and cond.last_transition_time:
            since = cond.last_transition_time
    return k8s.V1Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message[:1024],
        last_transition_time=since,
    )


_REASONS = {
    "granted": "Granted",
    "pending": "Pending",
    "refused": "Refused",
    "unavailable": "ProviderUnavailable",
}


def status_entry(
    result: Any, outcome: Outcome, previous: Any, now: dt.datetime
) -> k8s.V1AllocatedDeviceStatus:
    """The ``status.devices`` entry for ``outcome`` (transition times kept from ``previous``)."""
    reason = _REASONS[outcome.state]
    res = outcome.reservation
    if outcome.state == "granted" and res is not None:
        message = f"reservation {res.id} on {outcome.qpu} from {res.start} to {res.end}"
    elif outcome.state == "pending" and res is not None:
        message = f"reservation {res.id} on {outcome.qpu} is waiting for the provider"
    else:
        message = outcome.message or f"no reservation on {outcome.qpu}"
    failed = outcome.state in ("refused", "unavailable")
    data: dict[str, Any] = {"qpu": outcome.qpu, "state": outcome.state}
    if res is not None:
        data["reservationID"] = res.id
        if res.start:
            data["start"] = res.start
        if res.end:
            data["end"] = res.end
    return k8s.V1AllocatedDeviceStatus(
        driver=result.driver,
        pool=result.pool,
        device=result.device,
        share_id=getattr(result, "share_id", None),
        conditions=[
            _condition(RESERVED_CONDITION, outcome.state == "granted", reason, message, previous, now),
            _condition(RESERVATION_FAILED_CONDITION, failed, reason, message, previous, now),
        ],
        data=data,
    )


def reservation_env(claim: Any, pool: str, device: str) -> dict[str, str]:
    """The container env of a granted reservation of ``pool/device`` in ``claim`` (else empty)."""
    for entry in (claim.status.devices if claim.status else None) or []:
        if (entry.driver, entry.pool, entry.device) != (DRIVER_NAME, pool, device):
            continue
        data = reservation_data(entry)
        if data.get("state") != "granted" or not data.get("reservationID"):
            return {}
        env = {ENV_RESERVATION_ID: str(data["reservationID"])}
        if data.get("start"):
            env[ENV_RESERVATION_START] = str(data["start"])
        if data.get("end"):
            env[ENV_RESERVATION_END] = str(data["end"])
        return env
    return {}
