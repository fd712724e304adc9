"""Which kubelet API the node agent serves: DRA or the device plugin, and why.

DRA needs both halves of the cluster: the API server must serve ``resource.k8s.io/v1`` (so the
node can publish ResourceSlices and read claims) and this node's kubelet must accept DRA
plugins (kubelet >= 1.34, where DRA is GA and on by default, and a ``plugins_registry``
directory for its plugin watcher). If either half is missing, or the API server cannot be
asked, the device plugin API (which every kubelet since 1.10 serves) is the safe choice.
The decision is a pure function of what was observed, so every branch is testable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from qubelet.errors import ApiError
from qubelet.kube import api_errors

Mode = Literal["dra", "device-plugin"]
MODES: tuple[Mode, ...] = ("dra", "device-plugin")
#: The group/version the DRA driver writes (ResourceSlices) and reads (ResourceClaims).
DRA_GROUP_VERSION = "resource.k8s.io/v1"
#: First kubelet with DRA GA and on by default (its v1 kubelet plugin API).
MIN_DRA_KUBELET = (1, 34)


@dataclass(frozen=True)
class Observations:
    """What the agent saw at start-up; an ``error`` string replaces what could not be read."""

    group_versions: frozenset[str] | None
    kubelet_version: str | None
    registry_dir_exists: bool
    error: str = ""


@dataclass(frozen=True)
class Decision:
    """The mode and one line saying why (logged, and shown by ``/readyz``)."""

    mode: Mode
    reason: str


class ClusterProbe(Protocol):
    """The two questions the agent asks the API server; a refusal raises ``ApiError``."""

    def group_versions(self) -> frozenset[str]:
        """Every ``group/version`` the API server serves (discovery)."""
        ...

    def kubelet_version(self, node_name: str) -> str:
        """``status.nodeInfo.kubeletVersion`` of the node."""
        ...


def parse_kubelet_version(text: str) -> tuple[int, int] | None:
    """``v1.34.1`` (or ``v1.34.1+k3s1``, ``v1.35.0-gke.100``) as (1, 34); None if unreadable."""
    match = re.match(r"^v?(\d+)\.(\d+)", text.strip())
    return (int(match[1]), int(match[2])) if match else None


def decide(forced: Mode | None, seen: Observations) -> Decision:
    """DRA when the API server serves resource.k8s.io/v1 and the kubelet takes DRA plugins."""
    if forced is not None:
        return Decision(forced, f"forced by --mode={forced}")
    if seen.error:
        return Decision("device-plugin", f"cannot ask the API server ({seen.error})")
    if seen.group_versions is None or DRA_GROUP_VERSION not in seen.group_versions:
        return Decision("device-plugin", f"the API server does not serve {DRA_GROUP_VERSION}")
    version = parse_kubelet_version(seen.kubelet_version or "")
    if version is None:
        return Decision("device-plugin", f"unknown kubelet version {seen.kubelet_version!r}")
    if version < MIN_DRA_KUBELET:
        need = ".".join(map(str, MIN_DRA_KUBELET))
        return Decision("device-plugin", f"kubelet {seen.kubelet_version} is older than v{need} (no DRA v1)")
    if not seen.registry_dir_exists:
        return Decision("device-plugin", "kubelet's plugins_registry directory is missing")
    return Decision(
        "dra",
        f"the API server serves {DRA_GROUP_VERSION} and kubelet {seen.kubelet_version} accepts DRA plugins",
    )


def observe(probe: ClusterProbe, node_name: str, registry_dir: str | Path) -> Observations:
    """Ask the API server (discovery, the Node) and look at kubelet's registry directory."""
    exists = Path(registry_dir).is_dir()
    try:
        versions = probe.group_versions()
        kubelet = probe.kubelet_version(node_name) if DRA_GROUP_VERSION in versions else None
    except ApiError as exc:
        first = (exc.reason or str(exc) or type(exc).__name__).splitlines()[0]
        return Observations(None, None, exists, f"{exc.status} {first}" if exc.status else first)
    return Observations(versions, kubelet, exists)


class KubeClusterProbe:
    """:class:`ClusterProbe` over the kubernetes client (kubeconfig or in-cluster)."""

    def __init__(self, api_client: Any) -> None:
        """Ask through ``api_client`` (a ``kubernetes.client.ApiClient``)."""
        self.api_client = api_client

    def group_versions(self) -> frozenset[str]:
        """``GET /apis``: every group/version the API server serves."""
        from kubernetes import client

        with api_errors("discovery"):
            groups = client.ApisApi(self.api_client).get_api_versions(_request_timeout=10)
        return frozenset(v.group_version for g in groups.groups or [] for v in g.versions or [])

    def kubelet_version(self, node_name: str) -> str:
        """``GET /api/v1/nodes/<name>``: the kubelet version the node reports."""
        from kubernetes import client

        with api_errors(f"read node {node_name}"):
            node = client.CoreV1Api(self.api_client).read_node(node_name, _request_timeout=10)
        info = node.status.node_info if node.status else None
        return str(info.kubelet_version) if info else ""
