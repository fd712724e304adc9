"""What the target cluster can run, so ``render`` and ``submit`` plan only for backends it has.

Read from the cluster (``--kubeconfig``: nodes' ``nvidia.com/gpu`` and ``quantum.example.com/qpu``
allocatable, DeviceClasses, the QPU driver's ResourceSlices, Kueue LocalQueues in the run's
namespace) or from a ``--cluster-profile`` file of the same facts (for a cluster the laptop cannot
reach). Without either, nothing is known: every requested class is kept and the assumption is
said out loud. A step for a backend the cluster lacks would wait forever in Kueue or the
scheduler; :func:`fit` leaves such a class out of the plan and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cluster.resources import GPU_RESOURCE, QUEUES
from qubelet.errors import UsageError
from qubelet.inventory.names import DEVICE_CLASS_NAME, DRIVER_NAME, RESOURCE_NAME

KUEUE = ("kueue.x-k8s.io", "v1beta2", "localqueues")


@dataclass(frozen=True)
class ClusterCapabilities:
    """The facts about a cluster that decide which backend classes a run may plan for.

    The profile file (``--cluster-profile``) is this as YAML or JSON, keys as in :meth:`to_json`.
    """

    source: str  #: where the facts come from (a kubeconfig, a profile file)
    #: nodes' allocatable ``nvidia.com/gpu``, summed
    gpus: int = 0
    #: nodes' allocatable ``quantum.example.com/qpu`` (device plugin), summed
    qpu_extended: int = 0
    device_classes: tuple[str, ...] = ()
    #: QPUs the DRA driver publishes in ResourceSlices (the inventory's names)
    qpus: tuple[str, ...] = ()
    #: Kueue LocalQueues in the run's namespace; None when Kueue is not installed
    local_queues: tuple[str, ...] | None = None
    namespace: str = ""
    #: what could not be read and why (``nodes``, ``dra``, ``localqueues``: e.g. forbidden to a
    #: workflow author without cluster-wide list rights); :func:`fit` assumes instead, and says so
    unreadable: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The profile-file form."""
        return {
            "gpus": self.gpus,
            "qpuExtendedResource": self.qpu_extended,
            "deviceClasses": list(self.device_classes),
            "qpus": list(self.qpus),
            "localQueues": None if self.local_queues is None else list(self.local_queues),
            "namespace": self.namespace,
        }

    @classmethod
    def from_json(cls, data: Any, source: str) -> ClusterCapabilities:
        """Read a profile; a wrong shape is a one-line UsageError naming the file and key."""
        if not isinstance(data, dict):
            raise UsageError(f"{source}: expected a mapping of cluster facts (gpus, qpus, localQueues, ...)")
        known = {"gpus", "qpuExtendedResource", "deviceClasses", "qpus", "localQueues", "namespace"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")

        def names(key: str) -> tuple[str, ...]:
            value = data.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UsageError(f"{source}: {key} must be a list of names")
            return tuple(value)

        def count(key: str) -> int:
            value = data.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"{source}: {key} must be a count (0 or more), got {value!r}")
            return value

        return cls(
            source=source,
            gpus=count("gpus"),
            qpu_extended=count("qpuExtendedResource"),
            device_classes=names("deviceClasses"),
            qpus=names("qpus"),
            local_queues=None if data.get("localQueues") is None else names("localQueues"),
            namespace=str(data.get("namespace") or ""),
        )


