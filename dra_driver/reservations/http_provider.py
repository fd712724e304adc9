"""The reservation REST contract over HTTP: the adapter for IQM-style servers.

The QPU's ``endpoint`` (``https://host/<quantum computer>``, as in the inventory) gives the base
URL and the quantum computer; the token is the QPU's ``tokensFile`` (``access_token``), sent as
``Authorization: Bearer`` exactly as iqm-client sends it and never logged or put in a message.
Calls, all under ``<base>/api/v1`` (docs/dra-driver.md, "Reservations"):

- ``POST reservations`` ``{"quantum_computer", "idempotency_key", "duration_seconds", "owner"}``:
  the reservation for that key (a new one, or the one the key already has);
- ``GET reservations?owner=&quantum_computer=``: ``{"reservations": [...]}``, pending and granted;
- ``DELETE reservations/{id}``: release (404 counts as released).

A reservation is ``{"id", "idempotency_key", "status", "start", "end", "reason"}`` with status
``pending``, ``granted``, ``refused`` or ``released``. Errors come back as
``{"message", "error_code", "source"}`` like IQM's job API; each maps to one
:class:`~dra_driver.reservations.provider.ProviderError` kind.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlparse

from dra_driver.reservations.provider import ProviderError, Reservation
from qubelet.inventory import QPUConfig

__all__ = ["HTTPReservationProvider", "split_endpoint"]

_STATES = ("pending", "granted", "refused", "released")


def split_endpoint(url: str) -> tuple[str, str]:
    """Base URL and quantum computer of an endpoint such as ``https://host/apollo``."""
    parsed = urlparse(url)
    segments = [s for s in parsed.path.split("/") if s]
    if not segments:
        raise ValueError(f"endpoint {url} names no quantum computer (expected https://host/<qc>)")
    base = parsed._replace(path="/".join(["", *segments[:-1]]), params="", query="", fragment="")
    return base.geturl().rstrip("/"), segments[-1]


def _token(tokens_file: str | None) -> str | None:
    if not tokens_file:
        return None
    try:
        data = json.loads(Path(tokens_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProviderError(
            "unauthorized", f"cannot read token file {tokens_file}: {type(exc).__name__}"
        ) from None
    token = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise ProviderError("unauthorized", f"token file {tokens_file} has no access_token")
    return token


class HTTPReservationProvider:
    """:class:`~dra_driver.reservations.provider.ReservationProvider` for one QPU over HTTP."""

    def __init__(self, qpu: QPUConfig, owner: str, timeout_seconds: float = 5.0) -> None:
        if qpu.endpoint is None:
            raise ValueError(f"QPU {qpu.name} has no endpoint to ask for reservations")
        self.qpu = qpu
        self.owner = owner
        self.timeout_seconds = timeout_seconds
        self.base, self.quantum_computer = split_endpoint(qpu.endpoint)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base}/api/v1/{path}"
        headers = {"Accept": "application/json", "User-Agent": "qubelet-reservations"}
        token = _token(self.qpu.tokens_file)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        where = f"reservation server {self.base} ({self.quantum_computer})"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            if exc.code in (401, 403):
                raise ProviderError("unauthorized", f"{where} rejected the token: {message}") from None
            if exc.code == 404 and method == "DELETE":
                return None
            kind = "unavailable" if exc.code >= 500 else "protocol"
            raise ProviderError(kind, f"{where}: HTTP {exc.code}: {message}") from None
        except TimeoutError:
            raise ProviderError("timeout", f"{where}: no answer within {self.timeout_seconds:g} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError | socket.timeout):
                raise ProviderError(
                    "timeout", f"{where}: no answer within {self.timeout_seconds:g} s"
                ) from None
            raise ProviderError("unavailable", f"{where}: cannot connect ({exc.reason})") from None
        except OSError as exc:
            raise ProviderError("unavailable", f"{where}: {type(exc).__name__}: {exc}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ProviderError("protocol", f"{where}: answer is not JSON") from None

    def request(self, key: str, duration_seconds: int) -> Reservation:
        """POST reservations (idempotent on ``key``)."""
        answer = self._call(
            "POST",
            "reservations",
            {
                "quantum_computer": self.quantum_computer,
                "idempotency_key": key,
                "duration_seconds": duration_seconds,
                "owner": self.owner,
            },
        )
        return _reservation(answer)

    def release(self, reservation_id: str) -> None:
        """DELETE reservations/{id}; an unknown id is already released."""
        self._call("DELETE", f"reservations/{quote(reservation_id, safe='')}")

    def active(self) -> list[Reservation]:
        """GET reservations for this owner and quantum computer."""
        query = urlencode({"owner": self.owner, "quantum_computer": self.quantum_computer})
        answer = self._call("GET", f"reservations?{query}")
        items = answer.get("reservations") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise ProviderError("protocol", "reservation list has no 'reservations' array")
        return [_reservation(item) for item in items]


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason).splitlines()[0][:200]


def _reservation(data: Any) -> Reservation:
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or data.get("status") not in _STATES:
        raise ProviderError("protocol", f"malformed reservation: {str(data)[:120]}")
    return Reservation(
        id=data["id"],
        key=str(data.get("idempotency_key") or ""),
        state=data["status"],
        start=data.get("start") or None,
        end=data.get("end") or None,
        reason=str(data.get("reason") or ""),
    )
