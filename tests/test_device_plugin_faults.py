"""Faults of the QPU device plugin found by the issue-10 fault-injection pass.

Each test reproduces one fault over real gRPC on real unix sockets (or against the real CLI
process) and fails on the code before its fix. docs/reliability.md maps each guarantee to its
test.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from doubles.kubelet_deviceplugin import TestKubelet
from test_device_plugin_server import Running, file_probe_config, start_plugin

from qpu_device_plugin import plugin as plugin_module
from qpu_device_plugin.api.v1beta1 import api_pb2, api_pb2_grpc
from qpu_device_plugin.constants import PLUGIN_SOCKET
from qpu_device_plugin.metrics import PluginMetrics
from qpu_device_plugin.server import MAX_WATCH_STREAMS, DeviceState
from qubelet.errors import ConfigError
from qubelet.inventory import parse_config
from qubelet.inventory.config import MAX_DEVICE_ID_LENGTH, MAX_DEVICES, MAX_REPLICAS, QPUConfig, load_config
from qubelet.inventory.health import HealthMonitor, ProbeResult

# not `-m qubelet.cli`: that would load the CLI module twice (as __main__ and qubelet.cli)
QUBELET = [sys.executable, "-c", "import sys; from qubelet.cli import main; sys.exit(main())"]

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
    open_streams: set[int] = set()
    changed = threading.Condition()

    def drain(index: int, stream: Iterator[api_pb2.ListAndWatchResponse]) -> None:
        try:
            for update in stream:
                with changed:
                    seen[index].append({d.ID: d.health for d in update.devices})
                    changed.notify_all()
        except grpc.RpcError:
            pass
        with changed:
            open_streams.discard(index)
            changed.notify_all()

    try:
        for index in range(20):
            # No deadline: like kubelet's, these streams stay open for as long as both sides live.
            stream = stub.ListAndWatch(api_pb2.Empty())
            streams.append(stream)
            seen.append([])
            open_streams.add(index)
            threading.Thread(target=drain, args=(index, stream), daemon=True).start()
        request = api_pb2.AllocateRequest(
            container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=["onprem-r0"])]
        )
        response = stub.Allocate(request, timeout=5)
        assert response.container_responses[0].envs["QUBELET_QPU_NAME"] == "onprem"
        # The oldest streams (in the order the plugin saw them) were ended; MAX_WATCH_STREAMS
        # stay open and keep following health.
        with changed:
            assert changed.wait_for(lambda: len(open_streams) == MAX_WATCH_STREAMS, timeout=30), open_streams
            assert changed.wait_for(lambda: all(seen[i] for i in open_streams), timeout=30)
        (running.dir / "onprem").write_text("down\n")
        with changed:
            assert changed.wait_for(
                lambda: all(seen[i][-1]["onprem-r0"] == "Unhealthy" for i in open_streams), timeout=30
            )
            assert len(open_streams) == MAX_WATCH_STREAMS  # and none of them was ended
    finally:
        for stream in streams:
            stream.cancel()  # type: ignore[attr-defined]
        channel.close()


def test_restart_storm_ends_registered_with_the_last_kubelet(running: Running) -> None:
    """20 kubelet restarts back to back (half of them deleting the plugin sockets): the plugin
    ends registered with the newest kubelet, serving Allocate and following health. The kubelet
    double only lets its newest registration own the connection (tests/test_kubelet_double.py),
    so this measures the plugin, not the double's thread scheduling."""
    kubelet = running.kubelet
    for i in range(20):
        kubelet.restart(remove_plugin_sockets=i % 2 == 0)
    kubelet.wait_registered_since_start(timeout=30)  # with the kubelet of the last restart
    kubelet.wait_for_connects(len(kubelet.registrations), timeout=30)
    stub = kubelet.wait_connected(timeout=30)
    request = api_pb2.AllocateRequest(
        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=["onprem-r1"])]
    )
    assert stub.Allocate(request, timeout=5).container_responses[0].envs["QUBELET_QPU_NAME"] == "onprem"
    after = len(kubelet.updates)
    (running.dir / "onprem").write_text("down\n")
    kubelet.wait_for_health("onprem-r0", "Unhealthy", timeout=5, after=after)


