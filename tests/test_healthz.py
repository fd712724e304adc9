"""The daemons' probe endpoints: /healthz and /readyz run real checks, /metrics the registry."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from qubelet.healthz import HealthServer


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_checks_decide_the_status() -> None:
    registry = CollectorRegistry()
    Counter("qubelet_test_events", "events", registry=registry).inc()
    state = {"registered": ""}

    def boom() -> str:
        raise RuntimeError("socket vanished")

    server = HealthServer(
        registry,
        liveness={"serving": lambda: "", "crashing": boom},
        readiness={"registration": lambda: state["registered"]},
    )
    port = server.start(0, "127.0.0.1")
    try:
        assert get(port, "/readyz") == (200, "ok registration\n")
        state["registered"] = "waiting for kubelet"
        assert get(port, "/readyz") == (503, "failed registration: waiting for kubelet\n")
        status, body = get(port, "/healthz")
        assert status == 503
        assert body == "ok serving\nfailed crashing: check raised RuntimeError: socket vanished\n"
        status, body = get(port, "/metrics")
        assert status == 200 and "qubelet_test_events_total 1.0" in body
        assert get(port, "/other")[0] == 404
    finally:
        server.stop()
