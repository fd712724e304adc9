"""The adapter point: which :class:`~dra_driver.reservations.provider.ReservationProvider` serves a QPU.

Today every QPU with ``reservation:`` is served by the HTTP adapter (the REST contract in
docs/dra-driver.md, spoken by the project's IQM server double). A vendor with its own booking
API gets a class implementing ``ReservationProvider`` and a branch here, chosen by the QPU's
``vendor`` or ``backend``; nothing else in the controller changes.
"""

from __future__ import annotations

from collections.abc import Iterable

from dra_driver.reservations.http_provider import HTTPReservationProvider
from dra_driver.reservations.provider import ReservationProvider
from qubelet.inventory import QPUConfig

__all__ = ["provider_for", "providers_for"]


def provider_for(qpu: QPUConfig, owner: str, timeout_seconds: float = 5.0) -> ReservationProvider:
    """The provider adapter of one QPU (HTTP contract for every vendor today)."""
    return HTTPReservationProvider(qpu, owner, timeout_seconds=timeout_seconds)


def providers_for(
    qpus: Iterable[QPUConfig], owner: str, timeout_seconds: float = 5.0
) -> dict[str, ReservationProvider]:
    """One provider per QPU that has reservations turned on, by QPU name."""
    return {q.name: provider_for(q, owner, timeout_seconds) for q in qpus if q.reservation is not None}
