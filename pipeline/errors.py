"""Errors that carry a one-line message meant for the person who ran the command."""


class PipelineError(ValueError):
    """Bad input or state: the message names what is wrong and where, on one line."""


class BackendUnavailableError(RuntimeError):
    """A backend cannot run at all here (no GPU, missing tokens): skip it, do not retry on it."""


class BackendFailedError(RuntimeError):
    """A backend failed on a batch; the executor retries, on another backend if needed."""
