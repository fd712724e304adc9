"""The provider side of a reservation: what the controller asks a QPU vendor, and the answers.

IQM's API (iqm-client 36) has no call to book a slot: timeslots are booked outside it and jobs
are sent to them with ``use_timeslot``. So reservations go through this small interface, and
each vendor gets an adapter. :class:`~dra_driver.reservations.http_provider.HTTPReservationProvider`
speaks the REST contract documented in docs/dra-driver.md ("Reservations"), which
``tests/doubles/iqm_server.py`` serves beside IQM's job API; a vendor with its own booking API
implements :class:`ReservationProvider` and is chosen in :func:`provider_for`.

Every call is idempotent on the controller's side: :meth:`ReservationProvider.request` with the
same ``key`` returns the same reservation (a controller killed between asking and recording
asks again and gets the one it already has), and :meth:`ReservationProvider.release` of an
unknown or released id succeeds. :meth:`ReservationProvider.active` lists what the provider
holds for this owner, so a restarted controller releases whatever no claim still needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from qubelet.errors import QubeletError

__all__ = [
    "ProviderError",
    "Reservation",
    "ReservationProvider",
    "ReservationState",
]

ReservationState = Literal["pending", "granted", "refused", "released"]


@dataclass(frozen=True)
class Reservation:
    """One reservation as the provider reports it (times are RFC 3339 UTC strings)."""

    id: str
    key: str
    state: ReservationState
    start: str | None = None
    end: str | None = None
    #: why it was refused (provider's words), empty otherwise
    reason: str = ""


class ProviderError(QubeletError):
    """The provider could not answer (timeout, 5xx, rejected token); ``kind`` says which.

    Transient from the controller's point of view: it retries on its next pass and, past the
    claim's deadline, gives up on the device with the failure condition.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        #: "timeout", "unavailable" (connection refused, 5xx), "unauthorized", "protocol"
        self.kind = kind


class ReservationProvider(Protocol):
    """What the reservation controller needs from a QPU vendor (one instance per QPU)."""

    def request(self, key: str, duration_seconds: int) -> Reservation:
        """Ask for a window of ``duration_seconds``; the same ``key`` returns the same reservation."""

    def release(self, reservation_id: str) -> None:
        """Give the reservation back; an unknown or already released one is not an error."""

    def active(self) -> list[Reservation]:
        """This owner's reservations the provider still holds (pending or granted)."""
