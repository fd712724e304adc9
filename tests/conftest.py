"""Shared fixtures: the test doubles (tests/doubles/), grouped as the packages they stand in for.

Each double speaks the real wire contract of what cannot run here (kubelet, the API server,
Argo's Workflow API); the fixtures start and stop them so a test only says which one it needs.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from doubles.fake_argo_api import FakeArgoApiServer, serving
from doubles.fake_resource_api import FakeResourceAPI
from doubles.kubelet_deviceplugin import TestKubelet
from doubles.kubelet_dra import TestKubeletDRA

# --- everywhere ----------------------------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temp dir with a short path: unix socket paths are limited to ~107 bytes (tmp_path is long)."""
    path = Path(tempfile.mkdtemp(prefix="qbt", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- qubelet.inventory ---------------------------------------------------------------------------


@pytest.fixture
def qpu_entry() -> Callable[..., dict[str, Any]]:
    """Build one valid ``qpus:`` entry (an on-prem fake Adonis); keyword arguments override fields."""

    def make(**overrides: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": "adonis-onprem",
            "vendor": "IQM",
            "model": "Adonis",
            "qubits": 5,
            "technology": "superconducting",
            "location": "onprem",
            "backend": "fake:IQMFakeAdonis",
        }
        entry.update(overrides)
        return entry

    return make


# --- qpu_device_plugin ---------------------------------------------------------------------------


@pytest.fixture
def kubelet(short_dir: Path) -> Iterator[TestKubelet]:
    """A kubelet device manager double serving ``Registration`` on ``short_dir/kubelet.sock``."""
    with TestKubelet(short_dir) as double:
        yield double


# --- dra_driver ----------------------------------------------------------------------------------


@pytest.fixture
def fake_resource_api() -> FakeResourceAPI:
    """An in-memory API server for ResourceSlices, ResourceClaims and Leases."""
    return FakeResourceAPI()


@pytest.fixture
def dra_kubelet(short_dir: Path) -> Iterator[TestKubeletDRA]:
    """Kubelet's plugin watcher and DRA manager, watching ``short_dir/plugins_registry``."""
    registry = short_dir / "plugins_registry"
    registry.mkdir()
    double = TestKubeletDRA(registry)
    try:
        yield double
    finally:
        double.close()


# --- admission_check and policy (Kueue, Prometheus) -----------------------------------------------


@pytest.fixture
def fake_kueue_api() -> Any:
    """In-memory Kueue Workloads and AdmissionChecks, validated against the vendored CRDs."""
    from doubles.fake_kueue_api import FakeKueueAPI

    return FakeKueueAPI()


@pytest.fixture
def fake_prometheus() -> Iterator[Any]:
    """A Prometheus HTTP API answering the policy's and the admission check's queries."""
    from doubles.fake_prometheus import FakePrometheus

    with FakePrometheus() as double:
        yield double


# --- pipeline.cluster ----------------------------------------------------------------------------


@pytest.fixture
def fake_argo_api() -> Iterator[FakeArgoApiServer]:
    """kube-apiserver with Argo's Workflow CRD over HTTP; a Workflow runs Pending → Running → Succeeded."""
    with serving(["", "Running", "Running", "Succeeded"]) as server:
        yield server
