"""Issue 20 on the real kube-scheduler v1.37 now: a cloud QPU is reserved before the pod binds.

The bare API server of ``apiserver.py`` (etcd + kube-apiserver, RBAC on) plus a real
``kube-scheduler`` started here (DRADeviceBindingConditions is on by default in 1.37), and
``qubelet dra-driver controller`` as a process running as its ServiceAccount with the shipped
``manifests/dra/rbac.yaml``. Two reservation-enabled cloud QPUs, ``resv-a`` and ``resv-b``, are
served by IQM server doubles in this process. There is no controller-manager: claims are created
by name, and the resourceclaim controller's part after a pod is deleted (dropping it from
``reservedFor`` and deallocating) is played by the test. The full control plane version with the
kubelet double is ``test_binding_conditions.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from apiserver import _bin_dir, apiserver_kubeconfig  # noqa: F401 (the session fixture)
from doubles.iqm_server import Faults, IQMServerDouble

from qubelet.inventory.names import DEVICE_CLASS_NAME, DRIVER_NAME, ENV_RESERVATION_ID

ROOT = Path(__file__).resolve().parents[2]
ATTRS = f'device.attributes["{DRIVER_NAME}"]'
RESERVED = f"{DRIVER_NAME}/reserved"
FAILED = f"{DRIVER_NAME}/reservation-failed"
NS = "resv"
NODE = "n1"

pytestmark = pytest.mark.timeout(900)


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception:
            result = None
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class Cluster:
    """Clients, the controller process and the two doubles."""

    def __init__(self, kubeconfig: str, state: Path, a: IQMServerDouble, b: IQMServerDouble) -> None:
        from kubernetes import client

        from qubelet.kube import load_kube_client

        self.api = load_kube_client(kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.res = client.ResourceV1Api(self.api)
        self.state, self.a, self.b = state, a, b
        self.controller: subprocess.Popen[bytes] | None = None
        self.controller_argv: list[str] = []

    def start_controller(self) -> None:
        log = open(self.state / "controller.log", "ab")  # noqa: SIM115 - handed to the child
        self.controller = subprocess.Popen(
            self.controller_argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        log.close()

    def claim(self, name: str, qpus: list[str]) -> None:
        request = {
            "name": "qpu",
            "firstAvailable": [
                {
                    "name": q.replace("-", ""),
                    "deviceClassName": DEVICE_CLASS_NAME,
                    "selectors": [{"cel": {"expression": f'{ATTRS}.qpu == "{q}"'}}],
                }
                for q in qpus
            ],
        }
        self.res.create_namespaced_resource_claim(
            NS,
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "metadata": {"name": name},
                "spec": {"devices": {"requests": [request]}},
            },
        )

    def pod(self, name: str, claim: str) -> None:
        self.core.create_namespaced_pod(
            NS,
            {
                "metadata": {"name": name},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": NODE},
                    "resourceClaims": [{"name": "qpu", "resourceClaimName": claim}],
                    "containers": [
                        {"name": "step", "image": "busybox", "resources": {"claims": [{"name": "qpu"}]}}
                    ],
                },
            },
        )

    def node_name(self, pod: str) -> str | None:
        return self.core.read_namespaced_pod(pod, NS).spec.node_name  # type: ignore[no-any-return]

    def status(self, claim: str) -> list[dict[str, Any]]:
        got = self.res.read_namespaced_resource_claim(claim, NS)
        return list(self.api.sanitize_for_serialization(got.status).get("devices") or [])

    def events(self, name: str) -> list[tuple[str, str, str]]:
        items = self.core.list_namespaced_event(NS, field_selector=f"involvedObject.name={name}").items
        return [(e.type, e.reason, e.message) for e in items]

    def delete_pod(self, pod: str, claim: str) -> None:
        """Delete the pod, then do what the resourceclaim controller does: unreserve, deallocate."""
        self.core.delete_namespaced_pod(pod, NS, grace_period_seconds=0)
        got = self.res.read_namespaced_resource_claim(claim, NS)
        got.status.reserved_for = None
        got.status.allocation = None
        got.status.devices = None
        self.res.replace_namespaced_resource_claim_status(claim, NS, got)


def _conditions(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in entry["conditions"]}


def _qpu(name: str, double: IQMServerDouble, health: Path) -> dict[str, Any]:
    return {
        "name": name,
        "vendor": "IQM",
        "model": "Apollo",
        "qubits": 20,
        "technology": "superconducting",
        "location": "cloud",
        "backend": "fake:IQMFakeApollo",
        "endpoint": f"{double.url}/{double.alias}",
        "health": {"probe": "file", "path": str(health)},
        "replicas": 1,
        "reservation": {"durationSeconds": 900, "cooldownSeconds": 15},
    }


def _created(create: Callable[[], Any]) -> None:
    """Create an object; one that exists already (409) is fine."""
    from kubernetes.client import ApiException

    try:
        create()
    except ApiException as exc:
        if exc.status != 409:
            raise


def _apply_rbac(api: Any) -> None:
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(api)
    for doc in yaml.safe_load_all((ROOT / "manifests" / "dra" / "rbac.yaml").read_text()):
        if not doc:
            continue
        ns = doc["metadata"].get("namespace")
        if doc["kind"] == "ClusterRole":
            rbac.create_cluster_role(doc)
        elif doc["kind"] == "ClusterRoleBinding":
            rbac.create_cluster_role_binding(doc)
        elif doc["kind"] == "Role":
            rbac.create_namespaced_role(ns, doc)
        elif doc["kind"] == "RoleBinding":
            rbac.create_namespaced_role_binding(ns, doc)


@pytest.fixture(scope="module")
def cluster(apiserver_kubeconfig: str) -> Iterator[Cluster]:  # noqa: F811 (the imported fixture)
    bin_dir = _bin_dir()
    assert bin_dir is not None
    if not (bin_dir / "kube-scheduler").is_file():
        pytest.skip("e2e: kube-scheduler not built; run `make controlplane`")
    state = Path(tempfile.mkdtemp(prefix="qbresv-", dir="/tmp"))
    health = state / "health"
    health.write_text("healthy")
    a, b = IQMServerDouble(None, alias="resv-a"), IQMServerDouble(None, alias="resv-b")
    procs: list[subprocess.Popen[bytes]] = []
    with a.running(), b.running():
        c = Cluster(apiserver_kubeconfig, state, a, b)
        for ns in (NS, "qubelet-system"):  # another module of the session may have made them
            _created(lambda ns=ns: c.core.create_namespace({"metadata": {"name": ns}}))
            _created(
                lambda ns=ns: c.core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
            )
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        c.core.create_node({"metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}}})
        capacity = {"cpu": "4", "memory": "8Gi", "pods": "20"}
        c.core.patch_node_status(
            NODE,
            {
                "status": {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "Test",
                            "message": "no kubelet",
                            "lastHeartbeatTime": now,
                            "lastTransitionTime": now,
                        }
                    ],
                }
            },
        )
        # The TaintNodesByCondition admission plugin taints a new Node not-ready; no kubelet lifts it.
        c.core.patch_node(NODE, {"spec": {"taints": []}})
        _created(
            lambda: c.res.create_device_class(
                {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "DeviceClass",
                    "metadata": {"name": DEVICE_CLASS_NAME},
                    "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRIVER_NAME}"'}}]},
                }
            )
        )
        # The controller runs as its ServiceAccount with exactly the shipped RBAC.
        c.core.create_namespaced_service_account(
            "qubelet-system", {"metadata": {"name": "qubelet-dra-controller"}}
        )
        _apply_rbac(c.api)
        token = c.core.create_namespaced_service_account_token(
            "qubelet-dra-controller", "qubelet-system", {"spec": {"expirationSeconds": 7200}}
        ).status.token
        config = yaml.safe_load(Path(apiserver_kubeconfig).read_text())
        config["users"] = [{"name": "sa", "user": {"token": token}}]
        config["contexts"][0]["context"]["user"] = "sa"
        sa_kubeconfig = state / "controller.kubeconfig"
        sa_kubeconfig.write_text(yaml.safe_dump(config))
        inventory = state / "qpus.yaml"
        inventory.write_text(
            yaml.safe_dump({"version": "v1", "qpus": [_qpu("resv-a", a, health), _qpu("resv-b", b, health)]})
        )
        c.controller_argv = [
            sys.executable, "-m", "qubelet", "dra-driver", "controller",
            f"--config={inventory}", f"--kubeconfig={sa_kubeconfig}", "--identity=e2e", "--metrics-port=0",
        ]  # fmt: skip
        with open(state / "scheduler.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        str(bin_dir / "kube-scheduler"),
                        f"--kubeconfig={apiserver_kubeconfig}",
                        "--leader-elect=false",
                        "--secure-port=0",
                        "-v=2",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        c.start_controller()
        try:
            wait_for(
                lambda: (
                    {"cloud/resv-a", "cloud/resv-b"}
                    <= {s.spec.pool.name for s in c.res.list_resource_slice().items if s.spec.devices}
                ),
                120,
                "the reservation QPUs' slices",
            )
            yield c
        finally:
            if c.controller is not None and c.controller.poll() is None:
                c.controller.terminate()
                c.controller.wait(timeout=20)
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=20)
            for piece in c.res.list_resource_slice().items:  # leave the session's API server as found
                if piece.spec.pool.name in ("cloud/resv-a", "cloud/resv-b"):
                    c.res.delete_resource_slice(piece.metadata.name)
            if os.environ.get("QUBELET_E2E_EVIDENCE"):
                out = Path(os.environ["QUBELET_E2E_EVIDENCE"])
                out.mkdir(parents=True, exist_ok=True)
                for name in ("controller.log", "scheduler.log"):
                    (out / name).write_bytes((state / name).read_bytes())


@pytest.fixture(autouse=True)
def fresh_faults(cluster: Cluster) -> None:
    cluster.a.faults, cluster.b.faults = Faults(), Faults()


def test_pod_waits_for_the_grant_then_binds_and_the_step_gets_the_reservation(
    cluster: Cluster, tmp_path: Path
) -> None:
    c = cluster
    c.a.faults.hold_reservations = True
    c.claim("held", ["resv-a"])
    c.pod("held", "held")
    pending = wait_for(
        lambda: [e for e in c.status("held") if _conditions(e)[RESERVED]["reason"] == "Pending"],
        60,
        "pending",
    )
    [held] = c.a.active_reservations()
    assert pending[0]["data"] == {"qpu": "resv-a", "state": "pending", "reservationID": held.id}
    time.sleep(11)  # the scheduler re-reads the claim every 5 s in PreBind
    assert c.node_name("held") is None
    assert ("Normal", "BindingConditionsPending") in [(t, r) for t, r, _ in c.events("held")]

    c.a.grant_pending()
    assert wait_for(lambda: c.node_name("held"), 60, "bound once granted") == NODE
    [entry] = c.status("held")
    assert (
        _conditions(entry)[RESERVED]["status"] == "True" and _conditions(entry)[FAILED]["status"] == "False"
    )
    assert entry["data"]["reservationID"] == held.id and entry["data"]["state"] == "granted"

    # The kubelet plugin's prepare, its real code against this API server: the CDI env.
    from dra_driver.client import KubeResourceAPI
    from dra_driver.devices import network_devices
    from dra_driver.driver import ClaimRef, QPUDriver
    from qubelet.inventory import load_config

    qpus = load_config(str(c.state / "qpus.yaml")).qpus
    driver = QPUDriver(
        KubeResourceAPI(api_client=c.api), network_devices(qpus), tmp_path / "cdi", tmp_path / "ckpt.json"
    )
    uid = c.res.read_namespaced_resource_claim("held", NS).metadata.uid
    [result] = driver.prepare([ClaimRef(NS, uid, "held")]).values()
    assert not result.error, result.error
    spec = json.loads((tmp_path / "cdi" / f"{DRIVER_NAME}-{uid}.json").read_text())
    assert f"{ENV_RESERVATION_ID}={held.id}" in spec["devices"][0]["containerEdits"]["env"]

    c.delete_pod("held", "held")
    wait_for(lambda: not c.a.active_reservations(), 30, "the reservation released")
    assert c.a.released == [held.id]


def test_refusal_moves_the_pod_to_the_other_qpu(cluster: Cluster) -> None:
    c = cluster
    c.a.faults.refuse_reservations = "booked by another user"
    c.claim("moved", ["resv-a", "resv-b"])
    c.pod("moved", "moved")
    wait_for(lambda: c.node_name("moved"), 120, "bound on the other QPU")
    [entry] = c.status("moved")
    assert entry["pool"] == "cloud/resv-b" and entry["data"]["state"] == "granted"
    events = c.events("moved")
    assert any(
        t == "Warning" and r == "ReservationRefused" and "booked by another user" in m for t, r, m in events
    )
    assert any(r == "FailedScheduling" and "reason=Refused" in m for _, r, m in events), events
    c.delete_pod("moved", "moved")
    wait_for(lambda: not c.b.active_reservations(), 30, "resv-b released")


def test_refusal_without_alternative_leaves_the_pod_pending_with_the_reason(cluster: Cluster) -> None:
    c = cluster
    c.a.faults.refuse_reservations = "maintenance window"
    c.claim("lonely", ["resv-a"])
    c.pod("lonely", "lonely")
    wait_for(
        lambda: [
            m for _, r, m in c.events("lonely") if r == "ReservationRefused" and "maintenance window" in m
        ],
        90,
        "a ReservationRefused event",
    )

    def unschedulable() -> bool:
        conds = c.core.read_namespaced_pod("lonely", NS).status.conditions or []
        return any(x.type == "PodScheduled" and x.status == "False" for x in conds)

    wait_for(unschedulable, 60, "the pod unschedulable")
    assert c.node_name("lonely") is None and not c.a.active_reservations()
    c.core.delete_namespaced_pod("lonely", NS, grace_period_seconds=0)


def test_kill9_mid_reservation_leaks_nothing(cluster: Cluster) -> None:
    c = cluster
    c.b.faults.hold_reservations = True
    c.claim("gone", ["resv-b"])
    c.pod("gone", "gone")
    wait_for(lambda: c.b.active_reservations(), 60, "the reservation asked for")
    assert c.controller is not None
    os.kill(c.controller.pid, signal.SIGKILL)
    c.controller.wait(timeout=10)
    c.delete_pod("gone", "gone")  # while no controller runs
    assert c.b.active_reservations(), "nobody released it yet"
    c.start_controller()
    wait_for(lambda: not c.b.active_reservations(), 60, "released by the restarted controller")
    assert not c.a.active_reservations() and not c.b.active_reservations()
