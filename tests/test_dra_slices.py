"""ResourceSlice building and reconciliation against the in-memory FakeResourceAPI.

Create, no duplicate on a second pass, update bumps the pool generation, stale slices go,
unhealthy devices leave and come back (or carry a taint), chunking at 128 devices, and cloud
pools published once by the Lease holder among two controllers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from doubles.fake_resource_api import FakeResourceAPI

from dra_driver.constants import PUBLISHER_LABEL, UNHEALTHY_TAINT_KEY
from dra_driver.controller import CloudController, LeaderElector
from dra_driver.reconcile import SliceReconciler
from dra_driver.slices import KUBELET_PLUGIN_PUBLISHER, network_slices, node_slices, slice_name, to_dict
from qubelet.errors import NotFound
from qubelet.inventory import Config, ProbeResult, parse_config
from qubelet.inventory.names import DRIVER_NAME

pytestmark = pytest.mark.timeout(30)
NODE = "node-a"


def qpu(name: str, location: str, qubits: int = 5, replicas: int = 1, **extra: Any) -> dict[str, Any]:
    """A QPU entry; an on-prem one is cabled to NODE unless ``extra`` binds it otherwise."""
    if location == "onprem" and "nodeSelector" not in extra:
        extra.setdefault("nodes", [NODE])
    return {
        "name": name,
        "vendor": "IQM",
        "model": "Adonis",
        "qubits": qubits,
        "technology": "superconducting",
        "location": location,
        "topology": "star",
        "backend": "fake:IQMFakeAdonis",
        "calibration": {"fidelity2q": 0.965, "readoutFidelity": 0.95},
        "replicas": replicas,
        **extra,
    }


def config(*qpus: dict[str, Any]) -> Config:
    return parse_config({"version": "v1", "qpus": list(qpus)}, "test")


def node_reconciler(api: FakeResourceAPI) -> SliceReconciler:
    return SliceReconciler(
        api,
        label_selector=f"{PUBLISHER_LABEL}={KUBELET_PLUGIN_PUBLISHER}",
        field_selector=f"spec.driver={DRIVER_NAME},spec.nodeName={NODE}",
    )


def test_node_slice_shape() -> None:
    cfg = config(qpu("adonis-onprem", "onprem", replicas=2), qpu("apollo-cloud", "cloud", qubits=20))
    (s,) = node_slices(cfg.qpus, NODE, {"adonis-onprem": True, "apollo-cloud": True})
    doc = to_dict(s)
    assert doc["apiVersion"] == "resource.k8s.io/v1" and doc["kind"] == "ResourceSlice"
    spec = doc["spec"]
    assert spec["driver"] == DRIVER_NAME and spec["nodeName"] == NODE and "allNodes" not in spec
    assert spec["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    assert [d["name"] for d in spec["devices"]] == ["adonis-onprem-r0", "adonis-onprem-r1"]
    attrs = spec["devices"][0]["attributes"]
    assert attrs["qubits"] == {"int": 5}
    assert attrs["location"] == {"string": "onprem"}
    assert attrs["fidelity2q"] == {"string": "0.965"} and attrs["readoutFidelity"] == {"string": "0.95"}
    assert {"vendor", "model", "technology", "topology", "health"} <= set(attrs)
    assert spec["devices"][0]["capacity"] == {"qubits": {"value": "5"}}


def test_node_without_onprem_qpus_publishes_nothing() -> None:
    api = FakeResourceAPI()
    onprem = config(qpu("adonis-onprem", "onprem"), qpu("apollo-cloud", "cloud"))
    node_reconciler(api).reconcile(node_slices(onprem.qpus, NODE, {}))
    (s,) = api.slices.values()
    assert s.spec.devices == [] or s.spec.devices is None  # all unhealthy: an empty pool
    cloud_only = config(qpu("apollo-cloud", "cloud"))
    assert node_slices(cloud_only.qpus, NODE, {"apollo-cloud": True}) == []
    assert node_reconciler(api).reconcile([]).deleted == [f"{NODE}-{DRIVER_NAME}-0"]
    assert api.slices == {}


def test_network_slices_all_nodes_or_selector() -> None:
    cfg = config(
        qpu("apollo-cloud", "cloud", qubits=20),
        qpu("deneb-cloud", "cloud", nodeSelector={"qubelet.io/egress": "true"}),
        qpu("adonis-onprem", "onprem"),
    )
    slices = {s.spec.pool.name: to_dict(s)["spec"] for s in network_slices(cfg.qpus, {})}
    assert set(slices) == {"cloud/apollo-cloud", "cloud/deneb-cloud"}
    assert slices["cloud/apollo-cloud"]["allNodes"] is True
    assert slices["cloud/apollo-cloud"]["devices"] == []  # not probed yet → not offered
    term = slices["cloud/deneb-cloud"]["nodeSelector"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term == {"key": "qubelet.io/egress", "operator": "In", "values": ["true"]}


def test_reconcile_create_then_no_duplicate_then_update_and_stale() -> None:
    api = FakeResourceAPI()
    rec = node_reconciler(api)
    cfg = config(qpu("adonis-onprem", "onprem", replicas=2))
    healthy = {"adonis-onprem": True}
    r1 = rec.reconcile(node_slices(cfg.qpus, NODE, healthy))
    assert len(r1.created) == 1 and not r1.updated
    writes = api.calls["create_resource_slice"] + api.calls["replace_resource_slice"]
    r2 = rec.reconcile(node_slices(cfg.qpus, NODE, healthy))
    assert not r2.changed and len(api.slices) == 1
    assert api.calls["create_resource_slice"] + api.calls["replace_resource_slice"] == writes
    # a change in the inventory bumps the pool generation
    cfg2 = config(qpu("adonis-onprem", "onprem", replicas=3))
    r3 = rec.reconcile(node_slices(cfg2.qpus, NODE, healthy))
    assert r3.updated and not r3.created
    (s,) = api.slices.values()
    assert s.spec.pool.generation == 2 and len(s.spec.devices) == 3
    # a slice of ours that is no longer wanted (an old chunk) is deleted; others' slices stay
    stale = node_slices(cfg2.qpus, NODE, healthy)[0]
    stale.metadata.name = f"{NODE}-{DRIVER_NAME}-7"
    api.create_resource_slice(stale)
    on_b = config(qpu("adonis-onprem", "onprem", replicas=3, nodes=["node-b"]))
    foreign = node_slices(on_b.qpus, "node-b", healthy)[0]
    api.create_resource_slice(foreign)
    r4 = rec.reconcile(node_slices(cfg2.qpus, NODE, healthy))
    assert r4.deleted == [f"{NODE}-{DRIVER_NAME}-7"]
    assert sorted(api.slices) == sorted([f"{NODE}-{DRIVER_NAME}-0", f"node-b-{DRIVER_NAME}-0"])


def test_unhealthy_device_removed_and_restored() -> None:
    api = FakeResourceAPI()
    rec = node_reconciler(api)
    cfg = config(qpu("adonis-onprem", "onprem"), qpu("deneb-onprem", "onprem"))
    rec.reconcile(node_slices(cfg.qpus, NODE, {"adonis-onprem": True, "deneb-onprem": True}))
    rec.reconcile(node_slices(cfg.qpus, NODE, {"adonis-onprem": False, "deneb-onprem": True}))
    (s,) = api.slices.values()
    assert [d.name for d in s.spec.devices] == ["deneb-onprem-r0"] and s.spec.pool.generation == 2
    rec.reconcile(node_slices(cfg.qpus, NODE, {"adonis-onprem": True, "deneb-onprem": True}))
    (s,) = api.slices.values()
    assert [d.name for d in s.spec.devices] == ["adonis-onprem-r0", "deneb-onprem-r0"]
    assert s.spec.pool.generation == 3


def test_unhealthy_device_tainted_in_taint_mode() -> None:
    cfg = config(qpu("adonis-onprem", "onprem"))
    (s,) = node_slices(cfg.qpus, NODE, {"adonis-onprem": False}, mode="taint")
    (device,) = to_dict(s)["spec"]["devices"]
    assert device["taints"] == [{"key": UNHEALTHY_TAINT_KEY, "value": "true", "effect": "NoSchedule"}]
    assert device["attributes"]["health"] == {"string": "Unhealthy"}


def test_large_pool_is_chunked_at_128_devices() -> None:
    api = FakeResourceAPI()
    cfg = config(qpu("big-onprem", "onprem", replicas=300))
    slices = node_slices(cfg.qpus, NODE, {"big-onprem": True})
    assert [len(s.spec.devices) for s in slices] == [128, 128, 44]
    assert {s.spec.pool.resource_slice_count for s in slices} == {3}
    node_reconciler(api).reconcile(slices)
    assert len(api.slices) == 3
    smaller = node_slices(config(qpu("big-onprem", "onprem", replicas=100)).qpus, NODE, {"big-onprem": True})
    result = node_reconciler(api).reconcile(smaller)
    assert len(result.deleted) == 2 and len(api.slices) == 1
    (s,) = api.slices.values()
    assert s.spec.pool.generation == 2 and s.spec.pool.resource_slice_count == 1


def test_replace_with_stale_resource_version_conflicts() -> None:
    api = FakeResourceAPI()
    cfg = config(qpu("adonis-onprem", "onprem"))
    (s,) = node_slices(cfg.qpus, NODE, {"adonis-onprem": True})
    created = api.create_resource_slice(s)
    api.replace_resource_slice(created.metadata.name, created)
    with pytest.raises(Exception) as info:
        api.replace_resource_slice(created.metadata.name, created)
    assert getattr(info.value, "status", None) == 409


class Clock:
    def __init__(self) -> None:
        self.t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.t


def healthy_probe(q: Any) -> ProbeResult:
    return ProbeResult(True, 0.0, "test")


def test_cloud_pool_published_once_by_the_leader() -> None:
    api = FakeResourceAPI()
    clock = Clock()
    cfg = config(qpu("apollo-cloud", "cloud", qubits=20, replicas=4), qpu("adonis-onprem", "onprem"))
    a = CloudController(cfg, api, "ctrl-a", probe=healthy_probe, now=clock, lease_duration_seconds=15)
    b = CloudController(cfg, api, "ctrl-b", probe=healthy_probe, now=clock, lease_duration_seconds=15)
    a.probe_now()
    b.probe_now()
    ra = a.run_once()
    rb = b.run_once()
    assert ra is not None and ra.created == [slice_name("cloud/apollo-cloud")]
    assert rb is None  # standing by
    for _ in range(3):
        clock.t += dt.timedelta(seconds=5)
        assert a.run_once() is not None and not a.run_once().changed  # type: ignore[union-attr]
        assert b.run_once() is None
    (s,) = api.slices.values()
    assert s.spec.all_nodes is True and len(s.spec.devices) == 4 and s.spec.pool.generation == 1
    lease = api.leases[("qubelet-system", "qpu-quantum-example-com-controller")]
    assert lease.spec.holder_identity == "ctrl-a"
    # leader disappears: after the lease expires, b takes over and does not duplicate the pool
    clock.t += dt.timedelta(seconds=16)
    rb = b.run_once()
    assert rb is not None and not rb.changed
    assert len(api.slices) == 1
    lease = api.leases[("qubelet-system", "qpu-quantum-example-com-controller")]
    assert lease.spec.holder_identity == "ctrl-b" and lease.spec.lease_transitions == 1
    assert a.run_once() is None


class StaleReads:
    """The shared fake, seen by a candidate whose read happened before the other's create."""

    def __init__(self, api: FakeResourceAPI) -> None:
        self.api = api

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)

    def read_lease(self, namespace: str, name: str) -> Any:
        raise NotFound("leases: not found (stale)", status=404)


