"""Health probes per QPU and a monitor that reports transitions.

Three probe kinds, chosen per QPU in the config:

- ``fake``: the embedded IQM fake backend (a noisy simulator) can be imported and constructed.
  It is constructed once and cached: the check is "this node can run it", not a benchmark. A
  class iqm-client does not have fails at once, before the slow import
  (:mod:`qubelet.inventory.fake_backends`).
- ``http``: ``GET health.url`` with ``health.timeoutSeconds``; any 2xx is healthy. For a real IQM
  server. No token is sent: the health URL must not need one, and tokens are never logged.
- ``file``: the file at ``health.path`` contains ``healthy`` (after stripping); anything else, or a
  missing file, is unhealthy. For admins (drain a QPU by writing ``maintenance``) and for tests.

:class:`HealthMonitor` probes every QPU in its own thread at its own interval, each probe under
its own deadline, and calls ``on_change(name, healthy)`` whenever ``is_healthy(name)`` changes
value. A QPU starts as
not healthy (unknown) until its first probe, so a consumer that reads :meth:`snapshot` first and
then follows ``on_change`` never misses a state. Probing never raises out of the thread.
"""

from __future__ import annotations

import importlib
import os
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qubelet import klog
from qubelet.inventory import fake_backends
from qubelet.inventory.config import QPUConfig

__all__ = ["HealthMonitor", "ProbeResult", "probe_once"]

log = klog.get_logger("qubelet.inventory.health")

FAKE_BACKENDS_MODULE = fake_backends.MODULE

