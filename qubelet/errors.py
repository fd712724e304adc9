"""qubelet's error tree: the few exceptions callers catch, all under :class:`QubeletError`.

Each class is a decision a caller makes, not a place an error came from: a usage error ends the
command with exit status 2 and one line; a config error is a usage error that names file, entry
and field; an unavailable backend is skipped, never retried; ``NotFound``/``Conflict`` are the two
API-server answers the controllers act on (the Kubernetes client's ``ApiException`` is translated
into them inside the API client wrapper, so no caller inspects HTTP statuses).

This module imports nothing, so it has one identity whether the CLI runs as the ``qubelet``
script or as ``python -m qubelet.cli``.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "BackendUnavailableError",
    "ConfigError",
    "Conflict",
    "NotFound",
    "QubeletError",
    "UsageError",
]


class QubeletError(Exception):
    """Base of every error qubelet raises on purpose; ``str()`` is one line meant for a person."""


class UsageError(QubeletError):
    """Bad input from the user: printed as one line, exit status 2."""


class ConfigError(UsageError, ValueError):
    """An invalid config file; ``str()`` is one line naming file, entry and field."""


class BackendUnavailableError(QubeletError, RuntimeError):
    """A backend cannot run at all here (no GPU, missing tokens): skip it, do not retry on it."""


class ApiError(QubeletError):
    """The Kubernetes API server refused a request; ``status`` is its HTTP status code."""

    def __init__(self, message: str, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(ApiError):
    """The object does not exist (HTTP 404)."""


class Conflict(ApiError):
    """The object exists already, or changed since it was read (HTTP 409)."""
