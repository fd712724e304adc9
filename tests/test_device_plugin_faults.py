"""Faults of the QPU device plugin found by the issue-10 fault-injection pass.

Each test reproduces one fault over real gRPC on real unix sockets (or against the real CLI
process) and fails on the code before its fix. docs/reliability.md maps each guarantee to its
test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from test_device_plugin_server import Running, file_probe_config, start_plugin

from qpu_device_plugin.api.v1beta1 import api_pb2, api_pb2_grpc
from qpu_device_plugin.constants import PLUGIN_SOCKET
from qpu_device_plugin.server import MAX_WATCH_STREAMS

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="qdf", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def running(short_dir: Path) -> Iterator[Running]:
    for name in ("onprem", "cloud"):
        (short_dir / name).write_text("healthy\n")
    (short_dir / "tokens.json").write_text("{}")
    run = start_plugin(file_probe_config(short_dir), short_dir)
    yield run
    run.plugin.shutdown()
    run.thread.join(timeout=10)
    run.kubelet.stop()
    assert not run.thread.is_alive()


def test_open_watch_streams_do_not_starve_allocate(running: Running) -> None:
    """20 ListAndWatch streams used to take all 16 workers; Allocate then timed out."""
    channel = grpc.insecure_channel(f"unix://{running.dir / PLUGIN_SOCKET}")
    stub = api_pb2_grpc.DevicePluginStub(channel)
    streams = []
    seen: list[list[dict[str, str]]] = []
    ended = threading.Semaphore(0)
    changed = threading.Condition()

    def drain(stream: Iterator[api_pb2.ListAndWatchResponse], into: list[dict[str, str]]) -> None:
        try:
            for update in stream:
                with changed:
                    into.append({d.ID: d.health for d in update.devices})
                    changed.notify_all()
        except grpc.RpcError:
            pass
        ended.release()

    try:
        for _ in range(20):
            # No deadline: like kubelet's, these streams stay open for as long as both sides live.
            stream = stub.ListAndWatch(api_pb2.Empty())
            streams.append(stream)
            seen.append([])
            threading.Thread(target=drain, args=(stream, seen[-1]), daemon=True).start()
        request = api_pb2.AllocateRequest(
            container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=["onprem-r0"])]
        )
        response = stub.Allocate(request, timeout=5)
        assert response.container_responses[0].envs["QUBELET_QPU_NAME"] == "onprem"
        # The oldest streams were ended; the newest MAX_WATCH_STREAMS stay open and follow health.
        with changed:
            assert changed.wait_for(lambda: all(seen), timeout=10)  # every stream got its list
        for _ in range(20 - MAX_WATCH_STREAMS):
            assert ended.acquire(timeout=10)
        (running.dir / "onprem").write_text("down\n")
        with changed:
            assert changed.wait_for(
                lambda: all(s[-1]["onprem-r0"] == "Unhealthy" for s in seen[-MAX_WATCH_STREAMS:]), timeout=10
            )
        assert not ended.acquire(timeout=0.1)  # and none of them was ended
    finally:
        for stream in streams:
            stream.cancel()  # type: ignore[attr-defined]
        channel.close()