def test_lease_race_on_create_has_one_winner() -> None:
    api = FakeResourceAPI()
    clock = Clock()
    a = LeaderElector(api, "a", now=clock)
    b = LeaderElector(StaleReads(api), "b", now=clock)  # type: ignore[arg-type]
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False  # its create got 409 AlreadyExists
    assert api.calls["create_lease"] == 2
    assert api.leases[("qubelet-system", "qpu-quantum-example-com-controller")].spec.holder_identity == "a"


class Unreachable(FakeResourceAPI):
    def read_lease(self, namespace: str, name: str) -> Any:
        raise ConnectionRefusedError("connection refused")


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_controller_probes_ready_as_leader_or_standby_not_when_api_is_down() -> None:
    cfg = config(qpu("apollo-cloud", "cloud"))
    api = FakeResourceAPI()
    leader = CloudController(cfg, api, "ctrl-a", probe=healthy_probe)
    standby = CloudController(cfg, api, "ctrl-b", probe=healthy_probe)
    down = CloudController(cfg, Unreachable(), "ctrl-c", probe=healthy_probe)
    assert leader.liveness_problem() == "controller loop is not running"
    assert leader.readiness_problem() == "no leader election attempt yet"
    try:
        for c in (leader, standby, down):
            c.start()
        _wait(lambda: all(c.last_error is not None for c in (leader, standby, down)))
        assert leader.readiness_problem() == ""
        assert standby.readiness_problem() == ""
        assert down.readiness_problem() == "cannot reach the lease: connection refused"
        assert all(c.liveness_problem() == "" for c in (leader, standby, down))
    finally:
        for c in (leader, standby, down):
            c.stop()
    assert leader.liveness_problem() == "controller loop is not running"


