"""``qubelet device-plugin`` as a real process: bad config exits 2 in one line, SIGTERM cleans up."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from doubles.kubelet_deviceplugin import TestKubelet

from qpu_device_plugin.constants import PLUGIN_SOCKET

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent


def qubelet(*args: str) -> list[str]:
    # not `-m qubelet.cli`: that would load the CLI module twice (as __main__ and qubelet.cli)
    return [sys.executable, "-c", "import sys; from qubelet.cli import main; sys.exit(main())", *args]


def test_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "qpus.yaml"
    bad.write_text(yaml.safe_dump({"version": "v1", "qpus": [{"name": "a", "qubits": "x"}]}))
    proc = subprocess.run(
        qubelet("device-plugin", "--config", str(bad), "--kubelet-dir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"qubelet: error: {bad}: qpus[0] (a): vendor: required field is missing"
    ]


def test_sigterm_removes_socket_and_exits_0(
    short_dir: Path, qpu_entry: Callable[..., dict[str, Any]]
) -> None:
    (short_dir / "health").write_text("healthy")
    config = short_dir / "qpus.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": "v1",
                "qpus": [
                    qpu_entry(
                        name="onprem", health={"probe": "file", "path": str(short_dir / "health")}, replicas=2
                    )
                ],
            }
        )
    )
    with TestKubelet(short_dir) as kubelet:
        proc = subprocess.Popen(
            qubelet("device-plugin", "--config", str(config), "--kubelet-dir", str(short_dir)),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            kubelet.wait_for_registrations(1, timeout=30)
            kubelet.wait_connected(timeout=10)
            assert kubelet.updates[0] == {"onprem-r0": "Healthy", "onprem-r1": "Healthy"}
            assert (short_dir / PLUGIN_SOCKET).is_socket()
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert proc.returncode == 0, stderr
    assert time.monotonic() - start < 10
    assert not (short_dir / PLUGIN_SOCKET).exists()
    assert "registered with kubelet" in stderr
    assert 'signal="SIGTERM"' in stderr
