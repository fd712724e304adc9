"""Test double for a Prometheus server's HTTP query API.

The real server runs in ``tests/test_pushgateway_real.py`` and ``tests/test_prometheus_real.py``
(when the Debian package is installed); this double stays for what the real one cannot be made
to produce on demand: a garbage answer (a proxy's HTML error page), exact per-backend values
without running a workload, and the parity check's reference (the same telemetry handed over
directly instead of through PromQL).

It serves ``/api/v1/query`` and ``/api/v1/query_range`` over real HTTP with the real response
JSON (``status``, ``data``, ``resultType`` vector/matrix, ``[ts, "value"]`` pairs). It answers
only the queries the policy sends (``policy.telemetry_sources.PROMQL``, any window) and, like
Prometheus, answers anything else with ``status: error`` and ``errorType: bad_data``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from policy.telemetry_sources import PROMQL


@dataclass
class FakeTelemetry:
    """What the double's Prometheus "knows": per-backend values of each policy query."""

    mean_run_seconds: dict[str, float] = field(default_factory=dict)
    failure_ratio: dict[str, float] = field(default_factory=dict)
    queue_depth: dict[str, float] = field(default_factory=dict)
    backend_up: dict[str, float] = field(default_factory=dict)
    unhealthy_devices: float | None = None
    #: Kueue LocalQueue name -> pending workloads
    kueue_pending: dict[str, float] = field(default_factory=dict)
    #: QPU inventory name -> the DRA driver's health probe (1 passes, 0 fails)
    qpu_healthy: dict[str, float] = field(default_factory=dict)


#: The values the policy-source unit tests expect.
DEFAULT_TELEMETRY = FakeTelemetry(
    mean_run_seconds={"cpu": 0.004, "qpu:apollo": 0.12},
    failure_ratio={"cpu": 0.0, "qpu:apollo": 0.25},
    queue_depth={"cpu": 3.0, "qpu:apollo": 40.0},
    backend_up={"cpu": 1.0, "qpu:apollo": 0.0},
    unhealthy_devices=2.0,
    kueue_pending={"qubelet-cpu": 0.0, "qubelet-qpu": 7.0},
)


def _pattern(template: str) -> re.Pattern[str]:
    """A regex matching ``template`` with any ``{window}``."""
    parts = template.replace("{{", "{").replace("}}", "}").split("{window}")
    return re.compile("^" + r"\d+[smhd]".join(re.escape(p) for p in parts) + "$")


_QUERIES = {name: _pattern(template) for name, template in PROMQL.items()}


class FakePrometheus:
    """The double; use as a context manager. ``mode="garbage"`` answers non-JSON.

    Args:
        mode: ``ok`` or ``garbage``.
        telemetry: the values to answer with (default :data:`DEFAULT_TELEMETRY`).
    """

    def __init__(self, mode: str = "ok", telemetry: FakeTelemetry | None = None) -> None:
        self.mode = mode
        self.telemetry = telemetry if telemetry is not None else DEFAULT_TELEMETRY
        self.queries: list[tuple[str, str]] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query).get("query", [""])[0]
                double.queries.append((url.path, query))
                status = 200
                if double.mode == "garbage":
                    body = b"<html>502 bad gateway</html>"
                else:
                    answer = double.answer(url.path, query)
                    status = 200 if answer["status"] == "success" else 400
                    body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path: str, query: str) -> dict[str, Any]:
        """The JSON body Prometheus would send for ``query`` on ``path``."""
        name = next((n for n, pattern in _QUERIES.items() if pattern.match(query)), None)
        if name is None or path not in ("/api/v1/query", "/api/v1/query_range"):
            return {"status": "error", "errorType": "bad_data", "error": f"unknown query {query!r}"}
        now = time.time()
        if name == "unhealthy_devices":
            value = self.telemetry.unhealthy_devices
            total = [] if value is None else [{"metric": {}, "value": [now, str(value)]}]
            return {"status": "success", "data": {"resultType": "vector", "result": total}}
        per_backend: dict[str, float] = getattr(self.telemetry, name)
        label = {"kueue_pending": "name", "qpu_healthy": "qpu"}.get(name, "backend")
        if path == "/api/v1/query_range":
            result = [
                {
                    "metric": {label: b},
                    "values": [[now - 120, "NaN"], [now - 60, str(v * 0.9)], [now, str(v)]],
                }
                for b, v in per_backend.items()
            ]
            return {"status": "success", "data": {"resultType": "matrix", "result": result}}
        vector = [{"metric": {label: b}, "value": [now, str(v)]} for b, v in per_backend.items()]
        return {"status": "success", "data": {"resultType": "vector", "result": vector}}

    def __enter__(self) -> FakePrometheus:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
