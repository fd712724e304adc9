"""The QPU reservation a step was given, and submitting only inside its window.

When the QPU's DRA claim was reserved before the pod bound (docs/dra-driver.md, "Reservations
before binding"), the container's env carries the reservation: ``QUBELET_RESERVATION_ID`` and
its window, ``QUBELET_RESERVATION_START`` / ``QUBELET_RESERVATION_END`` (RFC 3339). The IQM
backend then submits to the timeslot queue (``use_timeslot``), where booked slots run, and only
while the window is open: it waits for a window that has not started yet (up to
``max_wait_seconds``) and refuses, in one line, to submit after it ended.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.errors import BackendFailedError, BackendUnavailableError
from qubelet.inventory.names import ENV_RESERVATION_END, ENV_RESERVATION_ID, ENV_RESERVATION_START

__all__ = ["ReservationWindow"]


def _stamp(environ: Mapping[str, str], name: str) -> dt.datetime | None:
    raw = environ.get(name)
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BackendUnavailableError(f"{name}={raw!r}: not an RFC 3339 time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class ReservationWindow:
    """A provider reservation: its id and, when known, its window."""

    id: str
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ReservationWindow | None:
        """The reservation the pod was given, or None when it has none."""
        rid = environ.get(ENV_RESERVATION_ID)
        if not rid:
            return None
        return cls(rid, _stamp(environ, ENV_RESERVATION_START), _stamp(environ, ENV_RESERVATION_END))

    def wait_open(
        self,
        *,
        max_wait_seconds: float = 600.0,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Return once the window is open; raise when it ended or opens too late to wait for."""
        current = now()
        if self.start is not None and current < self.start:
            wait = (self.start - current).total_seconds()
            if wait > max_wait_seconds:
                raise BackendFailedError(
                    f"reservation {self.id} starts at {self.start.isoformat()}, "
                    f"{wait:.0f} s from now: longer than the {max_wait_seconds:g} s a step waits"
                )
            sleep(wait)
            current = now()
        if self.end is not None and current >= self.end:
            raise BackendFailedError(
                f"reservation {self.id} ended at {self.end.isoformat()}: not submitting outside it"
            )
