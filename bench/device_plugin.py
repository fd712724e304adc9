"""Benchmark the QPU device plugin the way kubelet uses it.

1. Allocate latency (p50/p99 over thousands of calls) from a kubelet-like client over a real unix
   socket, against the floor: a bare gRPC unary round trip on the same kind of socket in the same
   process and run (a trivial server answering GetDevicePluginOptions with a constant). A second
   reference, a trivial Allocate handler returning a constant response of the same shape, shows
   how much of the cost is message size rather than plugin logic.
2. Health propagation: flip a QPU's `file` probe (interval 0.1 s) and time until the test
   kubelet's ListAndWatch stream shows the new health; repeated both ways.

Run: python bench/device_plugin.py   (no arguments; about a minute on a laptop). Last line: JSON.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from doubles.kubelet_deviceplugin import TestKubelet  # noqa: E402

from qpu_device_plugin.api.v1beta1 import api_pb2, api_pb2_grpc  # noqa: E402
from qpu_device_plugin.metrics import PluginMetrics  # noqa: E402
from qpu_device_plugin.plugin import DevicePlugin  # noqa: E402
from qubelet.inventory import parse_config  # noqa: E402

CALLS = 3000
WARMUP = 300
FLIPS = 10
PROBE_INTERVAL_S = 0.1


class TrivialServicer(api_pb2_grpc.DevicePluginServicer):
    """The floor: constant answers, no logic."""

    def __init__(self, allocate_response: api_pb2.AllocateResponse) -> None:
        self._options = api_pb2.DevicePluginOptions(get_preferred_allocation_available=True)
        self._allocate = allocate_response

    def GetDevicePluginOptions(self, request, context):  # type: ignore[no-untyped-def]
        """Advertise no optional calls, like a minimal plugin."""
        return self._options

    def Allocate(self, request, context):  # type: ignore[no-untyped-def]
        """Answer an empty allocation: the baseline does no work per call."""
        return self._allocate


def percentile(samples: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def bench_config(directory: Path):  # type: ignore[no-untyped-def]
    """An inventory of file-probed QPUs under ``directory`` for the benchmark plugin."""
    common = {"vendor": "IQM", "technology": "superconducting", "backend": "fake:IQMFakeAdonis"}
    return parse_config(
        {
            "version": "v1",
            "flags": {"cdiEnabled": True},
            "qpus": [
                {
                    **common,
                    "name": name,
                    "model": "Adonis",
                    "qubits": 5,
                    "location": location,
                    "replicas": 4,
                    **(
                        {
                            "endpoint": "https://qpu.example.com/x",
                            "tokensFile": str(directory / "tokens.json"),
                        }
                        if location == "cloud"
                        else {}
                    ),
                    "health": {
                        "probe": "file",
                        "path": str(directory / f"{name}.health"),
                        "intervalSeconds": PROBE_INTERVAL_S,
                    },
                }
                for name, location in (("onprem", "onprem"), ("cloud", "cloud"))
            ],
        },
        "bench",
    )


def time_calls(call, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Wall time of each of ``n`` calls to ``call``, in seconds."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> int:
    """Run the device plugin benchmark and print its table; the exit status."""
    logging.disable(logging.WARNING)
    directory = Path(tempfile.mkdtemp(prefix="qdpb", dir="/tmp"))
    try:
        for name in ("onprem", "cloud"):
            (directory / f"{name}.health").write_text("healthy\n")
        (directory / "tokens.json").write_text("{}")  # a cloud QPU without its tokensFile is unhealthy
        kubelet = TestKubelet(directory).start()
        plugin = DevicePlugin(bench_config(directory), directory, metrics=PluginMetrics())
        runner = threading.Thread(target=plugin.run, daemon=True)
        runner.start()
        kubelet.wait_for_registrations(1)
        stub = kubelet.wait_connected()

        request = api_pb2.AllocateRequest(
            container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=["cloud-r1"])]
        )
        real_response = stub.Allocate(request, timeout=5)

        floor_sock = directory / "floor.sock"
        floor_server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        api_pb2_grpc.add_DevicePluginServicer_to_server(TrivialServicer(real_response), floor_server)
        floor_server.add_insecure_port(f"unix://{floor_sock}")
        floor_server.start()
        floor_channel = grpc.insecure_channel(f"unix://{floor_sock}")
        floor_stub = api_pb2_grpc.DevicePluginStub(floor_channel)
        empty = api_pb2.Empty()

        calls = {
            "allocate (plugin)": lambda: stub.Allocate(request, timeout=5),
            "floor: GetDevicePluginOptions (trivial)": lambda: floor_stub.GetDevicePluginOptions(
                empty, timeout=5
            ),
            "ref: Allocate (trivial, same msgs)": lambda: floor_stub.Allocate(request, timeout=5),
        }
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for call in calls.values():
            time_calls(call, WARMUP)
        # interleave in batches so machine noise hits all three alike
        batch = 10
        for _ in range(CALLS // batch):
            for name, call in calls.items():
                samples[name].extend(time_calls(call, batch))

        # health propagation
        propagation: list[float] = []
        rng = random.Random(7)
        for _ in range(FLIPS):
            for content, want in (("maintenance\n", "Unhealthy"), ("healthy\n", "Healthy")):
                # land the flip at a random phase of the probe period, as a real failure would
                time.sleep(rng.uniform(0, PROBE_INTERVAL_S))
                after = len(kubelet.updates)
                start = time.monotonic()
                (directory / "cloud.health").write_text(content)
                seen_at = kubelet.wait_for_health("cloud-r0", want, timeout=5, after=after)
                propagation.append(max(0.0, seen_at - start))

        floor_channel.close()
        floor_server.stop(0)
        plugin.shutdown()
        runner.join(timeout=10)
        kubelet.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    ms = {name: [s * 1000 for s in values] for name, values in samples.items()}
    print(f"device plugin benchmark ({CALLS} calls each, interleaved; unix sockets; {FLIPS} health flips x2)")
    print(f"{'call':<42}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, values in ms.items():
        print(
            f"{name:<42}{percentile(values, 50):>10.3f}{percentile(values, 99):>10.3f}"
            f"{statistics.fmean(values):>10.3f}"
        )
    print(
        f"{'health change -> ListAndWatch (s)':<42}{percentile(propagation, 50):>10.3f}"
        f"{max(propagation):>10.3f}  (p50, max; probe interval {PROBE_INTERVAL_S}s)"
    )
    alloc = ms["allocate (plugin)"]
    floor = ms["floor: GetDevicePluginOptions (trivial)"]
    result = {
        "allocate_p50_ms": round(percentile(alloc, 50), 4),
        "allocate_p99_ms": round(percentile(alloc, 99), 4),
        "floor_p50_ms": round(percentile(floor, 50), 4),
        "floor_p99_ms": round(percentile(floor, 99), 4),
        "trivial_allocate_p99_ms": round(percentile(ms["ref: Allocate (trivial, same msgs)"], 99), 4),
        "allocate_p99_ratio": round(percentile(alloc, 99) / percentile(floor, 99), 3),
        "health_propagation_s": round(max(propagation), 4),
        "health_propagation_p50_s": round(percentile(propagation, 50), 4),
        "calls": CALLS,
        "flips": 2 * FLIPS,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
