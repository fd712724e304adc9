"""The DRA protos: upstream package/service names, and coexistence with the device plugin's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)
#: The installed console script (``python -m qubelet.cli`` would load a second UsageError class).
QUBELET = str(Path(sys.executable).with_name("qubelet"))


def test_upstream_service_names() -> None:
    from dra_driver.api.dra.v1 import api_pb2 as v1
    from dra_driver.api.dra.v1beta1 import api_pb2 as v1beta1
    from dra_driver.api.dra_health.v1 import api_pb2 as health_v1
    from dra_driver.api.dra_health.v1alpha1 import api_pb2 as health
    from dra_driver.api.pluginregistration.v1 import api_pb2 as reg

    assert v1.DESCRIPTOR.services_by_name["DRAPlugin"].full_name == "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin"
    assert (
        v1beta1.DESCRIPTOR.services_by_name["DRAPlugin"].full_name
        == "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin"
    )
    assert health.DESCRIPTOR.services_by_name["DRAResourceHealth"].full_name == "v1alpha1.DRAResourceHealth"
    assert health_v1.DESCRIPTOR.services_by_name["DRAResourceHealth"].full_name == "v1.DRAResourceHealth"
    assert reg.DESCRIPTOR.services_by_name["Registration"].full_name == "pluginregistration.Registration"
    # field numbers kubelet relies on
    assert v1.Device.DESCRIPTOR.fields_by_name["cdi_device_ids"].number == 4
    assert v1.Device.DESCRIPTOR.fields_by_name["share_id"].number == 5
    assert v1.Claim.DESCRIPTOR.fields_by_name["uid"].number == 2
    assert reg.PluginInfo.DESCRIPTOR.fields_by_name["supported_versions"].number == 4


def test_device_plugin_and_dra_protos_load_in_one_process() -> None:
    """Both use a v1beta1 package; the descriptor pool must accept them together."""
    code = (
        "import qpu_device_plugin.api.v1beta1.api_pb2 as dp\n"
        "import dra_driver.api.dra.v1beta1.api_pb2 as dra\n"
        "import dra_driver.api.pluginregistration.v1.api_pb2 as reg\n"
        "import dra_driver.api.dra_health.v1alpha1.api_pb2 as h\n"
        "import dra_driver.api.dra_health.v1.api_pb2 as h1\n"
        "print(dp.AllocateRequest.DESCRIPTOR.full_name,\n"
        "      dra.NodePrepareResourcesRequest.DESCRIPTOR.full_name)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=25, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "v1beta1.AllocateRequest",
        "k8s.io.kubelet.pkg.apis.dra.v1beta1.NodePrepareResourcesRequest",
    ]


def test_cli_rejects_bad_input_in_one_line(tmp_path: object) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "qpus.yaml"
    bad.write_text("version: v1\nqpus: []\n")
    for argv in (
        ["dra-driver", "controller", "--config", str(bad)],
        ["dra-driver", "kubelet-plugin", "--config", str(bad), "--node-name", "n1"],
    ):
        out = subprocess.run([QUBELET, *argv], capture_output=True, text=True, timeout=25, check=False)
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "qpus" in lines[0] and str(bad) in lines[0]


def test_cli_help_lists_verbs() -> None:
    out = subprocess.run(
        [QUBELET, "dra-driver", "kubelet-plugin", "--help"],
        capture_output=True,
        text=True,
        timeout=25,
        check=False,
    )
    assert out.returncode == 0
    for flag in ("--config", "--node-name", "--plugins-dir", "--registry-dir", "--cdi-dir", "--kubeconfig"):
        assert flag in out.stdout
