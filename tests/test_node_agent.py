"""``qubelet node-agent``: the DRA/device-plugin decision, its log line and its metric.

The decision is checked branch by branch on observations; the CLI is checked end to end in
device-plugin mode against the kubelet device-plugin double (real gRPC on a unix socket), and
in DRA mode by tests/test_node_realistic.py (the DaemonSet's own spec, as root, no capabilities).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from node_agent.mode import Observations, decide, observe, parse_kubelet_version

pytestmark = pytest.mark.timeout(60)
V1 = frozenset({"v1", "resource.k8s.io/v1", "resource.k8s.io/v1beta2"})


@pytest.mark.parametrize(
    ("seen", "mode", "why"),
    [
        (Observations(V1, "v1.34.1", True), "dra", "serves resource.k8s.io/v1 and kubelet v1.34.1"),
        (Observations(V1, "v1.35.0+k3s1", True), "dra", "accepts DRA plugins"),
        (
            Observations(frozenset({"v1", "resource.k8s.io/v1beta1"}), None, True),
            "device-plugin",
            "does not serve",
        ),
        (Observations(V1, "v1.33.4", True), "device-plugin", "older than v1.34"),
        (Observations(V1, "garbage", True), "device-plugin", "unknown kubelet version"),
        (Observations(V1, "v1.34.0", False), "device-plugin", "plugins_registry"),
        (Observations(None, None, True, "403 Forbidden"), "device-plugin", "cannot ask the API server (403"),
    ],
)
def test_decision(seen: Observations, mode: str, why: str) -> None:
    decision = decide(None, seen)
    assert decision.mode == mode
    assert why in decision.reason


def test_forced_mode_wins() -> None:
    seen = Observations(V1, "v1.34.0", True)
    assert decide("device-plugin", seen).mode == "device-plugin"
    assert decide("dra", Observations(None, None, False, "down")).reason == "forced by --mode=dra"


def test_kubelet_version_parsing() -> None:
    assert parse_kubelet_version("v1.34.2-gke.1000") == (1, 34)
    assert parse_kubelet_version("1.9.0") == (1, 9)
    assert parse_kubelet_version("") is None


class Probe:
    def __init__(self, versions: frozenset[str], kubelet: str = "v1.34.0", fail: Exception | None = None):
        self.versions, self.kubelet, self.fail = versions, kubelet, fail
        self.asked: list[str] = []

    def group_versions(self) -> frozenset[str]:
        if self.fail:
            raise self.fail
        return self.versions

    def kubelet_version(self, node_name: str) -> str:
        self.asked.append(node_name)
        return self.kubelet


def test_observe_asks_the_node_only_when_dra_is_served(tmp_path: Path) -> None:
    probe = Probe(V1)
    seen = observe(probe, "node-a", tmp_path)
    assert seen == Observations(V1, "v1.34.0", True)
    assert probe.asked == ["node-a"]
    old = Probe(frozenset({"v1"}))
    assert observe(old, "node-a", tmp_path / "absent").registry_dir_exists is False
    assert old.asked == []


def test_observe_turns_api_errors_into_a_reason(tmp_path: Path) -> None:
    from qubelet.errors import ApiError

    refused = ApiError("discovery: 403 Forbidden", status=403, reason="Forbidden")
    seen = observe(Probe(V1, fail=refused), "n", tmp_path)
    assert seen.error == "403 Forbidden"
    assert decide(None, seen).mode == "device-plugin"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    import urllib.error

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_cli_falls_back_to_device_plugin_without_an_api_server(short_dir: Path) -> None:
    """Auto mode with no API server: device plugin, registered with the kubelet double, and
    the choice on /metrics and in the log; /readyz follows the registration; SIGTERM exits 0."""
    import os
    import signal
    import subprocess
    import sys

    from doubles.kubelet_deviceplugin import TestKubelet

    plugins = short_dir / "device-plugins"
    plugins.mkdir()
    kubelet = TestKubelet(plugins).start()
    port = _free_port()
    (short_dir / "up").write_text("healthy")
    config = short_dir / "qpus.yaml"  # a file probe: no simulator to load, the test stays fast
    config.write_text(
        "version: v1\nqpus:\n  - {name: adonis, vendor: IQM, model: Adonis, qubits: 5, technology: sc,"
        f" location: onprem, backend: 'fake:IQMFakeAdonis', health: {{probe: file, path: {short_dir}/up}}}}\n"
    )
    env = dict(os.environ, KUBECONFIG=str(short_dir / "no-kubeconfig"), KUBERNETES_SERVICE_HOST="")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qubelet",
            "node-agent",
            "--config",
            str(config),
            "--node-name",
            "node-a",
            "--kubelet-root",
            str(short_dir),
            "--metrics-port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        (request,) = kubelet.wait_for_registrations(1, timeout=30)
        assert request.resource_name == "quantum.example.com/qpu"
        deadline = time.monotonic() + 10
        while _get(f"http://127.0.0.1:{port}/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        status, body = _get(f"http://127.0.0.1:{port}/readyz")
        assert (status, body) == (200, "ok kubelet-registration\n")
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        metrics = _get(f"http://127.0.0.1:{port}/metrics")[1]
        assert 'qubelet_node_agent_mode{mode="device-plugin"} 1.0' in metrics
        assert 'qubelet_node_agent_mode{mode="dra"} 0.0' in metrics
        kubelet.stop()  # kubelet gone: no longer ready, still alive
        deadline = time.monotonic() + 10
        while _get(f"http://127.0.0.1:{port}/readyz")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        status, body = _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503 and body.startswith("failed kubelet-registration: waiting for kubelet")
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        kubelet.stop()
    assert proc.returncode == 0, out
    assert "node agent mode chosen" in out and 'mode="device-plugin"' in out
    assert "cannot ask the API server" in out
