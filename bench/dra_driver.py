"""Benchmark the QPU DRA driver: NodePrepareResources latency and ResourceSlice reconcile time.

Run: ``python bench/dra_driver.py`` (no arguments, well under a minute on 2 cores).

- prepare: NodePrepareResources over real gRPC on a unix socket, 1 claim and 100 claims per
  call, each followed by NodeUnprepareResources (so every prepare does the full work: claim
  read from the in-process fake API, CDI spec write, checkpoint write with fsync).
  Floor: a bare gRPC round trip on the same kind of socket (a DRAPlugin servicer that returns
  an empty response).
- reconcile: 1,000 devices (10 QPUs x 100 replicas, 8 slices) against the in-memory fake API
  server: first publish (create), a no-change pass, and a pass after a health change.
  Floor: a bare list of the same slices with the same selectors.
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import grpc  # noqa: E402
from doubles.fake_resource_api import FakeResourceAPI, allocated_claim  # noqa: E402

from dra_driver.api.dra.v1 import api_pb2 as v1  # noqa: E402
from dra_driver.api.dra.v1 import api_pb2_grpc as v1_grpc  # noqa: E402
from dra_driver.constants import PUBLISHER_LABEL  # noqa: E402
from dra_driver.devices import all_devices  # noqa: E402
from dra_driver.driver import QPUDriver  # noqa: E402
from dra_driver.grpc_server import serve_unix, stop_unix  # noqa: E402
from dra_driver.metrics import DRAMetrics  # noqa: E402
from dra_driver.reconcile import SliceReconciler  # noqa: E402
from dra_driver.services import DRAPluginV1  # noqa: E402
from dra_driver.slices import KUBELET_PLUGIN_PUBLISHER, node_slices  # noqa: E402
from qubelet.inventory import parse_config  # noqa: E402
from qubelet.inventory.names import DRIVER_NAME  # noqa: E402

NODE = "bench-node"


def pct(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def inventory(qpus: int, replicas: int) -> object:
    """A validated inventory of ``qpus`` on-prem QPUs with ``replicas`` devices each."""
    return parse_config(
        {
            "version": "v1",
            "qpus": [
                {
                    "name": f"qpu-{i}",
                    "vendor": "IQM",
                    "model": "Adonis",
                    "qubits": 5,
                    "technology": "superconducting",
                    "location": "onprem",
                    "nodes": [NODE],
                    "topology": "star",
                    "backend": "fake:IQMFakeAdonis",
                    "endpoint": "https://iqm.example.com",
                    "tokensFile": "/etc/qubelet/tokens.json",
                    "calibration": {"fidelity2q": 0.965, "readoutFidelity": 0.95},
                    "replicas": replicas,
                }
                for i in range(qpus)
            ],
        },
        "bench",
    )


class Floor(v1_grpc.DRAPluginServicer):
    """The cheapest possible DRAPlugin: the gRPC round trip alone."""

    def NodePrepareResources(self, request, context):
        """Prepare nothing: the gRPC baseline without the driver's work."""
        return v1.NodePrepareResourcesResponse()

    def NodeUnprepareResources(self, request, context):
        """Unprepare nothing: the gRPC baseline without the driver's work."""
        return v1.NodeUnprepareResourcesResponse()


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_prepare(tmp: Path) -> dict[str, float]:
    """NodePrepareResources latency through the real driver against the baseline servicer."""
    config = inventory(2, 100)
    api = FakeResourceAPI()
    devices = all_devices(config.qpus, NODE)  # type: ignore[attr-defined]
    names = sorted(devices)
    claims = []
    for i in range(100):
        c = api.put_claim(allocated_claim("bench", f"c{i}", [(DRIVER_NAME, NODE, names[i], "qpu")]))
        claims.append(v1.Claim(namespace="bench", uid=c.metadata.uid, name=f"c{i}"))
    driver = QPUDriver(api, devices.values(), tmp / "cdi", tmp / "plugin" / "checkpoint.json", DRAMetrics())
    sock, floor_sock = tmp / "dra.sock", tmp / "floor.sock"
    server = serve_unix(sock, lambda s: v1_grpc.add_DRAPluginServicer_to_server(DRAPluginV1(driver), s))
    floor_server = serve_unix(floor_sock, lambda s: v1_grpc.add_DRAPluginServicer_to_server(Floor(), s))
    chan, floor_chan = grpc.insecure_channel(f"unix://{sock}"), grpc.insecure_channel(f"unix://{floor_sock}")
    stub, floor_stub = v1_grpc.DRAPluginStub(chan), v1_grpc.DRAPluginStub(floor_chan)
    one = v1.NodePrepareResourcesRequest(claims=claims[:1])
    one_un = v1.NodeUnprepareResourcesRequest(claims=claims[:1])
    hundred = v1.NodePrepareResourcesRequest(claims=claims)
    hundred_un = v1.NodeUnprepareResourcesRequest(claims=claims)
    try:
        for _ in range(20):  # warm up both
            floor_stub.NodePrepareResources(one)
            stub.NodePrepareResources(one)
            stub.NodeUnprepareResources(one_un)
        floor = [timed(lambda: floor_stub.NodePrepareResources(one)) for _ in range(400)]
        p1: list[float] = []
        for _ in range(1000):
            p1.append(timed(lambda: stub.NodePrepareResources(one)))
            stub.NodeUnprepareResources(one_un)
        resp = stub.NodePrepareResources(hundred)
        assert all(not r.error for r in resp.claims.values()) and len(resp.claims) == 100
        stub.NodeUnprepareResources(hundred_un)
        p100: list[float] = []
        for _ in range(50):
            p100.append(timed(lambda: stub.NodePrepareResources(hundred)))
            stub.NodeUnprepareResources(hundred_un)
        again = [timed(lambda: stub.NodePrepareResources(one)) for _ in range(200)]  # idempotent path
        stub.NodeUnprepareResources(one_un)
    finally:
        chan.close()
        floor_chan.close()
        stop_unix(server, sock)
        stop_unix(floor_server, floor_sock)
    return {
        "floor_p50_ms": pct(floor, 0.5) * 1e3,
        "floor_p99_ms": pct(floor, 0.99) * 1e3,
        "prepare_p50_ms": pct(p1, 0.5) * 1e3,
        "prepare_p99_ms": pct(p1, 0.99) * 1e3,
        "prepare_100_p50_ms": pct(p100, 0.5) * 1e3,
        "prepare_100_p99_ms": pct(p100, 0.99) * 1e3,
        "prepare_repeat_p99_ms": pct(again, 0.99) * 1e3,
    }


