"""The device plugin driven by a test kubelet over real gRPC on real unix sockets."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from doubles.kubelet_deviceplugin import TestKubelet
from prometheus_client import generate_latest

from qpu_device_plugin.api.v1beta1 import api_pb2
from qpu_device_plugin.constants import PLUGIN_SOCKET
from qpu_device_plugin.metrics import PluginMetrics
from qpu_device_plugin.plugin import DevicePlugin, InitError
from qubelet.daemon import serve_metrics
from qubelet.inventory import Config, load_config, parse_config
from qubelet.inventory.names import RESOURCE_NAME, TOKENS_MOUNT_PATH

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "qpus.yaml"


def file_probe_config(health_dir: Path, cdi: bool = True) -> Config:
    """Two QPUs with file probes (fast, flippable); the cloud one has endpoint and tokens file."""
    common = {"vendor": "IQM", "technology": "superconducting", "backend": "fake:IQMFakeAdonis"}
    return parse_config(
        {
            "version": "v1",
            "flags": {"cdiEnabled": cdi},
            "qpus": [
                {
                    **common,
                    "name": "onprem",
                    "model": "Adonis",
                    "qubits": 5,
                    "location": "onprem",
                    "replicas": 2,
                    "health": {"probe": "file", "path": str(health_dir / "onprem"), "intervalSeconds": 0.05},
                },
                {
                    **common,
                    "name": "cloud",
                    "model": "Apollo",
                    "qubits": 20,
                    "location": "cloud",
                    "replicas": 3,
                    "endpoint": "https://qpu.example.com/apollo",
                    "tokensFile": str(health_dir / "tokens.json"),
                    "health": {"probe": "file", "path": str(health_dir / "cloud"), "intervalSeconds": 0.05},
                },
            ],
        },
        "test-config",
    )


@dataclass
class Running:
    plugin: DevicePlugin
    kubelet: TestKubelet
    dir: Path
    thread: threading.Thread


def start_plugin(config: Config, directory: Path, register_timeout: float = 15.0, **kwargs: Any) -> Running:
    from qubelet.inventory.tokens import TokenMounts

    kwargs.setdefault("tokens", TokenMounts(root=directory))  # the tests' token files live here
    kubelet = TestKubelet(directory).start()
    plugin = DevicePlugin(config, directory, poll_interval=0.05, metrics=PluginMetrics(), **kwargs)
    thread = threading.Thread(target=plugin.run, daemon=True)
    thread.start()
    try:
        kubelet.wait_for_registrations(1, timeout=register_timeout)
        kubelet.wait_connected()
    except BaseException:
        # do not leave a plugin thread behind that recreates the directory after clean-up
        plugin.shutdown()
        thread.join(timeout=120)
        kubelet.stop()
        raise
    return Running(plugin, kubelet, directory, thread)


@pytest.fixture
def running(short_dir: Path) -> Iterator[Running]:
    for name in ("onprem", "cloud"):
        (short_dir / name).write_text("healthy\n")
    (short_dir / "tokens.json").write_text("{}")  # the cloud QPU is unhealthy without its tokensFile
    run = start_plugin(file_probe_config(short_dir), short_dir, cdi_dir=short_dir / "cdi")
    yield run
    run.plugin.shutdown()
    run.thread.join(timeout=10)
    run.kubelet.stop()
    assert not run.thread.is_alive()


def test_registration_fields_and_options(running: Running) -> None:
    (request,) = running.kubelet.registrations
    assert request.version == "v1beta1"
    assert request.endpoint == PLUGIN_SOCKET == "qpu.quantum.example.com.sock"
    assert request.resource_name == RESOURCE_NAME == "quantum.example.com/qpu"
    assert request.options.get_preferred_allocation_available is True
    assert running.kubelet.options is not None
    assert running.kubelet.options.get_preferred_allocation_available is True
    assert (running.dir / PLUGIN_SOCKET).is_socket()


@pytest.mark.timeout(90)
def test_example_config_initial_list_all_healthy(short_dir: Path) -> None:
    # The example inventory uses `fake` probes: the embedded IQM fake backends (slow first import).
    config = load_config(EXAMPLE)
    # The cloud QPU's tokensFile is a Secret path on a real node; give it one here, or it is
    # (rightly) Unhealthy.
    tokens = short_dir / "tokens.json"
    tokens.write_text("{}")
    config = dataclasses.replace(
        config,
        qpus=tuple(
            dataclasses.replace(q, tokens_file=str(tokens)) if q.tokens_file else q for q in config.qpus
        ),
    )
    # start-up probes every QPU first; importing the fake backends can take >10 s on a busy machine
    run = start_plugin(config, short_dir, register_timeout=75)
    try:
        first = run.kubelet.updates[0]
        assert len(first) == sum(q.replicas for q in config.qpus) == 6
        assert set(first.values()) == {"Healthy"}
    finally:
        run.plugin.shutdown()
        run.thread.join(timeout=10)
        run.kubelet.stop()


def test_allocate_env_mount_and_cdi(running: Running) -> None:
    response = running.kubelet.allocate(["cloud-r1"], ["onprem-r0"])
    cloud, onprem = response.container_responses
    assert dict(cloud.envs) == {
        "QUBELET_QPU_NAME": "cloud",
        "QUBELET_QPU_BACKEND": "fake:IQMFakeAdonis",
        "IQM_SERVER_URL": "https://qpu.example.com/apollo",
        "IQM_TOKENS_FILE": TOKENS_MOUNT_PATH,
    }
    (mount,) = cloud.mounts
    assert mount.container_path == TOKENS_MOUNT_PATH
    assert mount.host_path == str(running.dir / "tokens.json")
    assert mount.read_only is True
    assert [d.name for d in cloud.cdi_devices] == ["qpu.quantum.example.com/qpu=cloud"]
    assert dict(onprem.envs) == {"QUBELET_QPU_NAME": "onprem", "QUBELET_QPU_BACKEND": "fake:IQMFakeAdonis"}
    assert list(onprem.mounts) == []  # no tokens file, no mount


def test_allocate_mounts_a_staged_copy_that_exists_on_the_node(short_dir: Path) -> None:
    """In a pod the Secret is mounted in the plugin's container only: kubelet must get a node path.

    The staging directory is a hostPath mounted at the same path, so the staged copy exists on
    the node; the tokensFile path (the plugin container's Secret mount) is never handed out.
    """
    from qubelet.inventory.tokens import TokenMounts

    for name in ("onprem", "cloud"):
        (short_dir / name).write_text("healthy\n")
    secret = short_dir / "secret"
    secret.mkdir()
    (secret / "tokens.json").write_text('{"access_token": "dp"}')
    config = file_probe_config(short_dir)
    config = dataclasses.replace(
        config,
        qpus=tuple(
            dataclasses.replace(q, tokens_file=str(secret / "tokens.json")) if q.tokens_file else q
            for q in config.qpus
        ),
    )
    staged_dir = short_dir / "staged"
    run = start_plugin(config, short_dir, tokens=TokenMounts(root=secret, staging_dir=staged_dir, gid=10001))
    try:
        (mount,) = run.kubelet.allocate(["cloud-r0"]).container_responses[0].mounts
        assert mount.host_path == str(staged_dir / "cloud.json")
        staged = Path(mount.host_path)
        assert staged.read_text() == '{"access_token": "dp"}'
        assert oct(staged.stat().st_mode & 0o777) == "0o440" and staged.stat().st_gid == 10001
    finally:
        run.plugin.shutdown()
        run.thread.join(timeout=10)
        run.kubelet.stop()


def test_allocate_refuses_a_token_outside_the_secret_mount(short_dir: Path) -> None:
    import grpc

    from qubelet.inventory.tokens import TokenMounts

    for name in ("onprem", "cloud"):
        (short_dir / name).write_text("healthy\n")
    (short_dir / "tokens.json").write_text("{}")
    secret = short_dir / "secret"
    secret.mkdir()
    run = start_plugin(file_probe_config(short_dir), short_dir, tokens=TokenMounts(root=secret))
    try:
        with pytest.raises(grpc.RpcError) as err:
            run.kubelet.allocate(["cloud-r0"])
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "outside the tokens Secret mount" in (err.value.details() or "")
    finally:
        run.plugin.shutdown()
        run.thread.join(timeout=10)
        run.kubelet.stop()


def test_every_cdi_name_is_defined_by_a_spec(running: Running) -> None:
    """Issue 19 (6): with ``cdiEnabled`` the names in Allocate must be devices a CDI spec defines,
    or the runtime fails the container; the plugin writes that spec into its CDI directory."""
    response = running.kubelet.allocate(["cloud-r1"], ["onprem-r0"])
    names = [d.name for c in response.container_responses for d in c.cdi_devices]
    assert names == ["qpu.quantum.example.com/qpu=cloud", "qpu.quantum.example.com/qpu=onprem"]
    defined: dict[str, Any] = {}
    for path in (running.dir / "cdi").glob("*.json"):
        doc = json.loads(path.read_text())
        assert doc["cdiVersion"] and doc["kind"] == "qpu.quantum.example.com/qpu"
        defined.update({f"{doc['kind']}={d['name']}": d["containerEdits"] for d in doc["devices"]})
    assert set(names) <= set(defined)
    assert "QUBELET_QPU_NAME=cloud" in defined["qpu.quantum.example.com/qpu=cloud"]["env"]


def test_bad_requests_get_status_codes_and_server_keeps_serving(running: Running) -> None:
    cases = [
        ((["nope-r0"],), grpc.StatusCode.NOT_FOUND),
        (([],), grpc.StatusCode.INVALID_ARGUMENT),
        ((["onprem-r0", "onprem-r0"],), grpc.StatusCode.INVALID_ARGUMENT),
        ((["x" * 200],), grpc.StatusCode.INVALID_ARGUMENT),
        ((), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for containers, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            running.kubelet.allocate(*containers)
        assert info.value.code() == code, containers
    with pytest.raises(grpc.RpcError) as info:
        running.kubelet.stub.PreStartContainer(
            api_pb2.PreStartContainerRequest(devices_ids=["zz"]), timeout=5
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # still serving: a good request works afterwards
    assert running.kubelet.allocate(["onprem-r1"]).container_responses[0].envs["QUBELET_QPU_NAME"] == "onprem"
    exposition = generate_latest(running.plugin.metrics.registry).decode()
    assert 'qubelet_device_plugin_allocation_errors_total{code="NOT_FOUND"} 1.0' in exposition
    assert 'qubelet_device_plugin_allocation_errors_total{code="INVALID_ARGUMENT"} 4.0' in exposition


def test_health_flip_propagates_and_recovers(running: Running) -> None:
    kubelet = running.kubelet
    before = len(kubelet.updates)
    start = time.monotonic()
    (running.dir / "cloud").write_text("maintenance\n")
    down = kubelet.wait_for_devices(lambda u: u.get("cloud-r0") == "Unhealthy", timeout=2.0, after=before)
    assert time.monotonic() - start < 2.0
    assert {k: v for k, v in down.items() if k.startswith("cloud")} == dict.fromkeys(
        ("cloud-r0", "cloud-r1", "cloud-r2"), "Unhealthy"
    )
    assert down["onprem-r0"] == "Healthy"
    with pytest.raises(grpc.RpcError) as info:
        kubelet.allocate(["cloud-r0"])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # preferred allocation now avoids the unhealthy QPU
    assert kubelet.preferred(["cloud-r0", "cloud-r1", "onprem-r1"], 1) == ["onprem-r1"]
    exposition = generate_latest(running.plugin.metrics.registry).decode()
    assert 'qubelet_device_plugin_devices{health="Unhealthy"} 3.0' in exposition
    after = len(kubelet.updates)
    (running.dir / "cloud").unlink()  # missing file is unhealthy too; then recover
    (running.dir / "cloud").write_text("healthy\n")
    up = kubelet.wait_for_devices(lambda u: u.get("cloud-r0") == "Healthy", timeout=2.0, after=after)
    assert set(up.values()) == {"Healthy"}


def test_preferred_allocation_spreads_across_qpus(running: Running) -> None:
    available = ["onprem-r0", "onprem-r1", "cloud-r0", "cloud-r1", "cloud-r2"]
    two = running.kubelet.preferred(available, 2)
    assert {d.rsplit("-", 1)[0] for d in two} == {"onprem", "cloud"}
    # least used first: onprem has 1 of 2 replicas in use, cloud 0 of 3 -> cloud
    assert running.kubelet.preferred(["onprem-r1", "cloud-r0", "cloud-r1", "cloud-r2"], 1) == ["cloud-r0"]
    # must_include honoured, then spread to the other QPU
    assert running.kubelet.preferred(available, 2, must_include=["cloud-r2"]) == ["cloud-r2", "onprem-r0"]
    assert len(running.kubelet.preferred(available, 5)) == 5


@pytest.mark.parametrize("remove_plugin_sockets", [False, True], ids=["keep-socket", "socket-removed"])
def test_kubelet_restart_reregisters(running: Running, remove_plugin_sockets: bool) -> None:
    kubelet = running.kubelet
    kubelet.restart(remove_plugin_sockets=remove_plugin_sockets)
    requests = kubelet.wait_for_registrations(2, timeout=10)
    assert requests[1].resource_name == RESOURCE_NAME
    kubelet.wait_connected()
    assert (running.dir / PLUGIN_SOCKET).is_socket()
    assert kubelet.allocate(["onprem-r0"]).container_responses[0].envs["QUBELET_QPU_NAME"] == "onprem"
    exposition = generate_latest(running.plugin.metrics.registry).decode()
    assert 'qubelet_device_plugin_registrations_total{result="success"} 2.0' in exposition
    # the new connection gets the full list again
    assert len(kubelet.updates[-1]) == 5


def test_registration_retries_until_kubelet_appears(short_dir: Path) -> None:
    for name in ("onprem", "cloud"):
        (short_dir / name).write_text("healthy\n")
    plugin = DevicePlugin(
        file_probe_config(short_dir), short_dir, poll_interval=0.05, metrics=PluginMetrics()
    )
    # a dead kubelet.sock (no listener) makes Register fail; the plugin must keep retrying
    (short_dir / "kubelet.sock").write_text("")
    thread = threading.Thread(target=plugin.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = generate_latest(plugin.metrics.registry).decode()
            if 'registrations_total{result="failure"} 0.0' not in text:
                break
            time.sleep(0.05)
        assert re.search(r'registrations_total\{result="failure"\} [1-9]', text), text
        assert thread.is_alive()
        with TestKubelet(short_dir) as kubelet:
            kubelet.wait_for_registrations(1, timeout=15)
            kubelet.wait_connected()
    finally:
        plugin.shutdown()
        thread.join(timeout=10)
    assert not (short_dir / PLUGIN_SOCKET).exists()


def test_fail_on_init_error(short_dir: Path) -> None:
    (short_dir / "onprem").write_text("healthy\n")  # "cloud" health file missing: unhealthy
    config = file_probe_config(short_dir)
    strict = dataclasses.replace(config, flags=dataclasses.replace(config.flags, fail_on_init_error=True))
    plugin = DevicePlugin(strict, short_dir, metrics=PluginMetrics())
    with pytest.raises(InitError, match=r"QPUs unhealthy at start-up \(failOnInitError\): cloud"):
        plugin.run()
    assert not (short_dir / PLUGIN_SOCKET).exists()
    # without the flag it starts, advertising the cloud QPU's devices as Unhealthy
    run = start_plugin(config, short_dir)
    try:
        assert run.kubelet.updates[0]["cloud-r0"] == "Unhealthy"
        assert run.kubelet.updates[0]["onprem-r0"] == "Healthy"
    finally:
        run.plugin.shutdown()
        run.thread.join(timeout=10)
        run.kubelet.stop()


def test_metrics_exposition_names(running: Running) -> None:
    running.kubelet.allocate(["onprem-r0"])
    port = _free_port()
    server = serve_metrics(port, running.plugin.metrics.registry, addr="127.0.0.1")
    assert server is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
    for name in (
        'qubelet_device_plugin_devices{health="Healthy"} 5.0',
        'qubelet_device_plugin_devices{health="Unhealthy"} 0.0',
        "qubelet_device_plugin_allocations_total 1.0",
        "# TYPE qubelet_device_plugin_allocation_errors_total counter",
        'qubelet_device_plugin_probe_duration_seconds_bucket{le="0.001",qpu="onprem"}',
        'qubelet_device_plugin_probe_failures_total{qpu="cloud"} 0.0',
        'qubelet_device_plugin_registrations_total{result="success"} 1.0',
    ):
        assert name in text, name


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
