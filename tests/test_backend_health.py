"""A QPU's own word on its health, and the cluster's: what the policy is offered, and why.

The server QPU asks the IQM server double (``tests/doubles/iqm_server.py``, iqm-client's REST
contract) through the real iqm-client: ``get_health`` and the default calibration's dynamic
quantum architecture. An error answer or a hung request makes the backend unhealthy with the
reason, bounded in time, and the verdict is cached. The cluster's word comes from ResourceSlices
built by the DRA driver's own slice builder (``dra_driver.slices``) in ``--unhealthy taint`` mode.
The real API server's part is ``tests/e2e/test_cluster_health_run.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from doubles.iqm_server import Faults, IQMServerDouble, make_token, write_tokens_file

from dra_driver.slices import network_slices
from pipeline.backends.factory import make_backend
from pipeline.backends.health import CachedHealthCheck
from pipeline.backends.lazy_qpu import LazyFakeQPUBackend
from pipeline.backends.qpu import QPUTarget
from pipeline.planning import decision_record
from policy.cluster_health import ClusterHealth, tainted_qpus
from policy.interface import BackendState, Decision
from qubelet.cli import main
from qubelet.inventory import parse_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IQMServerDouble]:
    token = make_token()
    tokens_file = write_tokens_file(tmp_path / "tokens.json", token)
    double = IQMServerDouble(token, faults=Faults())
    with double.running():
        monkeypatch.delenv("QUBELET_QPU_BACKEND", raising=False)
        monkeypatch.delenv("IQM_TOKEN", raising=False)
        monkeypatch.setenv("IQM_SERVER_URL", f"{double.url}/{double.alias}")
        monkeypatch.setenv("IQM_TOKENS_FILE", str(tokens_file))
        monkeypatch.setenv("QUBELET_IQM_HEALTH_TTL", "0.3")
        monkeypatch.setenv("QUBELET_IQM_HEALTH_TIMEOUT", "1")
        yield double


def health_requests(double: IQMServerDouble) -> int:
    return sum(1 for method, path in double.requests if path.endswith("/health"))


def test_server_qpu_reports_its_servers_health(server: IQMServerDouble) -> None:
    qpu = make_backend("qpu")
    assert qpu.state().healthy
    assert health_requests(server) == 1
    for _ in range(20):  # the loop's re-plans within the ttl reuse the verdict
        qpu.state()
    assert health_requests(server) == 1

    server.faults.health_error = 503  # the station is down for maintenance
    time.sleep(0.35)
    state = qpu.state()
    assert not state.healthy
    assert state.unhealthy_reason.startswith(f"IQM server {server.url}/apollo: ")
    assert "service unavailable" in state.unhealthy_reason
    assert health_requests(server) == 2

    server.faults.health_error = 0
    time.sleep(0.35)
    assert qpu.state().healthy


def test_unreadable_calibration_makes_the_qpu_unhealthy(server: IQMServerDouble) -> None:
    qpu = make_backend("qpu")
    server.faults.calibration_error = 500  # health answers; the calibration every job needs does not
    time.sleep(0.35)
    state = qpu.state()
    assert not state.healthy
    assert state.unhealthy_reason.startswith(f"IQM server {server.url}/apollo: ")
    assert server.requests[-1] == (
        "GET",
        "/api/v1/calibration-sets/apollo/default/dynamic-quantum-architecture",
    )


def test_a_hung_health_check_does_not_hang_the_caller(server: IQMServerDouble) -> None:
    qpu = make_backend("qpu")
    server.faults.health_hang_seconds = 8  # the status service hangs; nothing else does
    time.sleep(0.35)
    started = time.monotonic()
    state = qpu.state()
    waited = time.monotonic() - started
    assert waited < 5.0, waited  # the 1 s health timeout (slack for a loaded machine), not the 8 s hang
    assert not state.healthy
    assert state.unhealthy_reason == f"IQM server {server.url}/apollo: health check, no answer within 1 s"
    server.faults.health_hang_seconds = 0


def test_a_check_still_hanging_is_not_started_again() -> None:
    release = threading.Event()
    calls = []

    def check() -> None:
        calls.append(1)
        release.wait(10)

    now = [0.0]
    cache = CachedHealthCheck(
        "qpu:x", check, source="IQM server s", ttl=1.0, timeout=0.2, clock=lambda: now[0]
    )
    try:
        assert cache.current().reason == "IQM server s: health check, no answer within 0.2 s"
        now[0] = 2.0
        second = cache.current()
        assert not second.healthy and "health check unanswered for" in second.reason
        assert len(calls) == 1  # no pile of threads against a hung server
    finally:
        release.set()


def test_a_failing_check_says_why_in_one_line() -> None:
    def check() -> None:
        raise RuntimeError("station\n  in maintenance")

    health = CachedHealthCheck("qpu:x", check, timeout=1.0).current()
    assert health == type(health)(False, "station in maintenance")


def test_fake_qpu_is_healthy_without_asking_anyone() -> None:
    qpu = LazyFakeQPUBackend(QPUTarget(name="apollo", spec="fake:IQMFakeApollo"))
    state = qpu.state()
    assert state.healthy and state.unhealthy_reason == ""


def test_plan_json_says_why_an_unhealthy_backend_lost() -> None:
    states = [
        BackendState(name="cpu", kind="cpu"),
        BackendState(name="qpu:apollo", kind="qpu").marked_unhealthy("IQM server u: no answer within 1 s"),
    ]
    decision = Decision(key="k", backend="cpu", kind="cpu", alternatives={"cpu": {"seconds": 1.0}})
    record = decision_record(decision, states, None)
    lost = {c["backend"]: c.get("lost_because") for c in record["candidates"]}
    assert lost["qpu:apollo"] == "unhealthy: IQM server u: no answer within 1 s"


# --- the cluster's word: ResourceSlice device taints ---------------------------------------------


def _inventory(replicas: int = 2) -> Any:
    qpu = {
        "name": "apollo",
        "vendor": "IQM",
        "model": "Apollo",
        "qubits": 20,
        "technology": "superconducting",
        "location": "cloud",
        "topology": "square",
        "backend": "fake:IQMFakeApollo",
        "calibration": {"fidelity2q": 0.98, "readoutFidelity": 0.95},
        "replicas": replicas,
    }
    other = {**qpu, "name": "adonis", "model": "Adonis", "qubits": 5, "backend": "fake:IQMFakeAdonis"}
    return parse_config({"version": "v1", "qpus": [qpu, other]}, "test").qpus


def test_a_qpu_the_driver_taints_is_unhealthy_and_says_why() -> None:
    slices = network_slices(_inventory(), {"apollo": False, "adonis": True}, "taint")
    unhealthy = tainted_qpus(slices)
    assert set(unhealthy) == {"qpu:apollo"}
    reason = unhealthy["qpu:apollo"]
    assert reason.startswith("cluster: device apollo-r0 in ResourceSlice ")
    assert "tainted qpu.quantum.example.com/unhealthy=true:NoSchedule" in reason
    assert reason.endswith("(and 1 more of its devices)")


def test_one_tainted_replica_of_two_leaves_the_qpu_usable() -> None:
    from kubernetes import client as k8s

    slices = network_slices(_inventory(), {"apollo": True, "adonis": True}, "taint")
    device = next(d for s in slices for d in s.spec.devices if d.name == "apollo-r0")
    device.taints = [k8s.V1DeviceTaint(key="example.com/maintenance", effect="NoExecute")]
    assert tainted_qpus(slices) == {}
    other = next(d for s in slices for d in s.spec.devices if d.name == "apollo-r1")
    other.taints = [k8s.V1DeviceTaint(key="example.com/maintenance", effect="NoSchedule")]
    assert set(tainted_qpus(slices)) == {"qpu:apollo"}
    # an effect that only informs keeps nothing off the device
    device.taints[0].effect = other.taints[0].effect = "None"
    assert tainted_qpus(slices) == {}


def test_cluster_health_is_cached_and_marks_only_the_tainted_qpu() -> None:
    health = {"apollo": False, "adonis": True}
    now = [0.0]
    reader = ClusterHealth(
        lambda: network_slices(_inventory(), health, "taint"), ttl=15.0, clock=lambda: now[0]
    )
    states = [
        BackendState(name="cpu", kind="cpu"),
        BackendState(name="qpu:apollo", kind="qpu"),
        BackendState(name="qpu:adonis", kind="qpu"),
    ]
    cpu, apollo, adonis = reader.apply(states)
    assert cpu.healthy and adonis.healthy and not apollo.healthy
    assert apollo.unhealthy_reason.startswith("cluster: device apollo-r0")
    health["apollo"] = True  # the driver untaints it
    now[0] = 14.0
    assert not reader.apply(states)[1].healthy and reader.reads == 1  # cached
    now[0] = 15.0
    assert reader.apply(states)[1].healthy and reader.reads == 2


def test_an_unreadable_cluster_changes_nothing() -> None:
    def read() -> list[Any]:
        raise OSError("connection refused")

    states = [BackendState(name="qpu:apollo", kind="qpu")]
    assert ClusterHealth(read).apply(states) == states


def test_kubeconfig_without_cluster_health_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--kubeconfig", str(tmp_path / "k"), "--run-dir", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--kubeconfig {tmp_path / 'k'}: read only with --cluster-health" in err


def test_cluster_health_without_a_cluster_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    code = main(
        ["run", "--qubits", "4", "--cuts", "1", "--backends", "cpu", "--cluster-health",
         "--kubeconfig", str(missing), "--run-dir", str(tmp_path / "r"), "--no-progress"]
    )  # fmt: skip
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("qubelet: error:")]
    assert len(lines) == 1 and "no Kubernetes configuration" in lines[0], lines
    assert not (tmp_path / "r" / "summary.json").exists()


# --- a real run: the server QPU's own verdict keeps work off it, and plan.json says why ----------

#: the CPU's predicted run time x 1000: the QPU gets work whenever it is offered as healthy
POLICY_CONFIG = "version: v1\nepsilon: 0\nbackends:\n  - kind: cpu\n    weight: 1000\n"


def _run(tmp_path: Path, name: str) -> tuple[int, dict[str, Any], float]:
    config = tmp_path / "policy.yaml"
    config.write_text(POLICY_CONFIG)
    run_dir = tmp_path / name
    started = time.monotonic()
    code = main(
        ["run", "--qubits", "4", "--cuts", "1", "--shots", "200", "--backends", "cpu,qpu",
         "--policy", "telemetry", "--error-budget", "1", "--policy-config", str(config),
         "--run-dir", str(run_dir), "--no-progress"]
    )  # fmt: skip
    plan = json.loads((run_dir / "plan.json").read_text()) if code == 0 else {}
    return code, plan, time.monotonic() - started


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Faults(health_error=503), "SystemUnavailableError: quantum computer apollo: service unavailable"),
        (Faults(health_hang_seconds=30), "health check, no answer within 1 s"),
    ],
    ids=["answers-503", "hangs"],
)
def test_a_run_keeps_work_off_a_qpu_whose_server_says_it_is_down(
    server: IQMServerDouble, tmp_path: Path, fault: Faults, reason: str, capfd: pytest.CaptureFixture[str]
) -> None:
    healthy_code, healthy_plan, _ = _run(tmp_path, "healthy")
    assert healthy_code == 0
    assert "qpu:iqm" in {b["backend"] for b in healthy_plan["batches"]}  # offered, it gets work

    server.faults.health_error = fault.health_error
    server.faults.health_hang_seconds = fault.health_hang_seconds
    capfd.readouterr()
    code, plan, seconds = _run(tmp_path, "down")
    assert code == 0
    warned = [line for line in capfd.readouterr().err.splitlines() if "backend unhealthy" in line]
    assert len(warned) == 1 and reason in warned[0], warned  # one line, re-checks say nothing new
    assert seconds < 25  # a hung status service costs the 1 s timeout, not the 30 s hang
    assert {b["backend"] for b in plan["batches"]} == {"cpu"}
    for decision in plan["decisions"].values():
        lost = {c["backend"]: c.get("lost_because") for c in decision["candidates"]}
        assert lost["qpu:iqm"] == f"unhealthy: IQM server {server.url}/apollo: {reason}"
    server.faults.health_hang_seconds = 0


def test_a_run_with_only_an_unhealthy_qpu_says_why_in_its_error_line(
    server: IQMServerDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.faults.health_error = 503
    code = main(
        ["run", "--qubits", "4", "--cuts", "1", "--shots", "200", "--backends", "qpu",
         "--run-dir", str(tmp_path / "r"), "--no-progress"]
    )  # fmt: skip
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("qubelet: error:")]
    assert len(lines) == 1, lines
    assert f"qpu:iqm unhealthy: IQM server {server.url}/apollo: SystemUnavailableError" in lines[0]
    assert server.submitted == []
