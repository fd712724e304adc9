"""``qubelet admission-check`` against the Kueue API double and FakePrometheus.

The controller turns a Pending ``qubelet`` check Ready, Retry or Rejected from live telemetry,
writes a reason ``kubectl describe workload`` shows, marks its AdmissionCheck Active, exports the
queued Workloads per backend class, writes only as the Lease holder, and survives a restart between
reading and writing (a stale writer gets a Conflict instead of overwriting).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemas
import yaml
from doubles.fake_kueue_api import FakeKueueAPI
from doubles.fake_resource_api import FakeResourceAPI
from doubles.scripted_prometheus import ScriptedPrometheus as FakePrometheus

from admission_check.controller import AdmissionCheckController
from admission_check.names import CONTROLLER_NAME, MIN_FIDELITY_ANNOTATION
from admission_check.telemetry import PROMQL, PrometheusTelemetry
from qubelet.cli import main

pytestmark = pytest.mark.timeout(60)
NS = "qubelet-workloads"
T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def workload(
    name: str, *, floor: float | None = 0.99, queue: str = "qubelet-qpu", state: str = "Pending"
) -> dict[str, Any]:
    annotations = {MIN_FIDELITY_ANNOTATION: f"{floor}"} if floor is not None else {}
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "Workload",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "queueName": queue,
            "podSets": [
                {
                    "name": "main",
                    "count": 1,
                    "template": {
                        "metadata": {"annotations": annotations},
                        "spec": {"containers": [{"name": "main", "image": "ghcr.io/qubelet/pipeline:0.1.0"}]},
                    },
                }
            ],
        },
        "status": {
            "admissionChecks": [
                {
                    "name": "qubelet",
                    "state": state,
                    "message": "",
                    "lastTransitionTime": "2026-11-25T11:59:00Z",
                }
            ]
        },
    }


def admission_check() -> dict[str, Any]:
    return yaml.safe_load(open("manifests/kueue/admissioncheck.yaml"))


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    with FakePrometheus() as double:
        yield double


def healthy(prom: FakePrometheus, *, fidelity: float = 0.995, depth: float = 3, latency: float = 0.2) -> None:
    prom.set(PROMQL["backend_up"], [({"backend": "qpu:apollo"}, 1)])
    prom.set(PROMQL["device_healthy"], [({"qpu": "apollo"}, 1)])
    prom.set(PROMQL["queue_depth"], [({"backend": "qpu:apollo"}, depth)])
    prom.set(PROMQL["latency_seconds"], [({"backend": "qpu:apollo"}, latency)])
    prom.set(PROMQL["fidelity_2q"], [({"qpu": "apollo"}, fidelity)])


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def controller(
    kueue: FakeKueueAPI,
    leases: FakeResourceAPI,
    prom: FakePrometheus,
    identity: str = "a",
    clock: Clock | None = None,
    **kw: Any,
) -> AdmissionCheckController:
    return AdmissionCheckController(
        kueue,
        leases,
        PrometheusTelemetry(prom.url, timeout=1.0).snapshot,
        identity,
        now=clock or Clock(),
        **kw,  # type: ignore[arg-type]
    )


def check_entry(kueue: FakeKueueAPI, name: str) -> dict[str, Any]:
    (entry,) = kueue.read_workload(NS, name)["status"]["admissionChecks"]
    return entry  # type: ignore[no-any-return]


@pytest.fixture
def kueue() -> FakeKueueAPI:
    api = FakeKueueAPI()
    api.create_admission_check(admission_check())
    return api


def test_ready_when_a_qpu_is_up_within_budget_and_the_queue_is_short(
    kueue: FakeKueueAPI, prom: FakePrometheus
) -> None:
    healthy(prom)
    kueue.create_workload(workload("wl-a"))
    assert controller(kueue, FakeResourceAPI(), prom).run_once() == {f"{NS}/wl-a": "Ready"}
    entry = check_entry(kueue, "wl-a")
    assert entry["state"] == "Ready" and "apollo up" in entry["message"] and "0.995" in entry["message"]
    assert entry["lastTransitionTime"] == "2026-11-25T12:00:00Z"
    schemas.validate_custom(kueue.read_workload(NS, "wl-a"))
    (check,) = kueue.list_admission_checks()
    assert {"type": "Active", "status": "True"}.items() <= check["status"]["conditions"][0].items()


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda p: healthy(p, depth=5000, latency=1.0), "queue too long"),
        (lambda p: (healthy(p), p.set(PROMQL["device_healthy"], [({"qpu": "apollo"}, 0)])), "is down"),
        (lambda p: p.down(), "telemetry unavailable"),
        (lambda p: healthy(p, fidelity=0.97), "calibration drifted"),
    ],
    ids=["long-queue", "qpu-down", "prometheus-down", "drift-without-reject"],
)
def test_retry_with_a_reason(kueue: FakeKueueAPI, prom: FakePrometheus, setup: Any, needle: str) -> None:
    setup(prom)
    kueue.create_workload(workload("wl-r"))
    assert controller(kueue, FakeResourceAPI(), prom).run_once() == {f"{NS}/wl-r": "Retry"}
    entry = check_entry(kueue, "wl-r")
    assert entry["state"] == "Retry" and needle in entry["message"], entry
    assert entry["requeueAfterSeconds"] >= 60


def test_rejected_when_drift_puts_every_qpu_below_the_budget(
    kueue: FakeKueueAPI, prom: FakePrometheus
) -> None:
    healthy(prom, fidelity=0.97)
    kueue.create_workload(workload("wl-x", floor=0.99))
    kueue.create_workload(workload("wl-y", floor=0.95))  # a looser floor is still met
    verdicts = controller(kueue, FakeResourceAPI(), prom, reject_unmeetable=True).run_once()
    assert verdicts == {f"{NS}/wl-x": "Rejected", f"{NS}/wl-y": "Ready"}
    assert "best apollo at 0.97" in check_entry(kueue, "wl-x")["message"]


def pod_workload(name: str, owners: dict[str, float | None]) -> dict[str, Any]:
    """A Workload as Kueue v0.17's pod integration builds it: the podSet template carries only
    the pod spec (no metadata), and each pod of the group is an ownerReference."""
    wl = workload(name, floor=None)
    del wl["spec"]["podSets"][0]["template"]["metadata"]
    wl["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": f"uid-{pod}"} for pod in owners
    ]
    return wl


def owner_pod(name: str, floor: float | None) -> dict[str, Any]:
    annotations = {MIN_FIDELITY_ANNOTATION: f"{floor}"} if floor is not None else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {"containers": [{"name": "main", "image": "ghcr.io/qubelet/pipeline:0.1.0"}]},
    }


@pytest.mark.parametrize(
    ("owners", "verdict"),
    [
        ({"step-a": 0.9999}, "Retry"),  # one pod, floor above the only QPU's 0.995
        ({"step-a": 0.99}, "Ready"),
        ({"step-a": 0.9, "step-b": 0.9999, "step-c": None}, "Retry"),  # a pod group: the strictest
        ({"step-a": 0.9, "step-b": 0.99}, "Ready"),
    ],
    ids=["pod-unmeetable", "pod-meetable", "group-strictest-unmeetable", "group-meetable"],
)
def test_a_pod_workloads_floor_is_read_from_its_owner_pods(
    kueue: FakeKueueAPI, prom: FakePrometheus, owners: dict[str, float | None], verdict: str
) -> None:
    healthy(prom, fidelity=0.995)
    for pod, floor in owners.items():
        kueue.create_pod(owner_pod(pod, floor))
    kueue.create_workload(pod_workload("pod-step-a", owners))
    assert controller(kueue, FakeResourceAPI(), prom).run_once() == {f"{NS}/pod-step-a": verdict}
    entry = check_entry(kueue, "pod-step-a")
    floor = max(f for f in owners.values() if f is not None)
    assert f"2q fidelity >= {floor:g}" in entry["message"], entry


def test_an_unreadable_owner_pod_leaves_the_check_pending(kueue: FakeKueueAPI, prom: FakePrometheus) -> None:
    healthy(prom)
    kueue.create_pod(owner_pod("step-a", 0.9999))
    kueue.create_workload(pod_workload("pod-step-a", {"step-a": 0.9999, "step-gone": None}))
    assert controller(kueue, FakeResourceAPI(), prom).run_once() == {}
    assert check_entry(kueue, "pod-step-a")["state"] == "Pending"


def test_only_pending_checks_are_decided_and_queue_depth_is_exported(
    kueue: FakeKueueAPI, prom: FakePrometheus
) -> None:
    healthy(prom)
    kueue.create_workload(workload("done", state="Ready"))
    kueue.create_workload(workload("cpu-step", queue="qubelet-cpu", floor=None))
    kueue.create_workload(workload("wl-p"))
    ctl = controller(kueue, FakeResourceAPI(), prom)
    assert ctl.run_once() == {f"{NS}/wl-p": "Ready", f"{NS}/cpu-step": "Ready"}
    assert check_entry(kueue, "done")["lastTransitionTime"] == "2026-11-25T11:59:00Z"  # untouched
    depth = ctl.metrics.registry.get_sample_value
    assert depth("qubelet_admission_check_queued_workloads", {"backend": "qpu"}) == 2
    assert depth("qubelet_admission_check_queued_workloads", {"backend": "cpu"}) == 1
    assert ctl.run_once() == {}  # nothing Pending any more: no writes
    assert depth("qubelet_admission_check_decisions_total", {"state": "Ready"}) == 2


def test_only_the_lease_holder_writes(kueue: FakeKueueAPI, prom: FakePrometheus) -> None:
    healthy(prom)
    kueue.create_workload(workload("wl-l"))
    leases, clock = FakeResourceAPI(), Clock()
    a = controller(kueue, leases, prom, "a", clock)
    b = controller(kueue, leases, prom, "b", clock)
    assert a.run_once() == {f"{NS}/wl-l": "Ready"}
    kueue.create_workload(workload("wl-m"))
    assert b.run_once() is None and check_entry(kueue, "wl-m")["state"] == "Pending"


def test_survives_a_restart_mid_decision(kueue: FakeKueueAPI, prom: FakePrometheus) -> None:
    healthy(prom)
    kueue.create_workload(workload("wl-s"))
    leases, clock = FakeResourceAPI(), Clock()

    class Crash(RuntimeError):
        pass

    old = controller(kueue, leases, prom, "old", clock)
    real_write = kueue.replace_workload_status

    def crash_before_write(*args: Any) -> Any:
        raise Crash("process killed between deciding and writing")

    kueue.replace_workload_status = crash_before_write  # type: ignore[method-assign]
    with pytest.raises(Crash):
        old.run_once()
    kueue.replace_workload_status = real_write  # type: ignore[method-assign]
    assert check_entry(kueue, "wl-s")["state"] == "Pending"  # nothing half-written

    # A new replica (the restarted pod) takes the lease once the old one's expires, and decides.
    clock.now = T0 + dt.timedelta(seconds=20)
    new = controller(kueue, leases, prom, "new", clock)
    stale = kueue.read_workload(NS, "wl-s")
    prom.set(PROMQL["device_healthy"], [({"qpu": "apollo"}, 0)])
    assert new.run_once() == {f"{NS}/wl-s": "Retry"}
    assert check_entry(kueue, "wl-s")["state"] == "Retry"
    # The old process waking up with what it read before cannot overwrite the newer verdict.
    from admission_check.decide import Verdict

    assert old._write(stale, "qubelet", Verdict("Ready", "stale")) is False
    assert check_entry(kueue, "wl-s")["state"] == "Retry"


def test_cli_bad_input_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["admission-check", "--prometheus", "prometheus:9090"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--prometheus: expected an http(s) URL" in err


def test_the_admission_check_manifest_names_this_controller() -> None:
    check = admission_check()
    schemas.validate_custom(check)
    assert check["spec"]["controllerName"] == CONTROLLER_NAME


def test_manifests_wire_the_check_to_the_qpu_flavor_with_least_privilege() -> None:
    def docs(path: str) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]

    (queue,) = docs("manifests/kueue/clusterqueue.yaml")
    assert queue["spec"]["admissionChecksStrategy"]["admissionChecks"] == [
        {"name": "qubelet", "onFlavors": ["qpu"]}
    ]
    assert "admissioncheck.yaml" in Path("manifests/kueue/kustomization.yaml").read_text()
    (deployment,) = docs("manifests/admission-check/deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "qubelet-admission-check"
    assert pod["containers"][0]["command"][:2] == ["qubelet", "admission-check"]
    rules = [r for d in docs("manifests/admission-check/rbac.yaml") for r in d.get("rules", [])]
    writes = {
        (res, verb)
        for r in rules
        for res in r["resources"]
        for verb in r["verbs"]
        if verb in {"create", "update", "patch", "delete"}
    }
    reads_of_core = {
        (res, verb) for r in rules if r["apiGroups"] == [""] for res in r["resources"] for verb in r["verbs"]
    }
    assert reads_of_core == {("pods", "get")}  # the owner pod's floor annotation; no list/watch
    assert writes == {
        ("workloads/status", "update"), ("workloads/status", "patch"),
        ("admissionchecks/status", "update"), ("admissionchecks/status", "patch"),
        ("leases", "create"), ("leases", "update"),
    }  # fmt: skip
    for doc in [queue, deployment, *docs("manifests/admission-check/rbac.yaml")]:
        schemas.validate(doc)


def test_a_pushed_backend_down_does_not_outvote_the_scraped_health(
    kueue: FakeKueueAPI, prom: FakePrometheus
) -> None:
    """Anyone who can reach the Pushgateway could push backend_up=0 and hold all QPU work
    (issue 23 #7): Prometheus' own scrape of the node daemons decides when it has one."""
    healthy(prom)
    prom.set(PROMQL["backend_up"], [({"backend": "qpu:apollo"}, 0)])  # forged push
    kueue.create_workload(workload("wl-forged"))
    assert controller(kueue, FakeResourceAPI(), prom).run_once() == {f"{NS}/wl-forged": "Ready"}
    # with no scraped series for the QPU, the pushed gauge is all there is, and it is believed
    prom.set(PROMQL["device_healthy"], [])
    kueue.create_workload(workload("wl-pushed"))
    out = controller(kueue, FakeResourceAPI(), prom).run_once()
    assert out[f"{NS}/wl-pushed"] == "Retry"


def test_device_health_counts_only_from_targets_prometheus_scrapes_now() -> None:
    assert "up == 1" in PROMQL["device_healthy"]
