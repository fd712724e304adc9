"""Test double for a Prometheus server (cannot run here) answering any PromQL a test scripts.

``tests/doubles/fake_prometheus.py`` answers the policy's queries from per-backend values; this
one serves ``/api/v1/query`` over real HTTP for arbitrary expressions (the admission check's
``admission_check.telemetry.PROMQL``), with per-QPU labels a test chooses.

It answers instant queries with the real response JSON (``status``, ``data.resultType`` =
``vector``, ``result`` items of ``metric`` labels and a ``[unix time, "value"]`` pair). A test
sets the series each PromQL expression returns (``set(query, [(labels, value), ...])``); an
expression it did not set answers an empty vector, as Prometheus does for absent series;
``down()`` makes every request fail at the HTTP level (503), as a dead Prometheus behind a proxy.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ScriptedPrometheus:
    """Serves configured instant-query answers; start with ``with ScriptedPrometheus() as prom:``."""

    def __init__(self) -> None:
        self.answers: dict[str, list[tuple[dict[str, str], float]]] = {}
        self.queries: list[str] = []
        self.available = True
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query).get("query", [""])[0]
                double.queries.append(query)
                if not double.available:
                    self.send_error(503, "Service Unavailable")
                    return
                if url.path != "/api/v1/query" or not query:
                    status, body = 400, {"status": "error", "errorType": "bad_data", "error": "missing query"}
                else:
                    status, body = 200, double.vector(query)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def set(self, query: str, series: list[tuple[dict[str, str], float]]) -> None:
        """Answer ``query`` (the exact PromQL text) with these series."""
        self.answers[query] = list(series)

    def down(self) -> None:
        """Fail every request from now on."""
        self.available = False

    def vector(self, query: str) -> dict[str, Any]:
        """The API's answer to an instant query."""
        now = time.time()
        result = [
            {"metric": labels, "value": [now, repr(float(v))]} for labels, v in self.answers.get(query, [])
        ]
        return {"status": "success", "data": {"resultType": "vector", "result": result}}

    def __enter__(self) -> ScriptedPrometheus:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
