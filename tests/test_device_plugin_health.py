"""Health probes (file, http, fake) and the monitor's transition reporting."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from qubelet.inventory import (
    HealthMonitor,
    ProbeResult,
    QPUConfig,
    fake_backends,
    health,
    parse_config,
    probe_once,
)

pytestmark = pytest.mark.timeout(60)


def qpu(health: dict[str, Any], backend: str = "fake:IQMFakeAdonis", name: str = "q") -> QPUConfig:
    entry = {
        "name": name,
        "vendor": "IQM",
        "model": "Adonis",
        "qubits": 5,
        "technology": "superconducting",
        "location": "onprem",
        "backend": backend,
        "health": health,
    }
    if backend == "iqm":
        entry["endpoint"] = "http://127.0.0.1:1/"
    return parse_config({"version": "v1", "qpus": [entry]}).qpus[0]


def test_file_probe(tmp_path: Path) -> None:
    path = tmp_path / "health"
    q = qpu({"probe": "file", "path": str(path)})
    missing = probe_once(q)
    assert not missing.healthy and missing.reason == "health file missing"
    path.write_text("  healthy\n")
    assert probe_once(q).healthy
    path.write_text("maintenance")
    result = probe_once(q)
    assert not result.healthy and "maintenance" in result.reason
    assert result.latency_seconds >= 0


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/health", handler
    server.shutdown()
    server.server_close()


def test_http_probe(http_server: tuple[str, type[_Handler]]) -> None:
    url, handler = http_server
    q = qpu({"probe": "http", "url": url, "timeoutSeconds": 2}, backend="iqm")
    ok = probe_once(q)
    assert ok.healthy and ok.reason == "HTTP 200"
    handler.status = 503
    result = probe_once(q)
    assert not result.healthy and result.reason == "HTTP 503"


def test_http_probe_unreachable_is_unhealthy_not_an_exception() -> None:
    q = qpu({"probe": "http", "url": "http://127.0.0.1:1/health", "timeoutSeconds": 1}, backend="iqm")
    result = probe_once(q)
    assert not result.healthy
    assert "URLError" in result.reason


def test_fake_probe_unknown_class_is_unhealthy_without_importing_iqm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt class is answered from iqm-client's source: no import (tens of seconds)."""

    def no_import(name: str) -> None:
        raise AssertionError(f"imported {name}")

    monkeypatch.setattr(health, "importlib", SimpleNamespace(import_module=no_import))
    result = probe_once(qpu({"probe": "fake"}, backend="fake:IQMFakeNoSuchThing"))
    assert not result.healthy
    assert result.reason == "no fake backend IQMFakeNoSuchThing in iqm.qiskit_iqm.fake_backends"


# The real import of iqm-client's fake backends: ~8 s of CPU, over a minute of wall time on a
# loaded 2-core machine when its bytecode is not compiled yet (a fresh CI venv).
@pytest.mark.timeout(300)
def test_fake_backend_names_read_from_source_match_the_import() -> None:
    import iqm.qiskit_iqm.fake_backends as module

    exported = fake_backends.exported_names()
    assert exported is not None
    # the backends are factory functions (IQMFakeAdonis()), next to classes; modules are neither
    factories = {n for n, v in vars(module).items() if callable(v) and not isinstance(v, ModuleType)}
    assert "IQMFakeAdonis" in factories and factories <= exported
    assert probe_once(qpu({"probe": "fake"})).healthy  # a class it has: imported and built


def test_monitor_reports_only_transitions(tmp_path: Path) -> None:
    path = tmp_path / "h"
    q = qpu({"probe": "file", "path": str(path), "intervalSeconds": 0.02})
    events: list[tuple[str, bool]] = []
    seen = threading.Event()

    def on_change(name: str, healthy: bool) -> None:
        events.append((name, healthy))
        seen.set()

    monitor = HealthMonitor([q], on_change=on_change)
    assert monitor.snapshot() == {"q": False}  # unknown until probed
    assert monitor.check_now() == {"q": False}
    assert events == []  # unknown -> unhealthy is no change of is_healthy()
    monitor.start()
    try:
        path.write_text("healthy")
        assert seen.wait(2)
        assert monitor.is_healthy("q")
        time.sleep(0.1)  # several more probes, all healthy: no further events
        assert events == [("q", True)]
        seen.clear()
        path.unlink()
        assert seen.wait(2)
        assert events == [("q", True), ("q", False)]
    finally:
        monitor.stop()
    assert not monitor.is_healthy("nope")


def test_monitor_survives_raising_probe_and_callback() -> None:
    q = qpu({"probe": "fake"})
    calls = 0

    def bad_probe(_: QPUConfig) -> ProbeResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            return ProbeResult(True, 0.0, "ok")
        raise RuntimeError("boom")

    def bad_callback(name: str, healthy: bool) -> None:
        raise ValueError("callback bug")

    monitor = HealthMonitor([q], on_change=bad_callback, probe=bad_probe)
    assert monitor.check_now() == {"q": True}
    assert monitor.check_now() == {"q": False}
