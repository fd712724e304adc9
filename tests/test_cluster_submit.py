"""``qubelet submit``: create the Workflow through the Kubernetes API and follow ``status.phase``.

Without a cluster, the real kubernetes client talks HTTP to ``FakeArgoApiServer``, which stands
in for the API server's custom-resource and resource.k8s.io endpoints (same paths, verbs,
status codes and JSON bodies). With KUBECONFIG set, a server-side dry run against the real one.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.cluster import render, submit
from qubelet.cli import main

pytestmark = pytest.mark.timeout(120)

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


@pytest.fixture
def fake_api() -> Iterator[FakeArgoApiServer]:
    server = FakeArgoApiServer(["", "Running", "Running", "Succeeded"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _client(server: FakeArgoApiServer) -> Any:
    from kubernetes import client

    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_address[1]}"
    return client.ApiClient(config)


def _batch(batch_id: str, kind: str, min_qubits: int | None) -> Any:
    from pipeline.planning import Batch

    return Batch(id=batch_id, backend=kind, kind=kind, keys=[], min_qubits=min_qubits)  # type: ignore[arg-type]


def test_create_and_follow_through_the_kubernetes_client(fake_api: FakeArgoApiServer) -> None:
    batches = [
        _batch("cpu-000", "cpu", None),
        _batch("qpu-apollo-000", "qpu", 5),
        _batch("qpu-x-000", "qpu", 7),
    ]
    opts = render.RenderOptions(claim_constraints=True)
    workflow = render.build_workflow(render.RunArgs(), "run-1", batches, opts)
    rcts = render.claim_templates(batches, opts)
    api = _client(fake_api)
    created = submit.create(api, workflow, rcts)
    assert created["metadata"]["name"] == "qubelet-cutting-abc12"
    kinds = [(k, b["metadata"].get("name")) for k, b, _ in fake_api.created]
    # qpu-min-5q already exists (409 is fine), qpu-min-7q is created, then the Workflow.
    assert kinds == [("ResourceClaimTemplate", "qpu-min-7q"), ("Workflow", "qubelet-cutting-abc12")]
    seen: list[str] = []
    phase = submit.follow(
        api,
        "qubelet-workloads",
        "qubelet-cutting-abc12",
        poll_seconds=0.01,
        on_change=lambda p, _s: seen.append(p),
    )
    assert phase == "Succeeded"
    assert seen == ["Pending", "Running", "Running", "Succeeded"]  # progress changed on each read


def test_follow_gives_up_at_the_timeout(fake_api: FakeArgoApiServer) -> None:
    fake_api.phases = ["Running"]
    api = _client(fake_api)
    submit.create(api, render.build_workflow(render.RunArgs(), "r", [_batch("cpu-000", "cpu", None)]))
    with pytest.raises(submit.SubmitError, match="still Running"):
        submit.follow(
            api, "qubelet-workloads", "qubelet-cutting-abc12", timeout_seconds=0.05, poll_seconds=0.01
        )


def test_dry_run_and_api_errors_are_one_line(fake_api: FakeArgoApiServer) -> None:
    api = _client(fake_api)
    workflow = render.build_workflow(render.RunArgs(), "r", [_batch("cpu-000", "cpu", None)])
    submit.create(api, workflow, dry_run=True)
    assert fake_api.created[-1][2] == "dryRun=All"
    broken = {**workflow, "spec": {}}
    with pytest.raises(submit.SubmitError) as exc:
        submit.create(api, broken)
    assert "422" in str(exc.value) and "Required" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(submit.SubmitError, match="404"):
        submit.follow(api, "qubelet-workloads", "missing", poll_seconds=0.01)


def test_submit_without_kubeconfig_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nope"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code = main(["submit", "--qubits=6", "--cuts=1", "--backends=cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("qubelet: error: no Kubernetes configuration")


@pytest.mark.cluster
@pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"), reason="KUBECONFIG not set: no API server to dry-run against"
)
def test_server_side_dry_run_of_rendered_workflow(capsys: pytest.CaptureFixture[str]) -> None:
    """Needs Argo's CRDs and the qubelet-workloads namespace on the cluster."""
    code = main(["submit", "--qubits=6", "--cuts=1", "--shots=64", "--backends=cpu,qpu", "--dry-run"])
    assert code == 0, capsys.readouterr().err
    assert "validated (dry run)" in capsys.readouterr().out