def load_profile(path: Path) -> ClusterCapabilities:
    """A ``--cluster-profile`` file (YAML or JSON)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--cluster-profile {path}: no such file") from None
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"--cluster-profile {path}: not YAML ({first})") from None
    return ClusterCapabilities.from_json(data, f"--cluster-profile {path}")


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def read_cluster(api_client: Any, namespace: str, source: str = "the cluster") -> ClusterCapabilities:
    """The capabilities of the cluster ``api_client`` talks to (one-line error if it cannot be read).

    Least privilege: list nodes, deviceclasses, resourceslices and (namespaced) localqueues.
    A missing Kueue CRD means no Kueue (``local_queues`` None), not an error.
    """
    from kubernetes import client

    from policy.cluster_health import device_qpu
    from qubelet.errors import ApiError, NotFound
    from qubelet.kube import api_errors

    core = client.CoreV1Api(api_client)
    resource = client.ResourceV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    unreadable: dict[str, str] = {}

    def forbidden(exc: ApiError) -> bool:
        return exc.status in (401, 403)

    try:
        gpus = qpu_extended = 0
        try:
            with api_errors("list nodes"):
                nodes = core.list_node().items
            gpus = sum(
                _quantity((n.status.allocatable or {}).get(GPU_RESOURCE, 0)) for n in nodes if n.status
            )
            qpu_extended = sum(
                _quantity((n.status.allocatable or {}).get(RESOURCE_NAME, 0)) for n in nodes if n.status
            )
        except ApiError as exc:
            if not forbidden(exc):
                raise
            unreadable["nodes"] = str(exc)
        classes: tuple[str, ...] = ()
        slices: list[Any] = []
        try:
            with api_errors("list deviceclasses"):
                classes = tuple(sorted(c.metadata.name for c in resource.list_device_class().items))
            with api_errors("list resourceslices"):
                slices = resource.list_resource_slice().items
        except NotFound:  # no resource.k8s.io/v1 on this server: no DRA
            classes, slices = (), []
        except ApiError as exc:
            if not forbidden(exc):
                raise
            unreadable["dra"] = str(exc)
        qpus: set[str] = set()
        for rs in slices:
            if rs.spec.driver != DRIVER_NAME:
                continue
            qpus.update(device_qpu(device) for device in rs.spec.devices or [])
        try:
            with api_errors(f"list localqueues in {namespace}"):
                listed = custom.list_namespaced_custom_object(*KUEUE[:2], namespace, KUEUE[2])
            queues: tuple[str, ...] | None = tuple(
                sorted(item["metadata"]["name"] for item in listed.get("items", []))
            )
        except NotFound:
            queues = None
        except ApiError as exc:
            if not forbidden(exc):
                raise
            queues = None
            unreadable["localqueues"] = str(exc)
    except ApiError as exc:
        raise UsageError(f"reading cluster capabilities: {exc}") from None
    return ClusterCapabilities(
        source=source,
        gpus=gpus,
        qpu_extended=qpu_extended,
        device_classes=classes,
        qpus=tuple(sorted(qpus)),
        local_queues=queues,
        namespace=namespace,
        unreadable=unreadable,
    )


@dataclass
class Fit:
    """The backend classes a run keeps on a cluster, and why the others were left out."""

    kept: tuple[str, ...]
    left_out: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What ``render`` and ``submit`` print (one line each)."""
        out = [f"cluster: left out {kind}: {why}" for kind, why in self.left_out.items()]
        return out + [f"cluster: {note}" for note in self.notes]


def fit(backends: Sequence[str], caps: ClusterCapabilities | None, qpu_request: str = "claim") -> Fit:
    """Which of ``backends`` the cluster can run; with no capabilities, all of them, said as assumed."""
    if caps is None:
        return Fit(
            tuple(backends),
            notes=[
                "no --kubeconfig or --cluster-profile: assumed the cluster runs every requested "
                f"backend ({', '.join(backends)}), a LocalQueue for each and "
                + ("a QPU DeviceClass with published QPUs" if qpu_request == "claim" else RESOURCE_NAME)
            ],
        )
    kept: list[str] = []
    left_out: dict[str, str] = {}
    notes: list[str] = []
    queues = caps.local_queues
    where = f"namespace {caps.namespace}" if caps.namespace else "the namespace"
    unknown = caps.unreadable
    for what, why in unknown.items():
        notes.append(f"could not read {what} ({why}): assumed they allow the requested backends")
    for kind in backends:
        reason = None
        source = {"gpu": "nodes", "qpu": "dra" if qpu_request == "claim" else "nodes"}.get(kind)
        if source in unknown:
            pass  # assumed present (noted above)
        elif kind == "gpu" and caps.gpus == 0:
            reason = f"no node has {GPU_RESOURCE} capacity ({caps.source})"
        elif kind == "qpu" and qpu_request == "claim":
            if DEVICE_CLASS_NAME not in caps.device_classes:
                reason = f"no DeviceClass {DEVICE_CLASS_NAME} ({caps.source})"
            elif not caps.qpus:
                reason = f"no ResourceSlice publishes a {DRIVER_NAME} device ({caps.source})"
        elif kind == "qpu" and caps.qpu_extended == 0:
            reason = f"no node has {RESOURCE_NAME} capacity ({caps.source})"
        if reason is None and queues is not None and QUEUES[kind] not in queues and kind != "cpu":
            reason = f"no Kueue LocalQueue {QUEUES[kind]} in {where}"
        if reason is None:
            kept.append(kind)
        else:
            left_out[kind] = reason
    if queues is None:
        if "localqueues" not in unknown:
            notes.append(f"Kueue is not installed ({caps.source}): steps are not queued")
    elif QUEUES["cpu"] not in queues:
        notes.append(
            f"no Kueue LocalQueue {QUEUES['cpu']} in {where}: the generate and reconstruct steps "
            "would wait for admission"
        )
    if caps.qpus and "qpu" in kept:
        notes.append(f"QPUs published: {', '.join(caps.qpus)}")
    return Fit(tuple(kept), left_out, notes)
