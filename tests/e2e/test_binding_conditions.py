"""Issue 20 on the real scheduler: a cloud QPU is reserved with its provider before the pod binds.

The session's control plane (``hack/cluster.py``: real kube-apiserver, controller-manager and
kube-scheduler, DRADeviceBindingConditions on) runs qubelet's DRA controller as its
ServiceAccount with the overlay's RBAC, and per node the kubelet plugin plus a kubelet double.
This module adds two reservation-enabled cloud QPUs, ``resv-a`` and ``resv-b``, each served by
an IQM server double on loopback (in this process; no token: an open server, the token paths
are unit-tested in tests/test_dra_reservations.py), by restarting the controller and
``cpu-node-1``'s kubelet plugin and kubelet double with the example inventory plus those two;
the original daemons are put back afterwards.

What the real scheduler must do with the conditions: hold the pod in PreBind until
``reserved`` is True, bind it then; on ``reservation-failed`` deallocate and try again, taking
the other QPU, or leave the pod pending. Evidence for the closing note goes to
``$QUBELET_E2E_EVIDENCE`` (a directory) when set.

"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import wait_for
from doubles.iqm_server import Faults, IQMServerDouble

from qubelet.inventory.names import DEVICE_CLASS_NAME, DRIVER_NAME, ENV_RESERVATION_ID

NODE = "cpu-node-1"
OWNER = DRIVER_NAME  # the controller's default --reservation-owner
ATTRS = f'device.attributes["{DRIVER_NAME}"]'
RESTARTED = ("dra-controller", f"kubelet-plugin-{NODE}", f"kubelet-double-{NODE}")


def _cmdline(pid: int) -> tuple[list[str], dict[str, str]]:
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    env = dict(
        e.decode().split("=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in e
    )
    return argv, env


def _config_arg(argv: list[str]) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith("--config="))


class Daemons:
    """The three processes this module runs with its own inventory, and how to put them back."""

    def __init__(self, procs: Any, inventory: Path) -> None:
        self.procs = procs
        self.inventory = inventory
        self.original: dict[str, tuple[list[str], dict[str, str]]] = {}
        for name in RESTARTED:
            pid = procs._pid(name)
            assert pid is not None, f"{name} is not running"
            self.original[name] = _cmdline(pid)

    def argv(self, name: str) -> list[str]:
        argv = self.original[name][0]
        if name == "dra-controller" or name.startswith("kubelet-plugin-"):
            argv = [a for a in argv if not a.startswith("--config=")] + [f"--config={self.inventory}"]
        return argv

    def start(self, name: str) -> None:
        self.procs.start(name, self.argv(name), self.original[name][1])

    def swap_in(self) -> None:
        for name in RESTARTED:
            self.procs.stop(name)
        for name in RESTARTED:
            self.start(name)

    def restore(self) -> None:
        for name in RESTARTED:
            self.procs.stop(name)
        for name in RESTARTED:
            argv, env = self.original[name]
            self.procs.start(name, argv, env)

    def kill9_controller(self) -> None:
        pid = self.procs._pid("dra-controller")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not self.procs.alive("dra-controller"), 10, "the controller to die")


class Env:
    def __init__(self, e2e: Any, a: IQMServerDouble, b: IQMServerDouble, daemons: Daemons, ns: str) -> None:
        self.e2e, self.a, self.b, self.daemons, self.ns = e2e, a, b, daemons, ns
        self.evidence = (
            Path(os.environ["QUBELET_E2E_EVIDENCE"]) if os.environ.get("QUBELET_E2E_EVIDENCE") else None
        )

    def record(self, name: str, text: str) -> None:
        if self.evidence is not None:
            self.evidence.mkdir(parents=True, exist_ok=True)
            (self.evidence / name).write_text(text)

    def kubectl(self, *args: str) -> str:
        return self.e2e.kubectl(*args)

    def pod(self, name: str) -> dict[str, Any]:
        return self.e2e.kubectl_json("get", "pod", name, "-n", self.ns)

    def claim_of(self, pod: str) -> dict[str, Any] | None:
        statuses = self.pod(pod)["status"].get("resourceClaimStatuses") or []
        if not statuses or not statuses[0].get("resourceClaimName"):
            return None
        return self.e2e.kubectl_json("get", "resourceclaim", statuses[0]["resourceClaimName"], "-n", self.ns)

    def events(self, pod: str) -> list[dict[str, Any]]:
        items = self.e2e.kubectl_json(
            "get", "events", "-n", self.ns, "--field-selector", f"involvedObject.name={pod}"
        )["items"]
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def make_pod(self, name: str, qpus: list[str]) -> None:
        """A pod pinned to NODE whose claim takes the first of ``qpus`` it can (firstAvailable)."""
        if len(qpus) == 1:
            request: dict[str, Any] = {"name": "qpu", "exactly": self._exact(qpus[0])}
        else:
            request = {
                "name": "qpu",
                "firstAvailable": [{"name": q.replace("-", ""), **self._exact(q)} for q in qpus],
            }
        template = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {"spec": {"devices": {"requests": [request]}}},
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": NODE},
                "resourceClaims": [{"name": "qpu", "resourceClaimTemplateName": name}],
                "containers": [
                    {"name": "step", "image": "busybox", "resources": {"claims": [{"name": "qpu"}]}}
                ],
            },
        }
        self.e2e.apply(template, pod)

    @staticmethod
    def _exact(qpu: str) -> dict[str, Any]:
        return {
            "deviceClassName": DEVICE_CLASS_NAME,
            "selectors": [{"cel": {"expression": f'{ATTRS}.qpu == "{qpu}"'}}],
        }

    def delete_pod(self, name: str) -> None:
        self.kubectl("delete", "pod", name, "-n", self.ns, "--wait=false")
        wait_for(lambda: not self.kubectl_ok("get", "pod", name, "-n", self.ns), 60, f"pod {name} gone")

    def kubectl_ok(self, *args: str) -> bool:
        return bool(self.e2e.kubectl(*args, check=False))


def _qpu(name: str, double: IQMServerDouble, health: Path) -> dict[str, Any]:
    return {
        "name": name,
        "vendor": "IQM",
        "model": "Apollo",
        "qubits": 20,
        "technology": "superconducting",
        "location": "cloud",
        "topology": "square-lattice",
        "backend": "fake:IQMFakeApollo",
        "endpoint": f"{double.url}/{double.alias}",
        "health": {"probe": "file", "path": str(health)},
        "replicas": 1,
        "reservation": {"durationSeconds": 900, "cooldownSeconds": 20},
    }


@pytest.fixture(scope="module")
def env(e2e_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("resv")
    health = tmp / "health"
    health.write_text("healthy")
    a, b = IQMServerDouble(None, alias="resv-a"), IQMServerDouble(None, alias="resv-b")
    procs = e2e_cluster.cluster.procs
    with a.running(), b.running():
        pid = procs._pid("dra-controller")
        assert pid is not None, "the harness runs the DRA controller"
        base = yaml.safe_load(Path(_config_arg(_cmdline(pid)[0])).read_text())
        base["qpus"] = [*base["qpus"], _qpu("resv-a", a, health), _qpu("resv-b", b, health)]
        inventory = tmp / "qpus.yaml"
        inventory.write_text(yaml.safe_dump(base))
        daemons = Daemons(procs, inventory)
        ns = f"resv-{uuid.uuid4().hex[:6]}"
        e2e_cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"quantum.example.com/qpu-tenant": "true"}},
            }
        )
        wait_for(lambda: e2e_cluster.kubectl("get", "serviceaccount", "default", "-n", ns), 30, "default SA")
        daemons.swap_in()
        try:
            wait_for(
                lambda: (
                    {"cloud/resv-a", "cloud/resv-b"}
                    <= {
                        s["spec"]["pool"]["name"]
                        for s in e2e_cluster.kubectl_json("get", "resourceslices")["items"]
                        if s["spec"]["devices"]
                    }
                ),
                90,
                "the reservation QPUs' slices",
            )
            yield Env(e2e_cluster, a, b, daemons, ns)
        finally:
            e2e_cluster.kubectl("delete", "namespace", ns, "--wait=false")
            daemons.restore()


@pytest.fixture(autouse=True)
def fresh_faults(env: Env) -> None:
    env.a.faults, env.b.faults = Faults(), Faults()


def _bound(env: Env, pod: str) -> Any:
    p = env.pod(pod)
    return p if p["spec"].get("nodeName") else None


def _device_status(claim: dict[str, Any]) -> dict[str, Any]:
    [entry] = claim["status"]["devices"]
    return entry


def test_pod_stays_unbound_until_the_reservation_is_granted_then_binds(env: Env) -> None:
    env.a.faults.hold_reservations = True
    env.make_pod("held", ["resv-a"])

    def pending() -> Any:
        claim = env.claim_of("held")
        if not claim or not claim["status"].get("devices"):
            return None
        conds = {c["type"]: c for c in _device_status(claim)["conditions"]}
        return claim if conds[f"{DRIVER_NAME}/reserved"]["reason"] == "Pending" else None

    claim = wait_for(pending, 90, "the claim allocated and its reservation pending")
    [held] = env.a.active_reservations(OWNER)
    assert held.status == "pending"
    # The scheduler re-reads the claim every 5 s in PreBind: it has had two chances to bind.
    time.sleep(12)
    assert env.pod("held")["spec"].get("nodeName") in (None, ""), "bound before the reservation"
    reasons = [e["reason"] for e in env.events("held")]
    assert "BindingConditionsPending" in reasons, reasons
    env.record("held-pending-describe.txt", env.kubectl("describe", "pod", "held", "-n", env.ns))
    env.record("held-pending-claim-status.json", json.dumps(claim["status"], indent=2))

    env.a.grant_pending()
    pod = wait_for(lambda: _bound(env, "held"), 60, "the pod bound once granted")
    assert pod["spec"]["nodeName"] == NODE
    claim = env.claim_of("held")
    assert claim is not None
    entry = _device_status(claim)
    conds = {c["type"]: c for c in entry["conditions"]}
    assert conds[f"{DRIVER_NAME}/reserved"]["status"] == "True"
    assert conds[f"{DRIVER_NAME}/reservation-failed"]["status"] == "False"
    assert entry["data"]["reservationID"] == held.id and entry["data"]["state"] == "granted"
    env.record("held-bound-describe.txt", env.kubectl("describe", "pod", "held", "-n", env.ns))
    env.record(
        "held-bound-claim.txt",
        env.kubectl("get", "resourceclaim", claim["metadata"]["name"], "-n", env.ns, "-o", "yaml"),
    )

    # The step container's env, as the kubelet double resolved it from the plugin's CDI spec.
    prepared = env.e2e.prepared(env.ns, "held")
    env.record("held-prepared.json", json.dumps(prepared, indent=2))
    assert f"{ENV_RESERVATION_ID}={held.id}" in json.dumps(prepared)

    # Deleting the pod releases the reservation.
    env.delete_pod("held")
    wait_for(lambda: not env.a.active_reservations(OWNER), 60, "the reservation released")
    assert held.id in env.a.released


def test_refused_reservation_moves_the_pod_to_the_other_qpu(env: Env) -> None:
    env.a.faults.refuse_reservations = "resv-a is booked by another user until 18:00"
    env.make_pod("moved", ["resv-a", "resv-b"])
    pod = wait_for(lambda: _bound(env, "moved"), 120, "the pod bound on the other QPU")
    claim = env.claim_of("moved")
    assert claim is not None
    [result] = claim["status"]["allocation"]["devices"]["results"]
    assert result["pool"] == "cloud/resv-b", result
    entry = _device_status(claim)
    assert entry["data"]["state"] == "granted" and entry["pool"] == "cloud/resv-b"
    refused = [e for e in env.events("moved") if e["reason"] == "ReservationRefused"]
    assert refused and "booked by another user" in refused[0]["message"] and refused[0]["type"] == "Warning"
    assert pod["spec"]["nodeName"] == NODE
    env.record("moved-describe.txt", env.kubectl("describe", "pod", "moved", "-n", env.ns))
    env.delete_pod("moved")
    wait_for(lambda: not env.b.active_reservations(OWNER), 60, "resv-b's reservation released")
    assert not env.a.active_reservations(OWNER)


def test_refused_reservation_without_alternative_leaves_the_pod_cleanly_pending(env: Env) -> None:
    env.a.faults.refuse_reservations = "maintenance window"
    env.make_pod("lonely", ["resv-a"])

    def warned() -> Any:
        return [e for e in env.events("lonely") if e["reason"] == "ReservationRefused"]

    [event] = wait_for(warned, 90, "a ReservationRefused event on the pod")[:1]
    assert "maintenance window" in event["message"] and "withheld" in event["message"]

    # The scheduler deallocates and finds no other device: pending, unbound, nothing held.
    def unschedulable() -> Any:
        conds = {c["type"]: c for c in env.pod("lonely")["status"].get("conditions", [])}
        c = conds.get("PodScheduled")
        return c if c and c["status"] == "False" else None

    wait_for(unschedulable, 60, "the pod reported unschedulable")
    assert not env.pod("lonely")["spec"].get("nodeName")
    assert not env.a.active_reservations(OWNER)
    env.record("lonely-describe.txt", env.kubectl("describe", "pod", "lonely", "-n", env.ns))
    env.delete_pod("lonely")


def test_kill9_of_the_controller_mid_reservation_leaks_nothing(env: Env) -> None:
    env.a.faults.hold_reservations = True
    env.b.faults.hold_reservations = True
    env.make_pod("gone", ["resv-a"])
    env.make_pod("kept", ["resv-b"])
    wait_for(lambda: env.a.active_reservations(OWNER) and env.b.active_reservations(OWNER), 90, "both asked")
    [kept] = env.b.active_reservations(OWNER)
    env.daemons.kill9_controller()
    env.delete_pod("gone")  # its pod goes away while no controller runs
    assert env.a.active_reservations(OWNER), "nobody released it yet"
    env.daemons.start("dra-controller")
    wait_for(
        lambda: not env.a.active_reservations(OWNER), 60, "the orphaned reservation released after restart"
    )
    # The surviving claim keeps its reservation: asked again by key, not booked twice.
    env.b.grant_pending()
    wait_for(lambda: _bound(env, "kept"), 60, "the surviving pod bound")
    claim = env.claim_of("kept")
    assert claim is not None and _device_status(claim)["data"]["reservationID"] == kept.id
    assert len([r for r in env.b.reservations.values() if r.owner == OWNER and r.status == "granted"]) == 1
    env.delete_pod("kept")
    wait_for(lambda: not env.b.active_reservations(OWNER), 60, "the surviving reservation released")
    leaked = env.a.active_reservations(OWNER) + env.b.active_reservations(OWNER)
    env.record(
        "kill9-leaks.json",
        json.dumps(
            {
                "active_after": [r.id for r in leaked],
                "released_a": env.a.released,
                "released_b": env.b.released,
            },
            indent=2,
        ),
    )
    assert leaked == []
