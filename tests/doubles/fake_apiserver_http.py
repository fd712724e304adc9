"""FakeAPIServerHTTP: the API double on the wire, for daemons started as separate processes.

A daemon run exactly as its DaemonSet runs it (``tests/test_node_realistic.py``) talks to the
API server the way every pod does: in-cluster config, ``https://$KUBERNETES_SERVICE_HOST``,
the projected service-account token as a bearer token and ``ca.crt`` to verify the server. This
double serves that: TLS with a throwaway self-signed certificate (made with the ``openssl``
CLI), bearer-token authentication (401 otherwise), and the REST paths the driver and the node
agent use, backed by :class:`~doubles.fake_resource_api.FakeResourceAPI` (so every write is
validated like the real server's). Errors go back as ``Status`` documents with the HTTP code.

Served paths (the ``kubernetes`` client's own URLs):

- ``GET /apis`` (discovery: ``resource.k8s.io/v1`` is served) and ``GET /api/v1/nodes/<name>``
- ``GET|POST /apis/resource.k8s.io/v1/resourceslices`` (label and field selectors)
- ``PUT|DELETE /apis/resource.k8s.io/v1/resourceslices/<name>``
- ``GET /apis/resource.k8s.io/v1/namespaces/<ns>/resourceclaims/<name>``
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from doubles.fake_resource_api import FakeResourceAPI, _decode, _encode
from qubelet.errors import ApiError

SLICES = "/apis/resource.k8s.io/v1/resourceslices"
CLAIMS_PREFIX = "/apis/resource.k8s.io/v1/namespaces/"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key; needs ``openssl``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl not installed")
    cert, key = directory / "apiserver.crt", directory / "apiserver.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


class FakeAPIServerHTTP:
    """HTTPS front for a :class:`FakeResourceAPI`; ``nodes`` maps node name to kubelet version."""

    def __init__(
        self, api: FakeResourceAPI, token: str, cert: Path, key: Path, nodes: dict[str, str] | None = None
    ) -> None:
        """Bind a loopback port with TLS (``cert``/``key``); ``token`` is the one bearer token."""
        self.api = api
        self.token = token
        self.nodes = dict(nodes or {})
        self.requests: list[tuple[str, str]] = []
        handler = self._handler()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-apiserver", daemon=True)

    def start(self) -> FakeAPIServerHTTP:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        self._server.shutdown()
        self._server.server_close()

    # -- routing ---------------------------------------------------------------------------
    def handle(self, method: str, url: str, body: Any) -> tuple[int, Any]:
        """(HTTP status, JSON document) for one request; the API's errors become Status."""
        parts = urlsplit(url)
        path, query = parts.path.rstrip("/"), parse_qs(parts.query)
        self.requests.append((method, path))
        try:
            return 200, self._route(method, path, query, body)
        except ApiError as exc:
            code = exc.status or 500
            return code, {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": str(exc),
                "reason": exc.reason,
                "code": code,
            }

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        if (method, path) == ("GET", "/apis"):
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": "resource.k8s.io",
                        "versions": [{"groupVersion": "resource.k8s.io/v1", "version": "v1"}],
                        "preferredVersion": {"groupVersion": "resource.k8s.io/v1", "version": "v1"},
                    }
                ],
            }
        if method == "GET" and path.startswith("/api/v1/nodes/"):
            name = path.rsplit("/", 1)[1]
            if name not in self.nodes:
                raise ApiError(f'nodes "{name}" not found', status=404, reason="NotFound")
            return {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name))},
                "status": {"nodeInfo": _node_info(self.nodes[name])},
            }
        if path == SLICES and method == "GET":
            items = self.api.list_resource_slices(
                query.get("labelSelector", [""])[0], query.get("fieldSelector", [""])[0]
            )
            return {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceSliceList",
                "metadata": {},
                "items": [_encode(i) for i in items],
            }
        if path == SLICES and method == "POST":
            return _encode(self.api.create_resource_slice(_decode(body, "V1ResourceSlice")))
        if path.startswith(SLICES + "/"):
            name = path[len(SLICES) + 1 :]
            if method == "PUT":
                return _encode(self.api.replace_resource_slice(name, _decode(body, "V1ResourceSlice")))
            if method == "DELETE":
                self.api.delete_resource_slice(name)
                return {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if method == "GET" and path.startswith(CLAIMS_PREFIX) and "/resourceclaims/" in path:
            namespace, _, name = path[len(CLAIMS_PREFIX) :].partition("/resourceclaims/")
            return _encode(self.api.read_resource_claim(namespace, name))
        raise ApiError(f"the server could not find the requested resource ({method} {path})", 404, "NotFound")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                scheme, _, credential = (self.headers.get("Authorization") or "").partition(" ")
                if scheme.lower() != "bearer" or credential.strip() != owner.token:  # scheme: any case
                    self._reply(
                        401, {"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401}
                    )
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                code, doc = owner.handle(self.command, self.path, body)
                self._reply(code, doc)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def _reply(self, code: int, doc: Any) -> None:
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler


def _node_info(kubelet_version: str) -> dict[str, str]:
    """A Node's ``status.nodeInfo`` (every field the client model requires)."""
    fields = [
        "architecture",
        "bootID",
        "containerRuntimeVersion",
        "kernelVersion",
        "kubeProxyVersion",
        "machineID",
        "operatingSystem",
        "osImage",
        "systemUUID",
    ]
    return {**dict.fromkeys(fields, "test"), "kubeletVersion": kubelet_version}
