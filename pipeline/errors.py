"""Errors that carry a one-line message meant for the person who ran the command.

They are part of qubelet's one error tree (:mod:`qubelet.errors`).
"""

from qubelet.errors import BackendUnavailableError, QubeletError

__all__ = [
    "BackendFailedError",
    "BackendUnavailableError",
    "PipelineError",
    "RunDirBusyError",
    "RunTerminated",
    "StorageError",
]


class PipelineError(QubeletError, ValueError):
    """Bad input or state: the message names what is wrong and where, on one line."""


class StorageError(PipelineError):
    """The run directory cannot be written (read-only, full disk, a file in the way).

    Not a backend fault: retrying the batch elsewhere cannot help, so a run stops at the first
    one and says which path failed and why.
    """


class RunDirBusyError(PipelineError):
    """Another process holds the run directory's lock (see :mod:`pipeline.runlock`)."""


class BackendFailedError(QubeletError, RuntimeError):
    """A backend failed on a batch; the executor retries, on another backend if needed."""


class RunTerminated(QubeletError):
    """The run got SIGTERM; ``cancelled`` names the QPU jobs it cancelled on their servers.

    Why an exception: the signal arrives in the main thread while it waits for batches; raising
    unwinds the executor so it can cancel server-side jobs (which would otherwise keep running
    and be billed) before the process exits.
    """

    def __init__(self, message: str = "terminated by SIGTERM") -> None:
        super().__init__(message)
        self.cancelled: list[str] = []