def test_taint_mode_is_stable_when_the_server_fills_time_added() -> None:
    """Issue 19 (2): the server stamps ``timeAdded`` on every taint; that alone is no change."""
    api = FakeResourceAPI()
    rec = node_reconciler(api)
    cfg = config(qpu("adonis-onprem", "onprem", replicas=3), qpu("deneb-onprem", "onprem"))
    health = {"adonis-onprem": False, "deneb-onprem": True}
    rec.reconcile(node_slices(cfg.qpus, NODE, health, mode="taint"))
    (s,) = api.slices.values()
    stamped = [t.time_added for d in s.spec.devices for t in d.taints or []]
    assert len(stamped) == 3 and all(stamped)  # the double stamps them as the API server does
    writes = api.calls["create_resource_slice"] + api.calls["replace_resource_slice"]
    for _ in range(10):
        assert not rec.reconcile(node_slices(cfg.qpus, NODE, health, mode="taint")).changed
    assert api.calls["create_resource_slice"] + api.calls["replace_resource_slice"] == writes
    (s,) = api.slices.values()
    assert s.spec.pool.generation == 1


def test_taint_keeps_its_time_added_when_another_device_changes() -> None:
    """A replace carries the old ``timeAdded`` of an unchanged taint (upstream copyTaintTimeAdded)."""
    api = FakeResourceAPI()
    rec = node_reconciler(api)
    cfg = config(qpu("adonis-onprem", "onprem"), qpu("deneb-onprem", "onprem"))
    rec.reconcile(node_slices(cfg.qpus, NODE, {"adonis-onprem": False, "deneb-onprem": True}, mode="taint"))
    first = {d.name: d.taints for d in next(iter(api.slices.values())).spec.devices}
    api.clock = lambda: dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    result = rec.reconcile(
        node_slices(cfg.qpus, NODE, {"adonis-onprem": False, "deneb-onprem": False}, mode="taint")
    )
    assert result.updated
    (s,) = api.slices.values()
    now = {d.name: d.taints for d in s.spec.devices}
    assert now["adonis-onprem-r0"][0].time_added == first["adonis-onprem-r0"][0].time_added
    assert now["deneb-onprem-r0"][0].time_added.year == 2031
    assert s.spec.pool.generation == 2