def test_socket_deleted_between_bind_and_stat_is_served_again(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kubelet deletes plugin sockets as it starts; in a restart storm that can land between the
    plugin's bind and its stat of the new socket. The plugin then took "no file" as its socket's
    identity, saw nothing wrong while the file stayed absent, and registered an endpoint kubelet
    could not dial: registered, never connected (the restart storm test's rare failure)."""
    for name in ("onprem", "cloud"):
        (short_dir / name).write_text("healthy\n")
    (short_dir / "tokens.json").write_text("{}")
    kubelet = TestKubelet(short_dir).start()
    plugin = plugin_module.DevicePlugin(file_probe_config(short_dir), short_dir, metrics=PluginMetrics())
    real_file_id = plugin_module._file_id
    armed = [True]

    def kubelet_deletes_it_first(path: Path) -> tuple[int, int] | None:
        if armed[0] and path == plugin.socket_path:  # the stat right after start_server's bind
            armed[0] = False
            path.unlink()
        return real_file_id(path)

    monkeypatch.setattr(plugin_module, "_file_id", kubelet_deletes_it_first)
    try:
        plugin.start()
        assert not armed[0] and not plugin.socket_path.exists()
        plugin.step(time.monotonic())
        kubelet.wait_for_registrations(1, timeout=10)
        kubelet.wait_connected(timeout=10)
        assert plugin.socket_path.is_socket()
        assert kubelet.allocate(["onprem-r0"]).container_responses[0].envs["QUBELET_QPU_NAME"] == "onprem"
    finally:
        plugin.close()
        kubelet.stop()


# -- configuration ---------------------------------------------------------------------------

ONE_QPU = """\
version: v1
qpus:
  - name: adonis
    vendor: IQM
    model: Adonis
    qubits: 5
    technology: superconducting
    location: onprem
    backend: fake:IQMFakeAdonis
"""


def test_duplicate_yaml_key_is_rejected_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "qpus.yaml"
    path.write_text(ONE_QPU + "    replicas: 2\n    qubits: 20\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        f"{path}: invalid YAML: line 11, column 5: duplicate key 'qubits' (first given on line 6)"
    )
    # The same at the top level, and in a nested mapping.
    path.write_text(ONE_QPU + "version: v1\n")
    with pytest.raises(
        ConfigError, match=r"line 10, column 1: duplicate key 'version' \(first given on line 1\)"
    ):
        load_config(path)
    path.write_text(ONE_QPU + "    health: {probe: file, path: /x, path: /y}\n")
    with pytest.raises(ConfigError, match=r"line 10, column .*: duplicate key 'path'"):
        load_config(path)
    # A merge key may still be overridden, as YAML intends.
    path.write_text(
        "common: &c {vendor: IQM, model: Adonis, qubits: 5}\n"
        + ONE_QPU.replace("    vendor: IQM\n", "    <<: *c\n").replace("version: v1\n", "version: v1\n", 1)
    )
    with pytest.raises(ConfigError, match="common: unknown field"):  # the anchor's home is not a field
        load_config(path)
    merged = ONE_QPU.replace(
        "    vendor: IQM\n    model: Adonis\n", "    <<: {vendor: IQM, model: Other}\n    model: Adonis\n"
    )
    path.write_text(merged)
    assert load_config(path).qpus[0].model == "Adonis"


def test_replicas_are_bounded_and_say_why(tmp_path: Path) -> None:
    path = tmp_path / "qpus.yaml"
    for value in (MAX_REPLICAS + 1, 200_000, 10**9):
        path.write_text(ONE_QPU + f"    replicas: {value}\n")
        with pytest.raises(ConfigError) as err:
            load_config(path)  # 10**9 used to raise MemoryError building the device list
        message = str(err.value)
        assert message.startswith(
            f"{path}: qpus[0] (adonis): replicas: must be at most {MAX_REPLICAS}, got {value}"
        )
        assert "4 MiB" in message and "\n" not in message
    path.write_text(ONE_QPU.replace("qpus:\n", f"sharing: {{timeSlicing: {{replicas: {10**6}}}}}\nqpus:\n"))
    with pytest.raises(ConfigError, match=r"sharing.timeSlicing.replicas: must be at most"):
        load_config(path)
    path.write_text(ONE_QPU + f"    replicas: {MAX_REPLICAS}\n")
    assert load_config(path).qpus[0].replicas == MAX_REPLICAS
    many = "".join(
        ONE_QPU.split("qpus:\n")[1].replace("name: adonis", f"name: q{i}") + f"    replicas: {MAX_REPLICAS}\n"
        for i in range(MAX_DEVICES // MAX_REPLICAS + 1)
    )
    path.write_text("version: v1\nqpus:\n" + many)
    with pytest.raises(ConfigError, match=rf"devices in all \(sum of replicas\) exceeds {MAX_DEVICES}"):
        load_config(path)


def test_list_and_watch_of_the_largest_inventory_fits_a_grpc_message() -> None:
    """The bound is the one that matters: the biggest allowed device list fits in 4 MiB."""
    from qubelet.inventory import parse_config

    qpu = yaml.safe_load(ONE_QPU)["qpus"][0]
    longest = "q" * (MAX_DEVICE_ID_LENGTH - len(f"-r{MAX_REPLICAS - 1}") - 2)
    qpus = [
        {**qpu, "name": f"{longest}{i:02d}", "replicas": MAX_REPLICAS}
        for i in range(MAX_DEVICES // MAX_REPLICAS)
    ]
    config = parse_config({"version": "v1", "qpus": qpus}, "big")
    devices = DeviceState(config).device_list()
    assert len(devices) == MAX_DEVICES
    assert max(len(d.ID) for d in devices) == MAX_DEVICE_ID_LENGTH
    size = api_pb2.ListAndWatchResponse(devices=devices).ByteSize()
    assert size < 4 * 1024 * 1024


# -- health ---------------------------------------------------------------------------------


def test_missing_tokens_file_marks_the_qpu_unhealthy_with_the_reason(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("onprem", "cloud"):
        (short_dir / name).write_text("healthy\n")
    tokens = short_dir / "tokens.json"  # named by the cloud QPU's tokensFile, absent
    # a real IQM backend (a fake: one needs no token, see the next test)
    config = file_probe_config(short_dir)
    config = dataclasses.replace(
        config, qpus=tuple(dataclasses.replace(q, backend="iqm") if q.tokens_file else q for q in config.qpus)
    )
    with caplog.at_level(logging.INFO):
        run = start_plugin(config, short_dir)
    try:
        first = run.kubelet.updates[0]
        assert first["cloud-r0"] == "Unhealthy" and first["onprem-r0"] == "Healthy"
        reasons = [
            r.getMessage() + str(getattr(r, "kv", {}))
            for r in caplog.records
            if "tokensFile" in str(getattr(r, "kv", {}))
        ]
        assert any(f"tokensFile {tokens}: No such file or directory" in line for line in reasons), reasons
        # Allocate refuses it instead of mounting a missing host path.
        with pytest.raises(grpc.RpcError) as err:
            run.kubelet.allocate(["cloud-r0"])
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # The Secret appears: the QPU becomes Healthy at its next probe.
        after = len(run.kubelet.updates)
        tokens.write_text('{"access_token": "x"}')
        run.kubelet.wait_for_devices(lambda u: u.get("cloud-r0") == "Healthy", timeout=5, after=after)
        assert run.kubelet.allocate(["cloud-r0"]).container_responses[0].mounts[0].host_path == str(tokens)
    finally:
        run.plugin.shutdown()
        run.thread.join(timeout=10)
        run.kubelet.stop()
    assert not any("access_token" in r.getMessage() + str(getattr(r, "kv", {})) for r in caplog.records)


def test_fake_backend_without_tokens_file_is_healthy_and_mounts_nothing(short_dir: Path) -> None:
    """The example's cloud QPU is a simulator: no Secret, still allocatable, no dangling mount."""
    for name in ("onprem", "cloud"):
        (short_dir / name).write_text("healthy\n")
    run = start_plugin(file_probe_config(short_dir), short_dir)  # tokens.json absent
    try:
        assert run.kubelet.updates[0]["cloud-r0"] == "Healthy"
        (response,) = run.kubelet.allocate(["cloud-r0"]).container_responses
        assert list(response.mounts) == []
        assert "IQM_TOKENS_FILE" not in response.envs and response.envs["QUBELET_QPU_NAME"] == "cloud"
    finally:
        run.plugin.shutdown()
        run.thread.join(timeout=10)
        run.kubelet.stop()


def hung_and_fast(timeout_seconds: float) -> list[QPUConfig]:
    common = yaml.safe_load(ONE_QPU)["qpus"][0]
    return list(
        parse_config(
            {
                "version": "v1",
                "qpus": [
                    {
                        **common,
                        "name": "hung",
                        "health": {
                            "probe": "http",
                            "url": "http://127.0.0.1:9/health",
                            "timeoutSeconds": timeout_seconds,
                            "intervalSeconds": 0.05,
                        },
                    },
                    {
                        **common,
                        "name": "fast",
                        "health": {"probe": "file", "path": "/x", "intervalSeconds": 0.05},
                    },
                ],
            },
            "test",
        ).qpus
    )


def test_hung_probe_does_not_delay_other_qpus() -> None:
    """Probes run concurrently: "fast" turns Healthy while "hung"'s probe is still stuck."""
    release = threading.Event()
    fast_healthy = threading.Event()

    def probe(qpu: QPUConfig) -> ProbeResult:
        if qpu.name == "hung":
            release.wait(30)
            return ProbeResult(True, 0.0, "late")
        return ProbeResult(True, 0.0, "ok")

    def on_change(name: str, healthy: bool) -> None:
        if name == "fast" and healthy:
            fast_healthy.set()

    monitor = HealthMonitor(hung_and_fast(timeout_seconds=30), on_change=on_change, probe=probe)
    monitor.start()
    try:
        assert fast_healthy.wait(5), "a hung probe of another QPU delayed this one"
        assert not release.is_set()
        assert monitor.snapshot() == {"hung": False, "fast": True}
    finally:
        release.set()
        monitor.stop()


def test_hung_probe_times_out_under_its_own_deadline() -> None:
    release = threading.Event()
    calls: list[str] = []

    def probe(qpu: QPUConfig) -> ProbeResult:
        calls.append(qpu.name)
        if qpu.name == "hung":
            release.wait(30)
        return ProbeResult(True, 0.0, "ok")

    monitor = HealthMonitor(hung_and_fast(timeout_seconds=0.2), probe=probe)
    result: dict[str, bool] = {}
    checker = threading.Thread(target=lambda: result.update(monitor.check_now()), daemon=True)
    checker.start()
    checker.join(10)
    try:
        assert not checker.is_alive(), "check_now waited for the hung probe"
        assert result == {"hung": False, "fast": True}
        assert monitor.reasons()["hung"] == "probe timed out"
        # While the hung probe still runs, it is not started a second time.
        assert monitor.check_now() == {"hung": False, "fast": True}
        assert monitor.reasons()["hung"] == "previous probe still running"
        assert calls.count("hung") == 1
    finally:
        release.set()
    # Once it returns, the next probe runs afresh.
    deadline = threading.Event()
    for _ in range(100):
        if monitor.check_now()["hung"]:
            break
        deadline.wait(0.05)
    assert monitor.is_healthy("hung") and calls.count("hung") == 2


# -- start-up and SIGTERM -------------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP health endpoint that accepts and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/health"
    listener.close()
    for conn in held:
        conn.close()


def test_sigterm_during_start_up_probe_exits_promptly(short_dir: Path, silent_server: str) -> None:
    """Kubernetes kills a pod 30 s after SIGTERM; the plugin used to need 37 s here."""
    common = yaml.safe_load(ONE_QPU)["qpus"][0]
    health = {"probe": "http", "url": silent_server, "timeoutSeconds": 25}
    config = short_dir / "qpus.yaml"
    config.write_text(
        yaml.safe_dump(
            {"version": "v1", "qpus": [{**common, "name": f"q{i}", "health": health} for i in range(2)]}
        )
    )
    proc = subprocess.Popen(
        [*QUBELET, "device-plugin", "--config", str(config), "--kubelet-dir", str(short_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until it is inside the start-up probe
            if "starting device plugin" in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)  # the probe alone would take 2 x 25 s before
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("device plugin did not exit within 15 s of SIGTERM during its start-up probe")
    assert proc.returncode == 0, stderr
    assert not (short_dir / PLUGIN_SOCKET).exists()
