"""A backend's own word on its health: a check that is cached and never waited on for long.

Why its own module: the scheduling loop asks every backend for its state at every re-plan,
many times a minute when batches are short. For a server QPU the honest answer is a request to
its server, and asking at that rate would hammer it; a request that hangs would hang the run.
So :class:`CachedHealthCheck` runs the check at most once per ``ttl`` seconds, on a thread of
its own, and waits for it at most ``timeout`` seconds. A check that has not answered by then
makes the backend unhealthy ("no answer within T s"); no second check starts while it still
hangs, and each change of verdict is logged once (one warning line with the reason, one info
line on recovery). The reason travels with the state (``BackendState.unhealthy_reason``) into
plan.json, where a backend that lost says ``unhealthy: <reason>``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from qubelet import klog

log = klog.get_logger("qubelet.pipeline")

#: seconds a verdict is reused before the backend is asked again
DEFAULT_HEALTH_TTL = 30.0
#: seconds one health check may take before the backend counts as unhealthy
DEFAULT_HEALTH_TIMEOUT = 5.0


@dataclass(frozen=True)
class Health:
    """A verdict: healthy, or not and why (one line, for people)."""

    healthy: bool
    reason: str = ""


HEALTHY = Health(True)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class CachedHealthCheck:
    """``check`` (raises when unhealthy) asked at most once per ``ttl`` s, waited on ``timeout`` s.

    Args:
        name: the backend, for the log lines.
        source: who is asked (``IQM server <url>``), to start the reasons the check itself
            cannot give (no answer in time).
        check: returns when the backend is healthy; raises with a one-line reason otherwise
            (the message must not carry secrets: it is logged and written to plan.json).
        ttl: seconds a verdict is reused.
        timeout: seconds to wait for one check.
        clock: monotonic seconds (tests move it).
    """

    def __init__(
        self,
        name: str,
        check: Callable[[], None],
        *,
        source: str = "",
        ttl: float = DEFAULT_HEALTH_TTL,
        timeout: float = DEFAULT_HEALTH_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.check = check
        self.source = source or name
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        #: checks started (a test counts the server's load by it)
        self.checks = 0
        self._lock = threading.Lock()
        self._verdict: Health | None = None
        self._checked_at: float | None = None
        self._hung: threading.Thread | None = None
        self._hung_since = 0.0

    def current(self) -> Health:
        """The verdict, asking the backend again when the last one is older than ``ttl``."""
        with self._lock:
            now = self.clock()
            if (
                self._verdict is not None
                and self._checked_at is not None
                and now - self._checked_at < self.ttl
            ):
                return self._verdict
            if self._hung is not None and self._hung.is_alive():
                waited = time.monotonic() - self._hung_since
                verdict = Health(False, f"{self.source}: health check unanswered for {waited:.0f} s")
            else:
                verdict = self._run_once()
            self._record(verdict)
            self._checked_at = self.clock()
            return verdict

    def _run_once(self) -> Health:
        outcome: list[Health] = []

        def target() -> None:
            try:
                self.check()
            except Exception as exc:  # any failure is the verdict, never the run's end
                outcome.append(Health(False, _one_line(exc)))
            else:
                outcome.append(HEALTHY)

        self.checks += 1
        thread = threading.Thread(target=target, name=f"health-{self.name}", daemon=True)
        started = time.monotonic()
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self._hung, self._hung_since = thread, started
            return Health(False, f"{self.source}: health check, no answer within {self.timeout:g} s")
        self._hung = None
        return (
            outcome[0] if outcome else Health(False, f"{self.source}: health check ended without a verdict")
        )

    def _record(self, verdict: Health) -> None:
        before = self._verdict
        self._verdict = verdict
        if not verdict.healthy and (before is None or before.healthy):
            log.warning(
                "backend unhealthy, offered to the policy as such", backend=self.name, reason=verdict.reason
            )
        elif verdict.healthy and before is not None and not before.healthy:
            log.info("backend healthy again", backend=self.name)
