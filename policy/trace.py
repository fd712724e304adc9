"""``qubelet policy eval --trace RUN_DIR``: a recorded run replayed as a simulated scenario.

The workload is the run's own subexperiments (``manifest.json``'s features, one partition per
distinct shape); each backend the run used becomes a simulated backend whose *true* cost is the
class prior scaled by the median ratio observed/prior of its telemetry rows, with the observed
spread as noise, its failed share of batches as failure probability, a QPU's shortest queue wait
as its cloud queue and the calibration its rows recorded. The policies are then compared on that
cluster like on any scenario. Rows are read with the same tolerance as ``policy fit`` (torn and
NUL lines skipped); a run without usable rows is a one-line error.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from policy.features import task_from_row
from policy.interface import CircuitFeatures, TelemetryRow
from policy.models import PRIOR_COSTS, CostCoefficients, prior_seconds, unit_run_seconds
from policy.scenarios import BackendSpec, PartitionSpec, Scenario
from policy.telemetry_sources import LocalHistory
from qubelet.errors import ConfigError


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


def scenario_from_trace(run_dir: Path) -> Scenario:
    """The scenario a recorded run describes (see the module docstring)."""
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
    config = manifest.get("config", {})
    return Scenario(
        name=f"trace:{run_dir.name}",
        description=f"replay of run {manifest.get('run_id')} ({len(rows)} telemetry rows)",
        partitions=partitions,
        backends=backends,
        wave_size=int(config.get("batch_size", 64) or 64),
        error_budget=float(config.get("error_budget") or 0.35),
    )
