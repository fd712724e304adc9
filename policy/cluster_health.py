"""QPU health from the cluster itself: our DRA driver's device taints, read from ResourceSlices.

With ``qubelet run --cluster-health`` the executor passes every re-plan's backend states
through :meth:`ClusterHealth.apply`, which lists the ResourceSlices of driver
``qpu.quantum.example.com`` (at most once per ``ttl`` seconds, 15 by default like
:mod:`policy.live`) and offers a QPU as unhealthy when every one of its devices there carries a
``NoSchedule`` or ``NoExecute`` taint: nothing can be allocated on it, whatever the taint's key
(the driver's own ``qpu.quantum.example.com/unhealthy`` under ``--unhealthy taint``, or an
admin's). A taint on one replica of several leaves the QPU usable through the others. The
reason names the taint, the device and the slice, and plan.json shows it
(``lost_because: "unhealthy: cluster: ..."``).

Devices map to backends the way the rest of the code names QPUs: the device's ``qpu``
attribute is the inventory name (the device's own name when the attribute is missing, as
``pipeline.cluster.capabilities.read_cluster`` reads it), and the backend is ``qpu:<name>``,
the name the device plugin and DRA driver inject into a pod (``QUBELET_QPU_NAME``). A laptop
run names its embedded fake after the fake class (``qpu:apollo``); set ``QUBELET_QPU_NAME`` to
the inventory name to match a cluster that names it otherwise. A QPU absent from every slice is
left as it is: absence is no verdict (the driver's default ``--unhealthy remove`` drops unhealthy
devices, which Prometheus' ``qubelet_dra_qpu_healthy`` reports instead, see :mod:`policy.live`).

Reading needs ``list`` on ``resource.k8s.io`` ``resourceslices`` (cluster-scoped). A read that
fails (no permission, API server down) costs one warning per ``ttl`` and changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from policy.interface import BackendState
from qubelet import klog
from qubelet.inventory.names import DRIVER_NAME

log = klog.get_logger("qubelet.policy")

#: taint effects that keep new allocations off a device (``None`` only informs)
BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
DEFAULT_TTL_SECONDS = 15.0


def device_qpu(device: Any) -> str:
    """The inventory name of the QPU a slice device belongs to (its ``qpu`` attribute)."""
    attribute = (getattr(device, "attributes", None) or {}).get("qpu")
    name = getattr(attribute, "string", None) if attribute is not None else None
    return str(name or device.name)


def _taint_text(taint: Any) -> str:
    value = f"={taint.value}" if getattr(taint, "value", None) else ""
    return f"{taint.key}{value}:{taint.effect}"


def tainted_qpus(slices: Iterable[Any]) -> dict[str, str]:
    """Backend name (``qpu:<name>``) → why, for each QPU whose devices are all taint-blocked.

    ``slices`` are ``kubernetes.client.V1ResourceSlice`` objects; other drivers' are ignored.
    """
    devices: dict[str, int] = {}
    blocked: dict[str, list[str]] = {}
    for rs in slices:
        if rs.spec.driver != DRIVER_NAME:
            continue
        for device in rs.spec.devices or []:
            qpu = f"qpu:{device_qpu(device)}"
            devices[qpu] = devices.get(qpu, 0) + 1
            taints = [t for t in device.taints or [] if t.effect in BLOCKING_EFFECTS]
            if taints:
                where = f"device {device.name} in ResourceSlice {rs.metadata.name}"
                blocked.setdefault(qpu, []).append(f"{where} tainted {', '.join(map(_taint_text, taints))}")
    out = {}
    for qpu, reasons in blocked.items():
        if len(reasons) == devices[qpu]:
            more = f" (and {len(reasons) - 1} more of its devices)" if len(reasons) > 1 else ""
            out[qpu] = f"cluster: {reasons[0]}{more}"
    return out


class SliceReader:
    """Lists our driver's ResourceSlices through a ``kubernetes`` ``ApiClient``."""

    def __init__(self, api_client: Any, *, timeout: float = 5.0) -> None:
        self.api_client = api_client
        self.timeout = timeout

    def __call__(self) -> list[Any]:
        """Every ResourceSlice of driver ``qpu.quantum.example.com``.

        Raises:
            ApiError: the list failed (one line: status, reason, message).
        """
        from kubernetes import client

        from qubelet.kube import api_errors

        api = client.ResourceV1Api(self.api_client)
        with api_errors("list resourceslices"):
            listed = api.list_resource_slice(
                field_selector=f"spec.driver={DRIVER_NAME}", _request_timeout=self.timeout
            )
        return list(listed.items or [])


class ClusterHealth:
    """QPU health from ResourceSlice device taints, read at most once per ``ttl`` seconds."""

    def __init__(
        self,
        read: Callable[[], Sequence[Any]],
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.ttl = ttl
        self.clock = clock
        self._read_at: float | None = None
        self._unhealthy: dict[str, str] = {}
        #: slice lists made (tests count the API server's load by it)
        self.reads = 0

    def _refresh(self) -> None:
        now = self.clock()
        if self._read_at is not None and now - self._read_at < self.ttl:
            return
        self._read_at = now
        self.reads += 1
        try:
            unhealthy = tainted_qpus(self.read())
        except Exception as exc:  # one warning per ttl; the run goes on with what it knows
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("cluster health unreadable, QPUs kept as they report", err=first)
            self._unhealthy = {}
            return
        for name in sorted(unhealthy.keys() - self._unhealthy.keys()):
            log.warning(
                "QPU tainted in the cluster, offered as unhealthy", backend=name, reason=unhealthy[name]
            )
        for name in sorted(self._unhealthy.keys() - unhealthy.keys()):
            log.info("QPU no longer tainted in the cluster", backend=name)
        self._unhealthy = unhealthy

    def unhealthy(self) -> dict[str, str]:
        """Backend name → reason, as of the last read (reading again once ``ttl`` has passed)."""
        self._refresh()
        return dict(self._unhealthy)

    def apply(self, states: Sequence[BackendState]) -> list[BackendState]:
        """``states`` with every QPU the cluster has tainted offered as unhealthy, and why."""
        unhealthy = self.unhealthy()
        return [
            state.marked_unhealthy(unhealthy[state.name]) if state.name in unhealthy else state
            for state in states
        ]
