"""Health probes per QPU and a monitor that reports transitions.

Three probe kinds, chosen per QPU in the config:

- ``fake``: the embedded IQM fake backend (a noisy simulator) can be imported and constructed.
  It is constructed once and cached: the check is "this node can run it", not a benchmark.
- ``http``: ``GET health.url`` with ``health.timeoutSeconds``; any 2xx is healthy. For a real IQM
  server. No token is sent: the health URL must not need one, and tokens are never logged.
- ``file``: the file at ``health.path`` contains ``healthy`` (after stripping); anything else, or a
  missing file, is unhealthy. For admins (drain a QPU by writing ``maintenance``) and for tests.

:class:`HealthMonitor` runs every probe in ONE daemon thread, each QPU at its own interval, and
calls ``on_change(name, healthy)`` whenever ``is_healthy(name)`` changes value. A QPU starts as
not healthy (unknown) until its first probe, so a consumer that reads :meth:`snapshot` first and
then follows ``on_change`` never misses a state. Probing never raises out of the thread.
"""

from __future__ import annotations

import importlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qubelet import klog
from qubelet.inventory.config import QPUConfig

__all__ = ["HealthMonitor", "ProbeResult", "probe_once"]

log = klog.get_logger("qubelet.inventory.health")

FAKE_BACKENDS_MODULE = "iqm.qiskit_iqm.fake_backends"

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


def probe_once(qpu: QPUConfig) -> ProbeResult:
    """Probe ``qpu`` once with its configured probe; any exception is an unhealthy result."""
    start = time.perf_counter()
    try:
        healthy, reason = _PROBES[qpu.health.probe](qpu)
    except Exception as exc:  # a probe must never take the daemon down
        healthy, reason = False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return ProbeResult(healthy=healthy, latency_seconds=time.perf_counter() - start, reason=reason)


class HealthMonitor:
    """Probes QPUs periodically in one daemon thread and reports health transitions.

    ``on_probe(name, result)`` (optional) sees every probe result, for metrics. ``probe`` may be
    replaced (tests, benchmarks); it defaults to :func:`probe_once`.
    """

    def __init__(
        self,
        qpus: Sequence[QPUConfig],
        on_change: Callable[[str, bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        on_probe: Callable[[str, ProbeResult], None] | None = None,
        probe: Callable[[QPUConfig], ProbeResult] = probe_once,
    ) -> None:
        self._qpus = {qpu.name: qpu for qpu in qpus}
        self._on_change = on_change
        self._on_probe = on_probe
        self._probe = probe
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, bool | None] = dict.fromkeys(self._qpus)
        self._next_due: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run_probe(self, qpu: QPUConfig) -> bool:
        try:
            result = self._probe(qpu)
        except Exception as exc:  # a replaced probe may raise; treat as unhealthy
            result = ProbeResult(False, 0.0, f"probe raised {type(exc).__name__}")
        if self._on_probe is not None:
            try:
                self._on_probe(qpu.name, result)
            except Exception as exc:
                log.error("on_probe callback failed", err=exc, qpu=qpu.name)
        with self._lock:
            before = bool(self._state[qpu.name])
            self._state[qpu.name] = result.healthy
            self._next_due[qpu.name] = self._clock() + qpu.health.interval_seconds
        if before != result.healthy:
            log.info(
                "QPU health changed",
                qpu=qpu.name,
                healthy=result.healthy,
                reason=result.reason,
                latencySeconds=round(result.latency_seconds, 4),
            )
            if self._on_change is not None:
                try:
                    self._on_change(qpu.name, result.healthy)
                except Exception as exc:
                    log.error("on_change callback failed", err=exc, qpu=qpu.name)
        return result.healthy

    def check_now(self) -> dict[str, bool]:
        """Probe every QPU once, synchronously (start-up, tests); returns the new snapshot."""
        for qpu in self._qpus.values():
            self._run_probe(qpu)
        return self.snapshot()

    def is_healthy(self, name: str) -> bool:
        """Whether ``name`` passed its last probe (False before its first probe or if unknown)."""
        with self._lock:
            return bool(self._state.get(name))

    def snapshot(self) -> dict[str, bool]:
        """Health of every QPU, by name."""
        with self._lock:
            return {name: bool(state) for name, state in self._state.items()}

    def start(self) -> None:
        """Start the probing thread (idempotent). QPUs not yet probed are probed at once."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="qpu-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the probing thread and wait (bounded) for it to finish."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                now = self._clock()
                for name, qpu in self._qpus.items():
                    with self._lock:
                        due = self._next_due.get(name, now)
                    if due <= now and not self._stop.is_set():
                        self._run_probe(qpu)
                with self._lock:
                    next_due = min(self._next_due.values(), default=self._clock() + 1.0)
                wait = max(0.0, min(next_due - self._clock(), 1.0))
            except Exception as exc:  # never let the thread die
                log.error("health loop error", err=exc)
                wait = 1.0
            self._stop.wait(wait)
