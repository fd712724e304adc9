"""Device health → the kubelet's resource-health stream and the slice reconcile loop.

The device plugin's :class:`HealthMonitor` probes QPUs; this module turns its per-QPU
transitions into per-device ``DeviceHealth`` messages for every open ``NodeWatchResources``
stream (kubelet shows them in pod status) and wakes the slice reconciler so unhealthy devices
leave (or get tainted in) the ResourceSlice and come back when healthy.

The stream is served in dra-health v1 (kubelet 1.37 prefers it) and v1alpha1 (kubelet
1.34-1.36); the two protos are the same messages in different packages, so one servicer,
given the generated module of its version, serves both.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from dra_driver.api.dra_health.v1 import api_pb2 as health_v1
from dra_driver.api.dra_health.v1 import api_pb2_grpc as health_v1_grpc
from dra_driver.api.dra_health.v1alpha1 import api_pb2 as health_pb2
from dra_driver.api.dra_health.v1alpha1 import api_pb2_grpc as health_grpc
from dra_driver.devices import QPUDevice

#: How long a stream waits for a change before re-checking that the client is still there.
_POLL_SECONDS = 0.5


def _word(state: bool | None) -> str:
    return "not probed yet" if state is None else "healthy" if state else "unhealthy"


class HealthBroadcaster:
    """Holds the latest health per QPU and fans changes out to subscribers."""

    def __init__(self, devices: Iterable[QPUDevice], health: dict[str, bool] | None = None) -> None:
        self.devices = list(devices)
        self._lock = threading.Lock()
        self._health: dict[str, bool] = dict(health or {})
        self._updated: dict[str, int] = {}
        self._subscribers: list[queue.SimpleQueue[None]] = []
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every change (the reconcile loop's wake-up)."""
        self._listeners.append(fn)

    def snapshot(self) -> dict[str, bool]:
        """Health of every device, by device name."""
        with self._lock:
            return dict(self._health)

    def set(self, qpu_name: str, healthy: bool) -> None:
        """Record a QPU's health (HealthMonitor's ``on_change``); notifies on change only."""
        with self._lock:
            if self._health.get(qpu_name) == healthy:
                return
            self._health[qpu_name] = healthy
            self._updated[qpu_name] = int(time.time())
            subscribers = list(self._subscribers)
        for q in subscribers:
            q.put(None)
        for fn in self._listeners:
            fn()

    def message(self, pb: Any = health_pb2) -> Any:
        """The full device health list as kubelet wants it, in the messages of module ``pb``."""
        with self._lock:
            health = dict(self._health)
            updated = dict(self._updated)
        out = []
        for d in self.devices:
            state = health.get(d.qpu.name)
            status = pb.UNKNOWN if state is None else pb.HEALTHY if state else pb.UNHEALTHY
            out.append(
                pb.DeviceHealth(
                    device=pb.DeviceIdentifier(pool_name=d.pool, device_name=d.name),
                    health=status,
                    last_updated_time=updated.get(d.qpu.name, int(time.time())),
                    health_check_timeout_seconds=int(max(1.0, d.qpu.health.interval_seconds * 3)),
                    message=f"QPU {d.qpu.name} {_word(state)}",
                )
            )
        return pb.NodeWatchResourcesResponse(devices=out)

    def subscribe(self) -> queue.SimpleQueue[None]:
        """A queue that gets an item on every health change (one per stream)."""
        q: queue.SimpleQueue[None] = queue.SimpleQueue()
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.SimpleQueue[None]) -> None:
        """Stop delivering changes to ``q`` (its stream ended)."""
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)


class HealthService(health_grpc.DRAResourceHealthServicer):
    """``DRAResourceHealth`` of module ``pb``: the current state first, then one message per change."""

    def __init__(self, broadcaster: HealthBroadcaster, pb: Any = health_pb2) -> None:
        self.broadcaster = broadcaster
        self.pb = pb

    def NodeWatchResources(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """Stream the devices' health to kubelet: all at once, then on every change."""
        q = self.broadcaster.subscribe()
        try:
            yield self.broadcaster.message(self.pb)
            while context.is_active():
                try:
                    q.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                yield self.broadcaster.message(self.pb)
        finally:
            self.broadcaster.unsubscribe(q)


def add_health_services(broadcaster: HealthBroadcaster, server: grpc.Server) -> None:
    """Serve ``v1.DRAResourceHealth`` and ``v1alpha1.DRAResourceHealth`` from ``broadcaster``."""
    health_v1_grpc.add_DRAResourceHealthServicer_to_server(HealthService(broadcaster, health_v1), server)
    health_grpc.add_DRAResourceHealthServicer_to_server(HealthService(broadcaster, health_pb2), server)
