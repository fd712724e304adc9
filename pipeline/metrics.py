"""Prometheus metrics of the pipeline (``qubelet_pipeline_*``), created once per process.

The Grafana dashboard and the telemetry policy read these names; keep them stable.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from qubelet.daemon import MetricsServer, serve_metrics

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

TASKS = Counter(
    "qubelet_pipeline_tasks_total",
    "Subexperiment tasks by backend and final state (succeeded, failed, retried, skipped).",
    ["backend", "state"],
)
TASK_DURATION = Histogram(
    "qubelet_pipeline_task_duration_seconds",
    "Run time of one subexperiment (its share of the batch job).",
    ["backend", "kind"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_DURATION = Histogram(
    "qubelet_pipeline_batch_duration_seconds",
    "Wall time of one batch job on a backend.",
    ["backend", "kind"],
    buckets=_LATENCY_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "qubelet_pipeline_queue_wait_seconds",
    "Time a batch waited for a worker of its backend.",
    ["backend"],
    buckets=_LATENCY_BUCKETS,
)
QUEUE_DEPTH = Gauge("qubelet_pipeline_queue_depth", "Batches waiting or running per backend.", ["backend"])
BACKEND_UP = Gauge(
    "qubelet_pipeline_backend_up", "1 while a backend is healthy, 0 once it is marked failed.", ["backend"]
)
SUBEXPERIMENTS_COMPLETED = Counter(
    "qubelet_pipeline_subexperiments_completed_total",
    "Distinct subexperiments with a stored result (rate() of this is the throughput).",
)
RUNS = Counter("qubelet_pipeline_runs_total", "Pipeline runs by outcome.", ["outcome"])
RUN_DURATION = Gauge("qubelet_pipeline_last_run_duration_seconds", "Wall time of the last run.")


def record_batch(backend: str, kind: str, seconds: float, executed: int, skipped: int) -> None:
    """Count one finished batch: its wall time, each task's share of it, and task states.

    Shared by the local executor and ``qubelet task execute`` so both export the same series.
    """
    BACKEND_UP.labels(backend).set(1)
    BATCH_DURATION.labels(backend, kind).observe(seconds)
    if executed:
        for _ in range(executed):
            TASK_DURATION.labels(backend, kind).observe(seconds / executed)
        TASKS.labels(backend, "succeeded").inc(executed)
        SUBEXPERIMENTS_COMPLETED.inc(executed)
    if skipped:
        TASKS.labels(backend, "skipped").inc(skipped)


def serve(port: int) -> MetricsServer | None:
    """Expose the process registry on ``:port/metrics`` (a daemon thread); 0 = off."""
    return serve_metrics(port)
