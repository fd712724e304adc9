"""``qubelet submit``: create the Workflow through the Kubernetes API and follow ``status.phase``.

Without a cluster, the real kubernetes client talks HTTP to ``FakeArgoApiServer``
(``tests/doubles/fake_argo_api.py``, the ``fake_argo_api`` fixture), which stands
in for the API server's custom-resource and resource.k8s.io endpoints (same paths, verbs,
status codes and JSON bodies). With KUBECONFIG set, a server-side dry run against the real one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from doubles.fake_argo_api import FakeArgoApiServer

from pipeline.cluster import render, submit
from qubelet.cli import main

pytestmark = pytest.mark.timeout(120)


def _client(server: FakeArgoApiServer) -> Any:
    from kubernetes import client

    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_address[1]}"
    return client.ApiClient(config)


def _batch(batch_id: str, kind: str, min_qubits: int | None) -> Any:
    from pipeline.planning import Batch

    return Batch(id=batch_id, backend=kind, kind=kind, keys=[], min_qubits=min_qubits)  # type: ignore[arg-type]


def test_create_and_follow_through_the_kubernetes_client(fake_argo_api: FakeArgoApiServer) -> None:
    batches = [
        _batch("cpu-000", "cpu", None),
        _batch("qpu-apollo-000", "qpu", 5),
        _batch("qpu-x-000", "qpu", 7),
    ]
    opts = render.RenderOptions(claim_constraints=True)
    workflow = render.build_workflow(render.RunArgs(), "run-1", batches, opts)
    rcts = render.claim_templates(batches, opts)
    api = _client(fake_argo_api)
    created = submit.create(api, workflow, rcts)
    assert created["metadata"]["name"] == "qubelet-cutting-abc12"
    kinds = [(k, b["metadata"].get("name")) for k, b, _ in fake_argo_api.created]
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


def test_follow_gives_up_at_the_timeout(fake_argo_api: FakeArgoApiServer) -> None:
    fake_argo_api.phases = ["Running"]
    api = _client(fake_argo_api)
    submit.create(api, render.build_workflow(render.RunArgs(), "r", [_batch("cpu-000", "cpu", None)]))
    with pytest.raises(submit.SubmitError, match="still Running"):
        submit.follow(
            api, "qubelet-workloads", "qubelet-cutting-abc12", timeout_seconds=0.05, poll_seconds=0.01
        )


def test_dry_run_and_api_errors_are_one_line(fake_argo_api: FakeArgoApiServer) -> None:
    api = _client(fake_argo_api)
    workflow = render.build_workflow(render.RunArgs(), "r", [_batch("cpu-000", "cpu", None)])
    submit.create(api, workflow, dry_run=True)
    assert fake_argo_api.created[-1][2] == "dryRun=All"
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
