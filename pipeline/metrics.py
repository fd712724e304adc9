"""Prometheus metrics of the pipeline (``qubelet_pipeline_*``), created once per process.

The Grafana dashboard, the alerts and the telemetry policy read these names; keep them stable
(``docs/metrics.md`` lists them, generated from this module by ``python -m qubelet.metrics_doc``).

Two ways out of a process:

- scraped: ``qubelet run --metrics-port`` and the cluster steps serve the default registry;
- pushed: a cluster step is a short-lived pod, so ``qubelet task … --pushgateway URL`` pushes its
  final values to a Pushgateway, the Prometheus convention for batch jobs (see :mod:`pipeline.push`).

Every metric is created in a :class:`PipelineMetrics` so that a push can build the same series in
a private registry (the "waiting" groups the generate step pushes for each batch).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from qubelet import exposition
from qubelet.daemon import MetricsServer, serve_metrics

exposition.configure()

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
#: Queue waits run to hours on a busy QPU; buckets past 30 min let the p95 cross the
#: ``QubeletQueueWaitHigh`` threshold (1800 s). With 1800 as the last finite bucket,
#: histogram_quantile() can never return more than 1800 and the alert could never fire.
QUEUE_WAIT_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600)

#: Final states a task is counted in (``qubelet_pipeline_tasks_total{state}``).
TASK_STATES = ("succeeded", "failed", "retried", "skipped")
#: Outcomes of a whole run (``qubelet_pipeline_runs_total{outcome}``).
RUN_OUTCOMES = ("succeeded", "failed")


class PipelineMetrics:
    """Every pipeline metric, registered in one registry.

    Args:
        registry: where the metrics live; the module-level instance uses the default registry.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create every pipeline metric in ``registry``."""
        self.registry = registry
        self.tasks = Counter(
            "qubelet_pipeline_tasks_total",
            "Subexperiment tasks by backend and final state (succeeded, failed, retried, skipped).",
            ["backend", "state"],
            registry=registry,
        )
        self.task_duration = Histogram(
            "qubelet_pipeline_task_duration_seconds",
            "Run time of one subexperiment (its share of the batch job).",
            ["backend", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_duration = Histogram(
            "qubelet_pipeline_batch_duration_seconds",
            "Wall time of one batch job on a backend.",
            ["backend", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "qubelet_pipeline_queue_wait_seconds",
            "Time a batch waited for a worker of its backend (on a cluster: plan written to pod start).",
            ["backend"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "qubelet_pipeline_queue_depth",
            "Batches waiting or running per backend (pushed: 1 per batch group until it finishes).",
            ["backend"],
            registry=registry,
        )
        self.backend_up = Gauge(
            "qubelet_pipeline_backend_up",
            "1 while a backend is healthy, 0 once it is marked failed.",
            ["backend"],
            registry=registry,
        )
        self.subexperiments_completed = Counter(
            "qubelet_pipeline_subexperiments_completed_total",
            "Distinct subexperiments with a stored result (rate() of this is the throughput).",
            registry=registry,
        )
        self.runs = Counter(
            "qubelet_pipeline_runs_total", "Pipeline runs by outcome.", ["outcome"], registry=registry
        )
        self.run_duration = Gauge(
            "qubelet_pipeline_last_run_duration_seconds", "Wall time of the last run.", registry=registry
        )

    def init_backend(self, backend: str, kind: str) -> None:
        """Create every series of ``backend`` at zero.

        Why: ``rate()`` and ``increase()`` need a sample before the first event. A series that
        first appears already at its final value (a short process, a pushed group) would
        otherwise count as no increase at all.
        """
        for state in TASK_STATES:
            self.tasks.labels(backend, state)
        self.task_duration.labels(backend, kind)
        self.batch_duration.labels(backend, kind)
        self.queue_wait.labels(backend)
        self.queue_depth.labels(backend)

    def init_run(self) -> None:
        """Create the run-outcome series at zero (same reason as :meth:`init_backend`)."""
        for outcome in RUN_OUTCOMES:
            self.runs.labels(outcome)


#: The process's pipeline metrics, in the default registry (what ``--metrics-port`` serves).
DEFAULT = PipelineMetrics(REGISTRY)
TASKS = DEFAULT.tasks
TASK_DURATION = DEFAULT.task_duration
BATCH_DURATION = DEFAULT.batch_duration
QUEUE_WAIT = DEFAULT.queue_wait
QUEUE_DEPTH = DEFAULT.queue_depth
BACKEND_UP = DEFAULT.backend_up
SUBEXPERIMENTS_COMPLETED = DEFAULT.subexperiments_completed
RUNS = DEFAULT.runs
RUN_DURATION = DEFAULT.run_duration


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