def bench_reconcile() -> dict[str, float]:
    """ResourceSlice reconcile time for a changed and an unchanged inventory."""
    config = inventory(10, 100)
    qpus = config.qpus  # type: ignore[attr-defined]
    api = FakeResourceAPI()
    label, field = (
        f"{PUBLISHER_LABEL}={KUBELET_PLUGIN_PUBLISHER}",
        f"spec.driver={DRIVER_NAME},spec.nodeName={NODE}",
    )
    rec = SliceReconciler(api, label, field)
    healthy = {q.name: True for q in qpus}
    create = timed(lambda: rec.reconcile(node_slices(qpus, NODE, healthy)))
    assert sum(len(s.spec.devices) for s in api.slices.values()) == 1000
    noop = [timed(lambda: rec.reconcile(node_slices(qpus, NODE, healthy))) for _ in range(5)]
    changes = []
    for i in range(5):
        health = {**healthy, f"qpu-{i}": False}
        changes.append(timed(lambda h=health: rec.reconcile(node_slices(qpus, NODE, h))))  # type: ignore[misc]
    floor = [timed(lambda: api.list_resource_slices(label, field)) for _ in range(5)]
    return {
        "reconcile_1000_create_s": create,
        "reconcile_1000_devices_s": statistics.median(noop),
        "reconcile_1000_update_s": statistics.median(changes),
        "list_floor_s": statistics.median(floor),
        "slices": len(api.slices),
    }


def main() -> int:
    """Run the DRA driver benchmark and print its table; the exit status."""
    tmp = Path(tempfile.mkdtemp(prefix="drab"))
    try:
        p = bench_prepare(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    r = bench_reconcile()
    rows = [
        ("bare gRPC round trip (floor)", "1", f"{p['floor_p50_ms']:.3f}", f"{p['floor_p99_ms']:.3f}"),
        ("NodePrepareResources", "1", f"{p['prepare_p50_ms']:.3f}", f"{p['prepare_p99_ms']:.3f}"),
        ("NodePrepareResources", "100", f"{p['prepare_100_p50_ms']:.3f}", f"{p['prepare_100_p99_ms']:.3f}"),
        ("NodePrepareResources (already prepared)", "1", "", f"{p['prepare_repeat_p99_ms']:.3f}"),
    ]
    print(f"{'call':42} {'claims':>6} {'p50 ms':>9} {'p99 ms':>9}")
    for name, n, p50, p99 in rows:
        print(f"{name:42} {n:>6} {p50:>9} {p99:>9}")
    print()
    print(f"{'reconcile, 1,000 devices in ' + str(r['slices']) + ' slices (fake API)':52} {'seconds':>9}")
    for key, label in (
        ("list_floor_s", "bare list of the slices (floor)"),
        ("reconcile_1000_create_s", "first publish (create)"),
        ("reconcile_1000_devices_s", "steady state (no change)"),
        ("reconcile_1000_update_s", "after a health change (update)"),
    ):
        print(f"{label:52} {r[key]:>9.4f}")
    ratio = p["prepare_p99_ms"] / p["floor_p99_ms"] if p["floor_p99_ms"] else float("inf")
    figures = {
        "prepare_p50_ms": round(p["prepare_p50_ms"], 4),
        "prepare_p99_ms": round(p["prepare_p99_ms"], 4),
        "floor_p99_ms": round(p["floor_p99_ms"], 4),
        "prepare_p99_ratio": round(ratio, 2),
        "prepare_100_p99_ms": round(p["prepare_100_p99_ms"], 4),
        "reconcile_1000_devices_s": round(r["reconcile_1000_devices_s"], 4),
        "reconcile_1000_create_s": round(r["reconcile_1000_create_s"], 4),
        "reconcile_1000_update_s": round(r["reconcile_1000_update_s"], 4),
        "list_floor_s": round(r["list_floor_s"], 4),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