def test_empty_pool_is_stable_when_the_server_omits_empty_lists() -> None:
    """The server drops ``devices: []`` (omitempty); an empty pool must not be rewritten each pass."""
    api = FakeResourceAPI()
    rec = node_reconciler(api)
    cfg = config(qpu("adonis-onprem", "onprem"))
    rec.reconcile(node_slices(cfg.qpus, NODE, {}))
    for _ in range(3):
        assert not rec.reconcile(node_slices(cfg.qpus, NODE, {})).changed


@pytest.mark.parametrize("size", [1, 64, 65, 128, 1000])
def test_tainted_pools_are_cut_at_64_devices(size: int) -> None:
    """Issue 19 (3): 128 devices per slice, but 64 when any device carries taints."""
    api = FakeResourceAPI()
    cfg = config(qpu("big-onprem", "onprem", replicas=size))
    slices = node_slices(cfg.qpus, NODE, {"big-onprem": False}, mode="taint")
    assert all(len(s.spec.devices) <= 64 for s in slices)
    assert sum(len(s.spec.devices) for s in slices) == size
    assert len(slices) == -(-size // 64)
    result = node_reconciler(api).reconcile(slices)  # the double rejects > 64 tainted devices
    assert len(result.created) == len(slices)
    published = sorted(dev for _, _, dev in api.scheduler_devices())
    assert published == sorted(f"big-onprem-r{i}" for i in range(size))
    for _ in range(10 if size <= 128 else 1):  # 10 passes of 1000 devices: tests/e2e/test_slices.py
        again = node_slices(cfg.qpus, NODE, {"big-onprem": False}, mode="taint")
        assert not node_reconciler(api).reconcile(again).changed
    assert {s.spec.pool.generation for s in api.slices.values()} == {1}
