"""Push a cluster step's metrics to a Prometheus Pushgateway, the convention for batch jobs.

A step pod lives for seconds; hoping a scrape lands before it exits loses the final values. So
``qubelet task generate|execute|reconstruct --pushgateway URL`` pushes its metrics as one group
per step, keyed ``{job="qubelet-pipeline", run=<plan run id>, task=<batch id | generate |
reconstruct>}``. Prometheus scrapes the Pushgateway with ``honor_labels: true`` and keeps
``run``/``task``; ``push_time_seconds{run, task}`` says when each group last changed.

How the groups make ``rate()``, ``increase()`` and the queue depth work (``docs/metrics.md``):

- ``generate`` pushes a *waiting* group for every planned batch (and for ``reconstruct``): every
  series of that batch at zero, ``qubelet_pipeline_queue_depth{backend}`` = 1. The execute step of
  that batch later replaces the group with its own values, so Prometheus sees each counter go
  from 0 to its final value (a counter that first appears at its final value shows no increase).
- ``execute`` pushes again when it starts (depth 1, zeros) and when it ends (depth 0, final
  counts), so ``sum by (backend) (qubelet_pipeline_queue_depth)`` over the groups is the number
  of batches waiting or running per backend: the same meaning as the local executor's gauge.
- A retried step pushes to the same group; Prometheus reads its return to zero as a counter reset.

Pushing is best effort: a dead or refusing gateway is logged as one line and the step falls back
to serving its metrics for a last scrape (``--metrics-linger``).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from pipeline import metrics
from qubelet import klog

__all__ = ["ENV_VAR", "JOB", "Pusher", "check_url"]

log = klog.get_logger("qubelet.pipeline.push")

#: The ``job`` label of every pushed group.
JOB = "qubelet-pipeline"
#: Environment twin of ``--pushgateway`` (rendered step pods set it).
ENV_VAR = "QUBELET_PUSHGATEWAY"
#: Group name of the generate and reconstruct steps (execute steps use their batch id).
GENERATE_TASK = "generate"
RECONSTRUCT_TASK = "reconstruct"


def check_url(url: str) -> str:
    """Return ``url`` without a trailing slash, or raise ``ValueError`` saying what is wrong.

    Args:
        url: the Pushgateway's base URL, ``http(s)://host:port``.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"--pushgateway {url!r}: expected http(s)://HOST:PORT")
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise ValueError(f"--pushgateway {url!r}: give the base URL only (no path or query)")
    try:
        parsed.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"--pushgateway {url!r}: bad port") from None
    return url.rstrip("/")


class _Selected(Collector):
    """Collects only the given metrics (the default registry also holds process and GC metrics)."""

    def __init__(self, selected: Iterable[MetricWrapperBase]) -> None:
        self._selected = list(selected)

    def collect(self) -> Iterator[Any]:
        """Yield the selected metrics' families (the registry's collection hook)."""
        for metric in self._selected:
            yield from metric.collect()


def _process_metrics() -> list[MetricWrapperBase]:
    """What a step pushes about itself: the pipeline's metrics and the policy's."""
    from policy import metrics as policy_metrics

    return [*_all(metrics.DEFAULT), *policy_metrics.ALL]


class Pusher:
    """Pushes groups to one Pushgateway and remembers whether every push got through.

    Args:
        url: the Pushgateway base URL; ``None`` or empty disables pushing.
        timeout: seconds per HTTP request.
    """

    def __init__(self, url: str | None, timeout: float = 5.0) -> None:
        self.url = check_url(url) if url else None
        self.timeout = timeout
        self.pushed = 0
        self.failed = 0

    @classmethod
    def from_env(cls, url: str | None) -> Pusher:
        """A pusher for ``url``, else for ``$QUBELET_PUSHGATEWAY``, else a disabled one."""
        return cls(url if url is not None else os.environ.get(ENV_VAR, ""))

    @property
    def enabled(self) -> bool:
        """Whether a gateway was configured."""
        return self.url is not None

    @property
    def delivered(self) -> bool:
        """At least one push and no failed one: the final values are safe without a scrape."""
        return self.pushed > 0 and self.failed == 0

    def push(self, run_id: str, task: str, selected: Iterable[MetricWrapperBase]) -> bool:
        """Replace the group ``{job, run, task}`` with ``selected`` (HTTP PUT); ``False`` on failure.

        Args:
            run_id: the plan's run id.
            task: the group's task name (batch id, ``generate`` or ``reconstruct``).
            selected: the metrics to push.
        """
        if self.url is None:
            return False
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Selected(selected))
        try:
            push_to_gateway(
                self.url,
                job=JOB,
                grouping_key={"run": run_id, "task": task},
                registry=registry,
                timeout=self.timeout,
            )
        except OSError as exc:
            self.failed += 1
            log.warning("metrics push failed", gateway=self.url, run=run_id, task=task, err=str(exc))
            return False
        self.pushed += 1
        return True

    def push_process(self, run_id: str, task: str) -> bool:
        """Push this process's pipeline and policy metrics as the group of ``task``."""
        return self.push(run_id, task, _process_metrics())

    def push_waiting(self, run_id: str, batches: Sequence[Any]) -> int:
        """Push a zeroed, depth-1 group for every planned batch and a zeroed reconstruct group.

        This is what makes the queue depth and ``increase()`` work from pushed series (see the
        module docstring). Returns the number of groups pushed.
        """
        done = 0
        for batch in batches:
            waiting = metrics.PipelineMetrics(CollectorRegistry(auto_describe=False))
            waiting.init_backend(batch.backend, batch.kind)
            waiting.queue_depth.labels(batch.backend).set(1)
            done += self.push(run_id, batch.id, _all(waiting))
        final = metrics.PipelineMetrics(CollectorRegistry(auto_describe=False))
        final.init_run()
        done += self.push(run_id, RECONSTRUCT_TASK, _all(final))
        return done


def _all(pm: metrics.PipelineMetrics) -> list[MetricWrapperBase]:
    return [value for value in vars(pm).values() if isinstance(value, MetricWrapperBase)]
