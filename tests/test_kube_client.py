"""The API client wrapper turns the real client's ApiException into NotFound/Conflict/ApiError.

The real ``kubernetes`` client talks HTTP to a small stand-in for kube-apiserver that answers
with the Status objects the real one sends (404 NotFound, 409 AlreadyExists, 403 Forbidden).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from dra_driver.client import KubeResourceAPI
from qubelet.errors import ApiError, Conflict, NotFound, UsageError
from qubelet.kube import load_kube_client

pytestmark = pytest.mark.timeout(60)

LEASES = "/apis/coordination.k8s.io/v1/namespaces/qubelet-system/leases"
CLAIMS = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims"


class _StatusHandler(BaseHTTPRequestHandler):
    """Every lease exists (POST: 409), no claim exists (GET: 404), slices are forbidden (403)."""

    def log_message(self, *args: Any) -> None:
        pass

    def _status(self, code: int, reason: str, message: str) -> None:
        status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}
        body = json.dumps({**status, "message": message, "reason": reason}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith(CLAIMS + "/"):
            name = self.path.rsplit("/", 1)[1]
            return self._status(404, "NotFound", f'resourceclaims.resource.k8s.io "{name}" not found')
        return self._status(403, "Forbidden", "resourceslices is forbidden: User cannot list\\nsecond line")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.startswith(LEASES):
            return self._status(409, "AlreadyExists", 'leases.coordination.k8s.io "ctl" already exists')
        return self._status(404, "NotFound", "no route")


@pytest.fixture
def api() -> Iterator[KubeResourceAPI]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield KubeResourceAPI(api_client=client.ApiClient(configuration))
    finally:
        server.shutdown()
        server.server_close()


def test_404_is_not_found(api: KubeResourceAPI) -> None:
    with pytest.raises(NotFound) as exc:
        api.read_resource_claim("default", "gone")
    assert exc.value.status == 404
    assert str(exc.value) == (
        'read resource claim: 404 Not Found resourceclaims.resource.k8s.io "gone" not found'
    )


def test_409_is_conflict(api: KubeResourceAPI) -> None:
    body = client.V1Lease(metadata=client.V1ObjectMeta(name="ctl", namespace="qubelet-system"))
    with pytest.raises(Conflict, match="create lease: 409") as exc:
        api.create_lease("qubelet-system", body)
    assert isinstance(exc.value, ApiError) and exc.value.status == 409


def test_other_statuses_are_api_errors_on_one_line(api: KubeResourceAPI) -> None:
    with pytest.raises(ApiError) as exc:
        api.list_resource_slices()
    assert not isinstance(exc.value, NotFound | Conflict)
    assert exc.value.status == 403 and "\n" not in str(exc.value)
    assert str(exc.value).startswith("list resource slices: 403 Forbidden resourceslices is forbidden")


def test_unreachable_server_is_an_api_error() -> None:
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: connection refused
    configuration.retries = 0
    api = KubeResourceAPI(api_client=client.ApiClient(configuration))
    with pytest.raises(ApiError, match=r"^read lease: ") as exc:
        api.read_lease("qubelet-system", "ctl")
    assert exc.value.status is None and "\n" not in str(exc.value)


def test_missing_kubeconfig_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^no Kubernetes configuration") as exc:
        load_kube_client(str(tmp_path / "nope"), env={})
    assert "\n" not in str(exc.value)
