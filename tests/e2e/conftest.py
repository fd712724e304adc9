"""The real control plane for the e2e suite: one per session, brought up by ``hack/cluster.py``.

The binaries come from ``hack/controlplane/build.sh`` (kube-apiserver, scheduler,
controller-manager, etcd, kubectl and Kueue at the pinned versions), cached under
``$QUBELET_CONTROLPLANE_CACHE`` (default ``.cache/controlplane``). Without them the e2e tests
skip with the reason; with ``CI=true`` (or ``QUBELET_E2E_BUILD=1``) the fixture builds them, and
in CI a missing Go or a failed build fails the session instead of skipping it.

Every test here is marked ``e2e`` (``make e2e`` runs only these). The cluster's state (logs, pid
files, kubeconfig, ``versions.json``: what ran) is in a temporary directory, removed at the end
unless ``QUBELET_E2E_KEEP=1``; a failing test's report carries the tail of every process's log.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_cluster_module() -> Any:
    spec = importlib.util.spec_from_file_location("qubelet_hack_cluster", ROOT / "hack" / "cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cluster_mod = _load_cluster_module()
IN_CI = os.environ.get("CI") == "true"
#: The label a namespace needs before it may ask for a QPU (manifests/tenants, in both overlays).
TENANT = {"quantum.example.com/qpu-tenant": "true"}
#: The session's cluster once up: a failing test's report gets the tail of every process log.
_ACTIVE: list[Any] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if (
        report.failed
        and _ACTIVE
        and Path(str(item.fspath)).resolve().parent == Path(__file__).resolve().parent
    ):
        procs = _ACTIVE[0].procs
        for name in procs.names():
            report.sections.append((f"e2e log {name}", procs.log_tail(name, 12)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def _bin_dir() -> Path:
    cache = Path(os.environ.get("QUBELET_CONTROLPLANE_CACHE") or cluster_mod.DEFAULT_CACHE)
    bin_dir = cache / "bin"
    missing = cluster_mod.missing_binaries(bin_dir)
    build = IN_CI or os.environ.get("QUBELET_E2E_BUILD") == "1"
    if missing and not build:
        pytest.skip(
            f"e2e: control plane not built ({', '.join(missing)} missing in {bin_dir}); "
            "run `make controlplane` (needs Go) or set QUBELET_E2E_BUILD=1"
        )
    if build:
        if shutil.which("go") is None and missing:
            reason = "e2e: Go is not installed, so the control plane cannot be built"
            if IN_CI:
                pytest.fail(reason + " (CI=true: e2e may not skip)", pytrace=False)
            pytest.skip(reason)
        if shutil.which("go") is not None:
            try:
                bin_dir = cluster_mod.build(cache)
            except cluster_mod.ClusterError as exc:
                pytest.fail(f"e2e: {exc}", pytrace=False)
    return bin_dir


class E2ECluster:
    """What a test gets: the running cluster, its clients, and a few helpers."""

    def __init__(self, cluster: Any) -> None:
        from kubernetes import client

        from qubelet.kube import load_kube_client

        self.cluster = cluster
        self.kubeconfig = str(cluster.kubeconfig)
        self.api_client = load_kube_client(self.kubeconfig)
        self.core = client.CoreV1Api(self.api_client)
        self.resource = client.ResourceV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.versions = json.loads((cluster.state / "versions.json").read_text())

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.cluster.kubectl(*args, input=input, check=check)

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def apply(self, *objects: dict[str, Any]) -> None:
        self.cluster.apply(objects)

    def node_dir(self, node: str) -> Path:
        return self.cluster.node_dir(node)

    def prepared(self, namespace: str, pod: str, timeout: float = 60) -> dict[str, Any]:
        """What the node's kubelet double prepared for ``pod`` (waits for its record)."""

        def find() -> Any:
            for node in self.cluster.nodes:
                path = self.node_dir(node) / "prepared" / f"{namespace}_{pod}.json"
                if path.exists():
                    return json.loads(path.read_text())
            return None

        return wait_for(find, timeout, f"the kubelet double to prepare {namespace}/{pod}")


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll until ``check`` returns something truthy (exceptions count as not yet); fail on timeout."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:
            last = exc
        else:
            if result:
                return result
        time.sleep(interval)
    pytest.fail(
        f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last})" if last else "")
    )


@pytest.fixture(scope="session")
def e2e_cluster() -> Iterator[E2ECluster]:
    """The session's control plane (up once, down at the end; QUBELET_E2E_KEEP=1 keeps its state)."""
    bin_dir = _bin_dir()
    state = Path(tempfile.mkdtemp(prefix="qbe2e-", dir="/tmp"))
    cluster = cluster_mod.Cluster(state, bin_dir)
    t0 = time.monotonic()
    try:
        cluster.up()
    except cluster_mod.ClusterError as exc:
        cluster.down()
        pytest.fail(f"e2e: cluster up failed (state in {state}): {exc}", pytrace=False)
    print(f"\ne2e cluster up in {time.monotonic() - t0:.0f} s, state {state}", file=sys.stderr)
    _ACTIVE.append(cluster)
    try:
        yield E2ECluster(cluster)
    finally:
        _ACTIVE.clear()
        cluster.down()
        if os.environ.get("QUBELET_E2E_KEEP") != "1":
            shutil.rmtree(state, ignore_errors=True)
