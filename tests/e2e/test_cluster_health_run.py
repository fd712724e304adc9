"""A QPU the DRA driver taints in its ResourceSlice gets no work from ``qubelet run --cluster-health``.

Against a real kube-apiserver (``apiserver.py``): the driver's own reconcile code publishes a
network pool for the QPU ``apollo`` (two replicas) in ``--unhealthy taint`` mode, first unhealthy
(every device tainted ``qpu.quantum.example.com/unhealthy=true:NoSchedule``). The cluster-health
reader (``policy.cluster_health``) lists it through the kubeconfig and marks ``qpu:apollo``
unhealthy; a real ``qubelet run`` process (fake QPU, telemetry policy, the CPU weighted so the QPU
gets work when it may) dispatches nothing to it and plan.json says why. Untainted, the reader
reports it healthy once its cache has expired (not before), and the same run gives it work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apiserver import apiserver_kubeconfig  # noqa: F401 (the session fixture)

from dra_driver.client import KubeResourceAPI
from dra_driver.constants import PUBLISHER_LABEL, UNHEALTHY_TAINT_KEY
from dra_driver.reconcile import SliceReconciler
from dra_driver.slices import network_slices
from policy.cluster_health import ClusterHealth, SliceReader
from policy.interface import BackendState
from qubelet.inventory import parse_config
from qubelet.inventory.names import DRIVER_NAME
from qubelet.kube import load_kube_client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
PUBLISHER = "e2e-cluster-health"
QPUS = parse_config(
    {
        "version": "v1",
        "qpus": [
            {
                "name": "apollo",  # a laptop run's name for fake:IQMFakeApollo: qpu:apollo
                "vendor": "IQM",
                "model": "Apollo",
                "qubits": 20,
                "technology": "superconducting",
                "location": "cloud",
                "topology": "square",
                "backend": "fake:IQMFakeApollo",
                "calibration": {"fidelity2q": 0.985, "readoutFidelity": 0.95},
                "replicas": 2,
            }
        ],
    },
    "e2e",
).qpus
#: the CPU's predicted run time x 1000: the QPU gets work whenever it is offered as healthy
POLICY_CONFIG = "version: v1\nepsilon: 0\nbackends:\n  - kind: cpu\n    weight: 1000\n"


def _publish(reconciler: SliceReconciler, healthy: bool) -> None:
    slices = network_slices(QPUS, {"apollo": healthy}, "taint")
    for s in slices:
        s.metadata.labels = {PUBLISHER_LABEL: PUBLISHER}  # not a running controller's pools
    reconciler.reconcile(slices)


@pytest.fixture
def pool(apiserver_kubeconfig: str) -> Iterator[SliceReconciler]:  # noqa: F811
    api = KubeResourceAPI(apiserver_kubeconfig, request_timeout=30)
    reconciler = SliceReconciler(
        api,
        label_selector=f"{PUBLISHER_LABEL}={PUBLISHER}",
        field_selector=f"spec.driver={DRIVER_NAME},spec.pool.name=cloud/apollo",
    )
    yield reconciler
    reconciler.reconcile([])


def _run(tmp_path: Path, kubeconfig: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    config = tmp_path / "policy.yaml"
    config.write_text(POLICY_CONFIG)
    run_dir = tmp_path / name
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("QUBELET_QPU_BACKEND", "QUBELET_QPU_NAME", "IQM_SERVER_URL", "KUBECONFIG"):
        env.pop(var, None)
    done = subprocess.run(
        [sys.executable, "-m", "qubelet.cli", "run", "--qubits", "4", "--cuts", "1", "--shots", "200",
         "--backends", "cpu,qpu", "--policy", "telemetry", "--error-budget", "1",
         "--policy-config", str(config), "--cluster-health", "--kubeconfig", kubeconfig,
         "--run-dir", str(run_dir), "--no-progress"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads((run_dir / "plan.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    return plan, summary


def test_a_tainted_qpu_gets_no_work_and_plan_json_says_why(
    pool: SliceReconciler,
    apiserver_kubeconfig: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    _publish(pool, healthy=False)
    stored = pool.api.list_resource_slices(pool.label_selector, pool.field_selector)
    assert {t.key for s in stored for d in s.spec.devices for t in d.taints or []} == {UNHEALTHY_TAINT_KEY}

    # the reader, through the same client configuration `qubelet run` builds
    reader = ClusterHealth(SliceReader(load_kube_client(apiserver_kubeconfig, retries=False)), ttl=2.0)
    states = [BackendState(name="cpu", kind="cpu"), BackendState(name="qpu:apollo", kind="qpu")]
    cpu, apollo = reader.apply(states)
    assert cpu.healthy and not apollo.healthy
    slice_name = stored[0].metadata.name
    assert apollo.unhealthy_reason == (
        f"cluster: device apollo-r0 in ResourceSlice {slice_name} tainted "
        f"{UNHEALTHY_TAINT_KEY}=true:NoSchedule (and 1 more of its devices)"
    )

    plan, summary = _run(tmp_path, apiserver_kubeconfig, "tainted")
    assert {b["backend"] for b in plan["batches"]} == {"cpu"}
    assert set(summary["backends"]) == {"cpu"}
    assert plan["decisions"]
    for decision in plan["decisions"].values():
        lost = {c["backend"]: c.get("lost_because") for c in decision["candidates"]}
        assert lost["qpu:apollo"] == f"unhealthy: {apollo.unhealthy_reason}"

    # untainted: healthy again once the reader's cache expires, not before (a fresh reader: the
    # run above took longer than the first one's cache lasts)
    reader = ClusterHealth(SliceReader(load_kube_client(apiserver_kubeconfig, retries=False)), ttl=5.0)
    assert not reader.apply(states)[1].healthy and reader.reads == 1
    read_at = time.monotonic()
    _publish(pool, healthy=True)
    assert not reader.apply(states)[1].healthy and reader.reads == 1  # the cached verdict
    time.sleep(max(0.0, 5.0 - (time.monotonic() - read_at)) + 0.1)
    assert reader.apply(states)[1].healthy and reader.reads == 2

    # and the same run now gives the QPU work: the taint, not the policy, kept it off
    plan, summary = _run(tmp_path, apiserver_kubeconfig, "untainted")
    assert "qpu:apollo" in {b["backend"] for b in plan["batches"]}
    assert "qpu" in summary["backends"]
