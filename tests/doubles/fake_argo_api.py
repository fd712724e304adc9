"""FakeArgoApiServer: kube-apiserver with Argo's Workflow CRD, over real HTTP, for ``qubelet submit``.

The real ``kubernetes`` client talks to it: same paths, verbs, status codes and JSON bodies
(``Status`` objects for 404/409/422) as the API server, for Workflows and ResourceClaimTemplates.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WF_PATH = "/apis/argoproj.io/v1alpha1/namespaces/qubelet-workloads/workflows"
RCT_PATH = "/apis/resource.k8s.io/v1/namespaces/qubelet-workloads/resourceclaimtemplates"


class FakeArgoApiServer(ThreadingHTTPServer):
    """Stands in for kube-apiserver with Argo's Workflow CRD installed: POST creates (assigning a
    name from generateName), GET returns the object with ``status.phase`` advancing through
    ``phases`` one step per read, and ResourceClaimTemplates answer 409 when they exist."""

    def __init__(self, phases: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.phases = phases
        self.reads = 0
        self.created: list[tuple[str, dict[str, Any], str]] = []
        self.existing_rcts: set[str] = {"qpu-min-5q"}


class _Handler(BaseHTTPRequestHandler):
    server: FakeArgoApiServer

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        path, _, query = self.path.partition("?")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if path == RCT_PATH:
            name = body["metadata"]["name"]
            if name in self.server.existing_rcts:
                return self._reply(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
            self.server.created.append(("ResourceClaimTemplate", body, query))
            return self._reply(201, body)
        if path != WF_PATH:
            return self._reply(404, {"kind": "Status", "code": 404, "message": f"no route {path}"})
        if body.get("kind") != "Workflow" or "templates" not in body.get("spec", {}):
            return self._reply(
                422, {"kind": "Status", "code": 422, "message": "Workflow.spec.templates: Required"}
            )
        body["metadata"]["name"] = body["metadata"].pop("generateName", "wf-") + "abc12"
        self.server.created.append(("Workflow", body, query))
        return self._reply(201, body)

    def do_GET(self) -> None:
        if not self.path.startswith(WF_PATH + "/"):
            return self._reply(404, {"kind": "Status", "code": 404, "message": "not found"})
        name = self.path.rsplit("/", 1)[1]
        created = [b for kind, b, _ in self.server.created if kind == "Workflow"]
        if not created or created[-1]["metadata"]["name"] != name:
            return self._reply(404, {"kind": "Status", "code": 404, "message": f"workflows {name} not found"})
        phase = self.server.phases[min(self.server.reads, len(self.server.phases) - 1)]
        self.server.reads += 1
        obj = dict(created[-1])
        obj["status"] = {"phase": phase, "progress": f"{self.server.reads}/3"} if phase else {}
        return self._reply(200, obj)


@contextmanager
def serving(phases: list[str]) -> Iterator[FakeArgoApiServer]:
    """Run a :class:`FakeArgoApiServer` on a free local port for the ``with`` block."""
    server = FakeArgoApiServer(phases)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
