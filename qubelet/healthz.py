"""One HTTP port per daemon for Prometheus and kubelet's probes: ``/metrics``, ``/healthz``, ``/readyz``.

prometheus_client's own server answers every path with the metrics page, so an ``httpGet`` probe
on it is always 200 and proves nothing. This server runs the daemon's own checks instead:
``/healthz`` (liveness: the process can still do its job; a failure makes kubelet restart the
container) and ``/readyz`` (readiness: it is doing its job now, e.g. registered with kubelet).
A failing check answers 503 with one line naming it, which ``kubectl describe pod`` shows in
the probe's event. Checks run on the request thread and must be cheap (no network calls).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

#: A check returns ``""`` when fine, else one line saying what is wrong.
Check = Callable[[], str]

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
METRICS_PATH = "/metrics"


def run_checks(checks: Mapping[str, Check]) -> tuple[bool, str]:
    """Run every check; (all fine, body) where body lists ``ok <name>`` / ``failed <name>: why``."""
    lines = []
    ok = True
    for name, check in checks.items():
        try:
            problem = check()
        except Exception as exc:  # a crashing check is a failing check, not a crashed server
            problem = f"check raised {type(exc).__name__}: {exc}"
        if problem:
            ok = False
            lines.append(f"failed {name}: {problem}")
        else:
            lines.append(f"ok {name}")
    return ok, "\n".join(lines) + "\n"


class HealthServer:
    """Serves a metrics registry and liveness/readiness checks on one port (daemon thread)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        liveness: Mapping[str, Check] | None = None,
        readiness: Mapping[str, Check] | None = None,
    ) -> None:
        """Serve ``registry`` and run ``liveness``/``readiness`` checks by name."""
        self.registry = registry
        self.liveness: dict[str, Check] = dict(liveness or {})
        self.readiness: dict[str, Check] = dict(readiness or {})
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == METRICS_PATH:
                    self._send(200, generate_latest(owner.registry), CONTENT_TYPE_LATEST)
                elif path in (LIVENESS_PATH, READINESS_PATH):
                    checks = owner.liveness if path == LIVENESS_PATH else owner.readiness
                    ok, body = run_checks(checks)
                    self._send(200 if ok else 503, body.encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found\n", "text/plain; charset=utf-8")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # probes every 10 s: quiet
                return

        return Handler

    def start(self, port: int, addr: str = "0.0.0.0") -> int:
        """Listen on ``addr:port`` (0: any free port); returns the bound port. Raises OSError."""
        server = ThreadingHTTPServer((addr, port), self._handler())
        server.daemon_threads = True
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, name="healthz", daemon=True)
        self.thread.start()
        return int(server.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the port."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
