"""Errors that carry a one-line message meant for the person who ran the command.

They are part of qubelet's one error tree (:mod:`qubelet.errors`).
"""

from qubelet.errors import BackendUnavailableError, QubeletError

__all__ = ["BackendFailedError", "BackendUnavailableError", "PipelineError"]


class PipelineError(QubeletError, ValueError):
    """Bad input or state: the message names what is wrong and where, on one line."""


class BackendFailedError(QubeletError, RuntimeError):
    """A backend failed on a batch; the executor retries, on another backend if needed."""
