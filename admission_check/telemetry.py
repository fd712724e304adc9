"""Live QPU telemetry from Prometheus: up/health, queue depth, recent latency, 2q fidelity.

Every PromQL expression the controller sends is in :data:`PROMQL`. The pipeline labels series by
``backend="qpu:<name>"``, the DRA driver by ``qpu="<name>"``; both are keyed here by the QPU's
inventory name. One failed query makes the whole snapshot unavailable (``TelemetryError``): the
controller must not admit work on half a picture.

Liveness comes from Prometheus' own view first: ``device_healthy`` is the node daemons' health,
scraped by Prometheus and kept only from targets whose ``up`` is 1 now. Pushed gauges
(``backend_up``, from the Pushgateway, which has no authentication) decide only for a QPU that
no scraped series covers: a pod that pushes ``backend_up=0`` cannot hold the work of a QPU the
node daemons see healthy (manifests/monitoring/networkpolicy.yaml limits who may push at all).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qubelet.errors import QubeletError
from qubelet.prometheus import PrometheusError, get_result, instant_values

PROMQL: dict[str, str] = {
    # Pushed groups of cluster steps stay in the Pushgateway until deleted: skip those not pushed
    # for an hour (backend_up) or a day (queue depth), as the alerts and the policy do
    # (docs/metrics.md).
    "backend_up": (
        'min by (backend) (qubelet_pipeline_backend_up{backend=~"qpu:.*"}'
        " unless on (run, task) (push_time_seconds < time() - 3600))"
    ),
    "device_healthy": "min by (qpu) (qubelet_dra_qpu_healthy and on (job, instance) (up == 1))",
    "queue_depth": (
        'sum by (backend) (qubelet_pipeline_queue_depth{backend=~"qpu:.*"}'
        " unless on (run, task) (push_time_seconds < time() - 86400))"
    ),
    "latency_seconds": (
        'sum by (backend) (rate(qubelet_pipeline_task_duration_seconds_sum{backend=~"qpu:.*"}[15m]))'
        ' / sum by (backend) (rate(qubelet_pipeline_task_duration_seconds_count{backend=~"qpu:.*"}[15m]))'
    ),
    "fidelity_2q": "max by (qpu) (qubelet_dra_qpu_fidelity_2q)",
}


class TelemetryError(QubeletError, RuntimeError):
    """Prometheus could not be read (one line saying which query and why)."""


@dataclass
class QPUTelemetry:
    """What Prometheus says about one QPU now; ``None`` means no series."""

    name: str
    up: bool | None = None
    queue_depth: float = 0.0
    latency_seconds: float | None = None
    fidelity_2q: float | None = None

    def expected_wait_seconds(self) -> float:
        """Queue depth × recent per-task latency (0 without a latency)."""
        return self.queue_depth * (self.latency_seconds or 0.0)


def _qpu_name(labels: Mapping[str, Any]) -> str:
    if "qpu" in labels:
        return str(labels["qpu"])
    return str(labels.get("backend", "")).removeprefix("qpu:")


class PrometheusTelemetry:
    """Reads :data:`PROMQL` from a Prometheus HTTP API (``/api/v1/query``)."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _query(self, name: str) -> dict[str, float]:
        try:
            result = get_result(self.url, "/api/v1/query", {"query": PROMQL[name]}, self.timeout)
        except PrometheusError as exc:
            raise TelemetryError(f"prometheus query {name}: {exc.cause}") from exc
        return instant_values(result, _qpu_name)

    def snapshot(self) -> dict[str, QPUTelemetry]:
        """Every QPU any query mentions, with what each query said about it."""
        values = {name: self._query(name) for name in PROMQL}
        names = set().union(*(v.keys() for v in values.values())) - {""}
        out = {}
        for qpu in sorted(names):
            if qpu in values["device_healthy"]:  # scraped by Prometheus from a live target
                up: bool | None = values["device_healthy"][qpu] >= 1.0
            elif qpu in values["backend_up"]:  # pushed only: nothing better to go on
                up = values["backend_up"][qpu] >= 1.0
            else:
                up = None
            out[qpu] = QPUTelemetry(
                name=qpu,
                up=up,
                queue_depth=values["queue_depth"].get(qpu, 0.0),
                latency_seconds=values["latency_seconds"].get(qpu),
                fidelity_2q=values["fidelity_2q"].get(qpu),
            )
        return out