_fake_cache: dict[str, object] = {}
_fake_lock = threading.Lock()


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe; ``reason`` says why in a few words (logged on transitions)."""

    healthy: bool
    latency_seconds: float
    reason: str


def _probe_fake(qpu: QPUConfig) -> tuple[bool, str]:
    class_name = qpu.backend.split(":", 1)[1]
    exported = fake_backends.exported_names()
    if exported is not None and class_name not in exported:  # a typo: no import, no waiting
        return False, f"no fake backend {class_name} in {FAKE_BACKENDS_MODULE}"
    with _fake_lock:
        if class_name not in _fake_cache:
            module = importlib.import_module(FAKE_BACKENDS_MODULE)
            factory = getattr(module, class_name, None)
            if factory is None or not callable(factory):
                return False, f"no fake backend {class_name} in {FAKE_BACKENDS_MODULE}"
            backend = factory()
            if int(getattr(backend, "num_qubits", 0)) <= 0:
                return False, f"fake backend {class_name} has no qubits"
            _fake_cache[class_name] = backend
    return True, f"fake backend {class_name} available"


def _probe_http(qpu: QPUConfig) -> tuple[bool, str]:
    assert qpu.health.url is not None  # guaranteed by config validation
    request = urllib.request.Request(qpu.health.url, method="GET", headers={"User-Agent": "qubelet-health"})
    try:
        with urllib.request.urlopen(request, timeout=qpu.health.timeout_seconds) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
    if 200 <= status < 300:
        return True, f"HTTP {status}"
    return False, f"HTTP {status}"


def _probe_file(qpu: QPUConfig) -> tuple[bool, str]:
    assert qpu.health.path is not None  # guaranteed by config validation
    try:
        with open(qpu.health.path, encoding="utf-8", errors="replace") as handle:
            content = handle.read(4096).strip()
    except FileNotFoundError:
        return False, "health file missing"
    if content == "healthy":
        return True, "health file says healthy"
    return False, f"health file says {content[:40]!r}"


_PROBES: dict[str, Callable[[QPUConfig], tuple[bool, str]]] = {
    "fake": _probe_fake,
    "http": _probe_http,
    "file": _probe_file,
}


def needs_no_token(qpu: QPUConfig) -> bool:
    """True for ``fake:`` backends: simulators that run without credentials."""
    return qpu.backend.startswith("fake:")


def tokens_file_problem(qpu: QPUConfig) -> str | None:
    """Why ``qpu``'s ``tokensFile`` cannot be handed to a container, or None when it can.

    Allocate and NodePrepareResources bind-mount this host file into the container; a missing
    one makes the runtime fail the pod's start (or mount an empty directory), long after the
    scheduler chose this QPU. The content is never read here, so a token is never logged.
    A ``fake:`` backend is a simulator that authenticates nothing: it needs no token, so an absent
    file is no problem (the container then gets no token mount at all).
    """
    if not qpu.tokens_file or needs_no_token(qpu):
        return None
    try:
        st = os.stat(qpu.tokens_file)
    except OSError as exc:
        return f"tokensFile {qpu.tokens_file}: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"tokensFile {qpu.tokens_file}: not a regular file"
    return None


def probe_once(qpu: QPUConfig) -> ProbeResult:
    """Probe ``qpu`` once with its configured probe; any exception is an unhealthy result.

    A QPU whose ``tokensFile`` is missing is unhealthy whatever its probe says: a container
    given it could not authenticate.
    """
    start = time.perf_counter()
    try:
        problem = tokens_file_problem(qpu)
        if problem is not None:
            healthy, reason = False, problem
        else:
            healthy, reason = _PROBES[qpu.health.probe](qpu)
    except Exception as exc:  # a probe must never take the daemon down
        healthy, reason = False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return ProbeResult(healthy=healthy, latency_seconds=time.perf_counter() - start, reason=reason)


#: A fake probe builds the IQM fake backend once; on a loaded node that first import takes tens
#: of seconds of local CPU work (not a hang), so it gets this much time rather than
#: ``timeoutSeconds``.
FAKE_PROBE_MIN_SECONDS = 120.0
#: Extra time over ``timeoutSeconds`` before a probe counts as hung: urllib's timeout applies to
#: each socket operation, so a server that answers byte by byte can exceed it a little.
PROBE_GRACE_SECONDS = 1.0


def probe_deadline(qpu: QPUConfig) -> float:
    """Seconds one probe of ``qpu`` may take before it counts as failed (hung)."""
    seconds = qpu.health.timeout_seconds + PROBE_GRACE_SECONDS
    if qpu.health.probe == "fake":
        seconds = max(seconds, FAKE_PROBE_MIN_SECONDS)
    return seconds


class _Inflight:
    """One probe running in its own thread; ``result`` is set when it returns."""

    def __init__(self, probe: Callable[[QPUConfig], ProbeResult], qpu: QPUConfig) -> None:
        self.done = threading.Event()
        self.result: ProbeResult | None = None
        self._probe = probe
        self._qpu = qpu
        self.started = time.monotonic()
        threading.Thread(target=self._run, name=f"qpu-probe-{qpu.name}", daemon=True).start()

    def _run(self) -> None:
        try:
            self.result = self._probe(self._qpu)
        except Exception as exc:  # a replaced probe may raise; treat as unhealthy
            self.result = ProbeResult(False, 0.0, f"probe raised {type(exc).__name__}")
        self.done.set()


class HealthMonitor:
    """Probes QPUs periodically, concurrently, each under its own deadline; reports transitions.

    Every QPU has its own thread and every probe runs in a thread of its own, bounded by
    :func:`probe_deadline`: one QPU whose HTTP probe hangs is reported Unhealthy ("probe timed
    out") when its own deadline passes and never delays another QPU's health. A hung probe is
    not started again while it still runs (no pile-up of threads); the QPU stays Unhealthy
    ("previous probe still running") until it returns. ``on_probe(name, result)`` (optional)
    sees every probe result, for metrics. ``probe`` may be replaced (tests, benchmarks); it
    defaults to :func:`probe_once`.

    Damping (``flags.healthFlipAfterProbes``, ``flags.healthHoldSeconds``): the first result is
    published at once; after that a QPU's published health changes only when ``flip_after``
    consecutive probes disagree with it and it has held for ``hold_seconds``, so a flapping QPU
    does not turn into a storm of ListAndWatch updates and slice writes.
    """

    def __init__(
        self,
        qpus: Sequence[QPUConfig],
        on_change: Callable[[str, bool], None] | None = None,
        *,
        on_probe: Callable[[str, ProbeResult], None] | None = None,
        probe: Callable[[QPUConfig], ProbeResult] = probe_once,
        flip_after: int = 1,
        hold_seconds: float = 0.0,
    ) -> None:
        """Nothing is probed until :meth:`check_now` or :meth:`start`."""
        self.flip_after = max(1, flip_after)
        self.hold_seconds = hold_seconds
        self._streak: dict[str, int] = {}
        self._published_at: dict[str, float] = {}
        self._qpus = {qpu.name: qpu for qpu in qpus}
        self._on_change = on_change
        self._on_probe = on_probe
        self._probe = probe
        self._lock = threading.Lock()
        self._state: dict[str, bool | None] = dict.fromkeys(self._qpus)
        self._reasons: dict[str, str] = dict.fromkeys(self._qpus, "not probed yet")
        self._inflight: dict[str, _Inflight] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _bounded_probe(self, qpu: QPUConfig, stop: threading.Event | None) -> ProbeResult | None:
        """Run (or keep waiting for) ``qpu``'s probe until its deadline; None when stopped."""
        with self._lock:
            inflight = self._inflight.get(qpu.name)
            if inflight is not None and inflight.done.is_set():
                inflight = None
            if inflight is None:
                inflight = self._inflight[qpu.name] = _Inflight(self._probe, qpu)
                fresh = True
            else:
                fresh = False
        if not fresh:
            return ProbeResult(False, time.monotonic() - inflight.started, "previous probe still running")
        deadline = inflight.started + probe_deadline(qpu)
        while not inflight.done.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if stop is not None and stop.is_set():
                return None
            if time.monotonic() >= deadline:
                return ProbeResult(False, time.monotonic() - inflight.started, "probe timed out")
        assert inflight.result is not None
        return inflight.result

    def _run_probe(self, qpu: QPUConfig, stop: threading.Event | None = None) -> bool | None:
        result = self._bounded_probe(qpu, stop)
        if result is None:
            return None
        if self._on_probe is not None:
            try:
                self._on_probe(qpu.name, result)
            except Exception as exc:
                log.error("on_probe callback failed", err=exc, qpu=qpu.name)
        now = time.monotonic()
        with self._lock:
            previous = self._state[qpu.name]
            self._reasons[qpu.name] = result.reason
            if previous is not None and previous != result.healthy:
                streak = self._streak[qpu.name] = self._streak.get(qpu.name, 0) + 1
                held = now - self._published_at.get(qpu.name, 0.0)
                if streak < self.flip_after or held < self.hold_seconds:
                    return previous  # damped: not yet enough agreeing probes, or held too briefly
            self._streak[qpu.name] = 0
            if previous != result.healthy:
                self._state[qpu.name] = result.healthy
                self._published_at[qpu.name] = now
        before = bool(previous)
        if before != result.healthy or previous is None:
            # The first result is logged too: an Unhealthy QPU at start-up says why.
            log.info(
                "QPU health changed" if previous is not None else "QPU health known",
                qpu=qpu.name,
                healthy=result.healthy,
                reason=result.reason,
                latencySeconds=round(result.latency_seconds, 4),
            )
        if before != result.healthy and self._on_change is not None:
            try:
                self._on_change(qpu.name, result.healthy)
            except Exception as exc:
                log.error("on_change callback failed", err=exc, qpu=qpu.name)
        return result.healthy

    def check_now(self, stop: threading.Event | None = None) -> dict[str, bool]:
        """Probe every QPU once, all at once, each under its deadline; returns the snapshot.

        Returns early, with what is known so far, as soon as ``stop`` is set: a SIGTERM during
        start-up must not wait for a hung probe (Kubernetes kills the pod 30 s after SIGTERM).
        """
        threads = [
            threading.Thread(
                target=self._run_probe, args=(qpu, stop), name=f"qpu-check-{qpu.name}", daemon=True
            )
            for qpu in self._qpus.values()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.05)
                if stop is not None and stop.is_set():
                    return self.snapshot()
        return self.snapshot()

    def is_healthy(self, name: str) -> bool:
        """Whether ``name`` passed its last probe (False before its first probe or if unknown)."""
        with self._lock:
            return bool(self._state.get(name))

    def snapshot(self) -> dict[str, bool]:
        """Health of every QPU, by name."""
        with self._lock:
            return {name: bool(state) for name, state in self._state.items()}

    def reasons(self) -> dict[str, str]:
        """Why each QPU has its health: the reason of its last probe result, by name."""
        with self._lock:
            return dict(self._reasons)

    def start(self) -> None:
        """Start one probing thread per QPU (idempotent); each probes at once, then every interval."""
        if any(t.is_alive() for t in self._threads):
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._loop, args=(qpu,), name=f"qpu-health-{qpu.name}", daemon=True)
            for qpu in self._qpus.values()
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the probing threads and wait (bounded, 5 s in all) for them to finish."""
        self._stop.set()
        threads, self._threads = self._threads, []
        deadline = time.monotonic() + 5.0
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _loop(self, qpu: QPUConfig) -> None:
        while not self._stop.is_set():
            try:
                self._run_probe(qpu, self._stop)
            except Exception as exc:  # never let the thread die
                log.error("health loop error", err=exc, qpu=qpu.name)
            self._stop.wait(qpu.health.interval_seconds)
