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
* the DRA driver's per-QPU health probe ``qubelet_dra_qpu_healthy{qpu}`` (from targets
  Prometheus scrapes now, the admission check's expression) — a QPU whose probe fails is
  offered as unhealthy (``qpu="apollo"`` is the backend ``qpu:apollo``);
* the device plugin's Unhealthy device count (it has no per-QPU health series) — with QPU
  devices unhealthy and no QPU reported up, QPUs are offered as unhealthy.

The Kueue admission check exports no per-QPU state of its own (its metrics count verdicts and
queued Workloads per class; it *reads* the two health series above), so there is nothing more of
it to read. Each verdict carries its reason (``BackendState.unhealthy_reason``), which plan.json
shows as ``lost_because: "unhealthy: <reason>"``.

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
        self._qpu_healthy: dict[str, bool] = {}

    def _refresh(self) -> None:
        now = self.clock()
        if self._read_at is not None and now - self._read_at < self.ttl:
            return
        self._read_at = now
        snapshots = self.source.snapshots()
        self._up = {name: snap.up for name, snap in snapshots.items()}
        self._pending = self.source.kueue_pending()
        self._unhealthy_devices = self.source.unhealthy_devices()
        self._qpu_healthy = {f"qpu:{name}": up for name, up in self.source.qpu_healthy().items()}

    def apply(self, states: Sequence[BackendState]) -> list[BackendState]:
        """``states`` with what the cluster says now about their health and queues."""
        self._refresh()
        qpu_reported_up = any(up for name, up in self._up.items() if name.startswith("qpu")) or any(
            self._qpu_healthy.values()
        )
        out = []
        for state in states:
            pending = int(self._pending.get(state.kind, 0.0))
            state = replace(state, external_queue_depth=max(state.external_queue_depth, pending))
            if self._up.get(state.name) is False:
                state = state.marked_unhealthy(
                    f'Prometheus: qubelet_pipeline_backend_up{{backend="{state.name}"}} is 0'
                )
            if self._qpu_healthy.get(state.name) is False:
                qpu = state.name.removeprefix("qpu:")
                state = state.marked_unhealthy(
                    f'Prometheus: qubelet_dra_qpu_healthy{{qpu="{qpu}"}} is 0 (its DRA health probe fails)'
                )
            devices = self._unhealthy_devices or 0
            if (
                state.kind == "qpu"
                and devices > 0
                and not qpu_reported_up
                and self._up.get(state.name) is not True
            ):
                state = state.marked_unhealthy(
                    f"Prometheus: {devices} device-plugin devices Unhealthy and no QPU reported up"
                )
            out.append(state)
        return out
