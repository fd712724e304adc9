"""``qubelet policy eval --trace RUN_DIR``: a recorded run replayed as a simulated scenario.

The workload is the run's own subexperiments (``manifest.json``'s features, one partition per
distinct shape); each backend the run used becomes a simulated backend whose *true* cost is the
class prior scaled by the median ratio observed/prior of its telemetry rows, with the observed
spread as noise, its failed share of batches as failure probability, a QPU's shortest queue wait
as its cloud queue and the calibration its rows recorded. The policies are then compared on that
cluster like on any scenario. Rows are read with the same tolerance as ``policy fit`` (torn and
NUL lines skipped); a run without usable rows is a one-line error.

With a Prometheus server (``--prometheus URL``) the cluster's conditions during the run are
replayed too, from a range query over the run's span (its first row's time to its last row's
plus :data:`REPLAY_TAIL_SECONDS`, at :data:`REPLAY_STEP_SECONDS`): every step a backend's
``qubelet_pipeline_backend_up`` was 0 becomes one of its ``down_windows`` (offered as unhealthy,
serving nothing), and every step Kueue had workloads pending in LocalQueue ``qubelet-<kind>``
becomes a ``busy_windows`` span of that kind's backends (other tenants ahead), both on the
replay's clock (0 = the run's first row). The same queries ``qubelet run --prometheus`` reads
live (``policy.telemetry_sources.PROMQL``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from policy.features import task_from_row
from policy.interface import CircuitFeatures, TelemetryRow
from policy.models import PRIOR_COSTS, CostCoefficients, prior_seconds, unit_run_seconds
from policy.scenarios import BackendSpec, PartitionSpec, Scenario
from policy.telemetry_sources import PROMQL, LocalHistory, PrometheusSource
from qubelet.errors import ConfigError

#: seconds after the run's last row that a Prometheus replay still covers (slower policies' tail)
REPLAY_TAIL_SECONDS = 600.0
#: resolution of a Prometheus replay (the default scrape interval of the stack's ServiceMonitors)
REPLAY_STEP_SECONDS = 15.0

Windows = tuple[tuple[float, float], ...]


def windows_where(
    samples: list[tuple[float, float]], holds: Callable[[float], bool], origin: float, step: float
) -> Windows:
    """Spans ``[t, t + step)`` of the samples where ``holds(value)``, merged, relative to ``origin``.

    A sample stands for the step that starts at it (a range query's value at ``t`` is the last
    scrape at or before ``t``), so adjacent matching samples make one span.
    """
    spans: list[list[float]] = []
    for ts, value in sorted(samples):
        if not holds(value):
            continue
        begin = max(ts - origin, 0.0)
        end = ts - origin + step
        if end <= 0:
            continue
        if spans and begin <= spans[-1][1] + 1e-9:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([begin, end])
    return tuple((a, b) for a, b in spans)


def cluster_windows(
    source: PrometheusSource,
    kinds: dict[str, str],
    start: float,
    end: float,
    step: float = REPLAY_STEP_SECONDS,
) -> tuple[dict[str, Windows], dict[str, Windows]]:
    """Per backend name (``kinds``: name → kind), its down spans and its others-ahead spans.

    Read from ``source`` over ``[start, end]``; times relative to ``start``. A backend Prometheus
    has no series for is neither down nor busy.
    """
    start = round(start, 3)  # the query's resolution: evaluation times are then start + k·step
    up = source.series(PROMQL["backend_up"], start, end, step)
    pending = source.series(PROMQL["kueue_pending"], start, end, step, label="name")
    down = {name: windows_where(up[name], lambda v: v < 1.0, start, step) for name in kinds if name in up}
    busy_by_kind = {
        queue.removeprefix("qubelet-"): windows_where(samples, lambda v: v > 0.0, start, step)
        for queue, samples in pending.items()
    }
    busy = {name: busy_by_kind[kind] for name, kind in kinds.items() if kind in busy_by_kind}
    return down, busy


def _scaled(cost: CostCoefficients, factor: float) -> CostCoefficients:
    return CostCoefficients(
        base=cost.base * factor,
        per_shot=cost.per_shot * factor,
        per_amp_layer=cost.per_amp_layer * factor,
        per_shot_layer=cost.per_shot_layer * factor,
    )


def _backend(name: str, rows: list[TelemetryRow], cpu_workers: int) -> BackendSpec:
    kind = rows[0]["backend_kind"]
    ok = [r for r in rows if r.get("success", True) is not False]
    ratios = np.array([1.0])
    if ok:
        prior = prior_seconds([task_from_row(r) for r in ok], kind)
        ratios = np.array([unit_run_seconds(r) for r in ok]) / prior
    logs = np.log(np.maximum(ratios, 1e-12))
    batches = Counter(str(r.get("task_id", "")).split("/")[0] for r in rows)
    failed = {str(r.get("task_id", "")).split("/")[0] for r in rows if r.get("success") is False}
    waits = [float(r.get("queue_wait_seconds") or 0.0) for r in ok]
    last = ok[-1] if ok else rows[-1]
    return BackendSpec(
        name=name,
        kind=kind,
        cost=_scaled(PRIOR_COSTS[kind], float(np.exp(np.median(logs)))),
        workers=cpu_workers if kind == "cpu" else 1,
        model=str(last.get("model", "")),
        noise_sigma=float(min(np.std(logs), 2.0)) if len(logs) > 1 else 0.2,
        failure_prob=len(failed) / max(len(batches), 1),
        queue_wait_seconds=min(waits) if kind == "qpu" and waits else 0.0,
        fidelity_2q=last.get("fidelity_2q"),
        readout_fidelity=last.get("readout_fidelity"),
    )


def scenario_from_trace(run_dir: Path, prometheus: PrometheusSource | None = None) -> Scenario:
    """The scenario a recorded run describes, with ``prometheus``'s range (see the module docstring).

    A Prometheus that cannot be read is one warning (the source logs it) and no windows.
    """
    manifest_path = run_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        features = [CircuitFeatures(**f) for f in manifest["features"].values()]
        cpu_workers = int(manifest.get("config", {}).get("cpu_workers", 1) or 1)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{manifest_path}: not a run's manifest ({exc})") from None
    history = LocalHistory([run_dir / "telemetry.jsonl"])
    rows = history.rows()
    if not rows:
        raise ConfigError(f"{run_dir / 'telemetry.jsonl'}: no usable telemetry rows to replay")
    shapes = Counter((f.num_qubits, f.depth, f.num_2q_gates, f.num_clbits, f.shots) for f in features)
    partitions = tuple(
        PartitionSpec(f"s{i}", count, num_qubits=n, depth=d, num_2q_gates=g, num_clbits=c, shots=s, jitter=0)
        for i, ((n, d, g, c, s), count) in enumerate(sorted(shapes.items()))
    )
    by_backend: dict[str, list[TelemetryRow]] = {}
    for row in sorted(rows, key=lambda r: float(r.get("ts", 0.0) or 0.0)):
        by_backend.setdefault(row["backend"], []).append(row)
    backends = tuple(_backend(name, group, cpu_workers) for name, group in sorted(by_backend.items()))
    description = f"replay of run {manifest.get('run_id')} ({len(rows)} telemetry rows)"
    if prometheus is not None:
        times = [float(r.get("ts", 0.0) or 0.0) for r in rows]
        start, end = min(times), max(times) + REPLAY_TAIL_SECONDS
        down, busy = cluster_windows(prometheus, {b.name: b.kind for b in backends}, start, end)
        backends = tuple(
            replace(
                b,
                down_windows=down.get(b.name, ()),
                busy_windows=tuple(sorted((*b.busy_windows, *busy.get(b.name, ())))),
            )
            for b in backends
        )
        description += f"; cluster from {prometheus.url} over {end - start:.0f} s"
    config = manifest.get("config", {})
    return Scenario(
        name=f"trace:{run_dir.name}",
        description=description,
        partitions=partitions,
        backends=backends,
        wave_size=int(config.get("batch_size", 64) or 64),
        error_budget=float(config.get("error_budget") or 0.35),
    )
