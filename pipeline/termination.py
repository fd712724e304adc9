"""SIGTERM as an exception, so a stopped run can cancel its server-side jobs before it exits.

Why: Kubernetes stops a pod, and a user stops ``qubelet run``, with SIGTERM. Python's default
action ends the process at once, leaving IQM jobs queued or running on the server (and billed).
Raising :class:`~pipeline.errors.RunTerminated` in the main thread instead unwinds the code that
waits for jobs, which cancels them (see ``pipeline.executor`` and ``pipeline.backends.iqm_remote``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.errors import RunTerminated

#: the exit status of a process ended by SIGTERM, as shells and Kubernetes report it
EXIT_TERMINATED = 128 + int(signal.SIGTERM)


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into :class:`RunTerminated` in the main thread for the ``with`` block.

    A second SIGTERM while the first is being handled kills the process (default action).
    Outside the main thread (tests, embedding) signals cannot be handled, so nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise RunTerminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
