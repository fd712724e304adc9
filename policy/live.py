"""Live cluster signals for the scheduling loop: health and queues from Prometheus, as they are.

A fitted model's Prometheus snapshot describes the moment of the fit (and expires, see
``policy.models.SNAPSHOT_TTL_SECONDS``); a running loop wants them *now*. With
``qubelet run --prometheus URL`` the executor passes every re-plan's backend states through
:meth:`LiveSignals.apply`, which reads (at most once per ``ttl`` seconds; a dead endpoint costs
one warning and changes nothing):

* ``qubelet_pipeline_backend_up`` — a backend reported down is offered as unhealthy;
* Kueue's ``kueue_local_queue_pending_workloads`` for LocalQueue ``qubelet-<kind>`` — workloads
  not admitted yet in front of that class, added to ``external_queue_depth`` (other tenants'
  queue: the local executor's own jobs are not Kueue workloads);
* the device plugin's Unhealthy device count — with QPU devices unhealthy and no QPU reported
  up, QPUs are offered as unhealthy.

These are the same :class:`~policy.interface.BackendState` fields the simulator fills (its
scraped queue depth and health), so the policy sees one kind of signal in both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from policy.interface import BackendState
from policy.telemetry_sources import PrometheusSource


class LiveSignals:
    """Backend health and other tenants' queues from a Prometheus server, cached for ``ttl`` s."""

    def __init__(
        self, source: PrometheusSource, ttl: float = 15.0, clock: Callable[[], float] = time.monotonic
    ):
        self.source = source
        self.ttl = ttl
        self.clock = clock
        self._read_at: float | None = None
        self._up: dict[str, bool | None] = {}
        self._pending: dict[str, float] = {}
        self._unhealthy_devices: int | None = None

    def _refresh(self) -> None:
        now = self.clock()
        if self._read_at is not None and now - self._read_at < self.ttl:
            return
        self._read_at = now
        snapshots = self.source.snapshots()
        self._up = {name: snap.up for name, snap in snapshots.items()}
        self._pending = self.source.kueue_pending()
        self._unhealthy_devices = self.source.unhealthy_devices()

    def apply(self, states: Sequence[BackendState]) -> list[BackendState]:
        """``states`` with what the cluster says now about their health and queues."""
        self._refresh()
        qpu_reported_up = any(up for name, up in self._up.items() if name.startswith("qpu"))
        out = []
        for state in states:
            healthy = state.healthy and self._up.get(state.name) is not False
            if state.kind == "qpu" and (self._unhealthy_devices or 0) > 0 and not qpu_reported_up:
                healthy = healthy and self._up.get(state.name) is True
            pending = int(self._pending.get(state.kind, 0.0))
            out.append(
                replace(state, healthy=healthy, external_queue_depth=max(state.external_queue_depth, pending))
            )
        return out
