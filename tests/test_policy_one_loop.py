"""The policy that runs is the policy that is measured: one scheduling loop, the same signals.

The pipeline's executor and the simulator both drive :class:`policy.loop.SchedulingLoop`; what
the policy is shown (``BackendState``) and learns from (``TelemetryRow``) has the same type and
no field the simulator fills that the pipeline cannot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import RunConfig
from pipeline.executor import LocalExecutor
from pipeline.mitigation.observed import MAX_PROBE_QUBITS
from policy import loop as loop_module
from policy.baselines import GreedyPolicy
from policy.interface import OBSERVED_ERROR_MAX_WIDTH, PROBES, BackendState, CircuitFeatures, Decision
from policy.scenarios import SCENARIOS
from policy.simulator import simulate
from policy.size_rule import SizePolicy
from policy.telemetry import TelemetryPolicy


class _SpyLoop(loop_module.SchedulingLoop):
    instances: list[_SpyLoop] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _SpyLoop.instances.append(self)


class _Recording:
    """Wraps a policy, keeping every state it was shown."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.error_budget = getattr(inner, "error_budget", None)
        self.states: list[BackendState] = []
        self.rows: list[dict[str, Any]] = []

    def select(self, tasks: Sequence[CircuitFeatures], backends: Sequence[BackendState]) -> list[Decision]:
        self.states.extend(backends)
        return list(self.inner.select(tasks, backends))

    def observe(self, rows: Sequence[dict[str, Any]], *, refit: bool = True) -> None:
        self.rows.extend(dict(r) for r in rows)


@pytest.fixture
def spy_loop(monkeypatch: pytest.MonkeyPatch) -> type[_SpyLoop]:
    _SpyLoop.instances = []
    monkeypatch.setattr("pipeline.executor.SchedulingLoop", _SpyLoop)
    monkeypatch.setattr("policy.simulator.SchedulingLoop", _SpyLoop)
    return _SpyLoop


def _pipeline_run(tmp_path: Path, policy: Any, monkeypatch: pytest.MonkeyPatch) -> LocalExecutor:
    config = RunConfig(
        qubits=6, cuts=2, shots=300, backends=("cpu", "qpu"), run_dir=tmp_path, policy="greedy"
    )
    monkeypatch.setattr("pipeline.executor.policy_for", lambda _config: policy)
    executor = LocalExecutor(config)
    executor.run()
    return executor


def test_simulator_and_pipeline_drive_the_same_loop(
    tmp_path: Path, spy_loop: type[_SpyLoop], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim_policy = _Recording(SizePolicy())
    simulate(SCENARIOS["paper"].scaled(60), sim_policy, seed=0)
    run_policy = _Recording(SizePolicy())
    executor = _pipeline_run(tmp_path, run_policy, monkeypatch)
    sim_loop, run_loop = spy_loop.instances
    assert executor.loop is run_loop
    # both re-planned through the loop and handed out more than one batch per backend
    assert sim_loop.replans >= 1 and run_loop.replans >= 1
    assert sim_loop.done and run_loop.done
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["loop"]["replans"] == run_loop.replans
    assert len(plan["batches"]) == run_loop._seq  # every dispatched batch is in plan.json


def test_observation_types_and_fields_are_the_same(
    tmp_path: Path, spy_loop: type[_SpyLoop], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim_policy = _Recording(GreedyPolicy(record_metrics=False))
    simulate(SCENARIOS["qpu_only_wide"].scaled(60), sim_policy, seed=0)
    run_policy = _Recording(GreedyPolicy(record_metrics=False))
    _pipeline_run(tmp_path, run_policy, monkeypatch)
    assert {type(s) for s in sim_policy.states} == {type(s) for s in run_policy.states} == {BackendState}
    # a field the simulator sets away from its default must be one the pipeline can set too
    defaults = BackendState(name="x", kind="cpu")
    names = [f.name for f in fields(BackendState)]
    sim_set = {n for s in sim_policy.states for n in names if getattr(s, n) != getattr(defaults, n)}
    run_set = {n for s in run_policy.states for n in names if getattr(s, n) != getattr(defaults, n)}
    # workers: inventory (this machine has fewer cores); queue_depth and healthy: filled by the
    # loop for both (in-flight work, consecutive failures), whether a short run needed them or
    # not; external_queue_depth: another tenant's queue, a metric a cluster has and a laptop not
    assert sim_set - run_set <= {"workers", "queue_depth", "healthy", "external_queue_depth"}, (
        sim_set - run_set
    )
    assert {type(r) for r in sim_policy.rows} == {type(r) for r in run_policy.rows} == {dict}
    sim_keys = {k for r in sim_policy.rows if r["success"] for k in r}
    run_keys = {k for r in run_policy.rows if r["success"] for k in r}
    # a measured error and the probe that measured it come together, in both (this short
    # pipeline run may give the QPU no batch; tests/test_mirror_probe.py runs both probes)
    assert sim_keys <= run_keys | {"observed_error", "probe"}, sim_keys - run_keys
    for rows in (sim_policy.rows, run_policy.rows):
        for r in rows:
            assert (r.get("observed_error") is not None) == ("probe" in r)
    sim_probes = {r["probe"] for r in sim_policy.rows if "probe" in r}
    assert sim_probes == {"mirror"}  # 24- and 34-qubit subexperiments
    assert {r["probe"] for r in run_policy.rows if "probe" in r} <= set(PROBES)


def test_errors_measured_only_where_the_pipeline_measures_once_per_batch() -> None:
    assert OBSERVED_ERROR_MAX_WIDTH == MAX_PROBE_QUBITS
    result = simulate(SCENARIOS["qpu_only_wide"].scaled(120), TelemetryPolicy(record_metrics=False), seed=1)
    narrow = simulate(SCENARIOS["drift"].scaled(300), TelemetryPolicy(record_metrics=False), seed=1)
    # 24- and 34-qubit subexperiments are wider than the exact probe: the mirror measures them,
    # once per batch, on the mirrored (most two-qubit gates) subexperiment's row, as the pipeline
    for run, probe in ((result, "mirror"), (narrow, "exact")):
        batches: dict[str, list[dict[str, Any]]] = {}
        for row in run.rows:
            if row["backend_kind"] == "qpu" and row["success"]:
                batches.setdefault(str(row["task_id"]).split("/")[0], []).append(dict(row))
        assert batches
        for rows in batches.values():
            observed = [r for r in rows if r.get("observed_error") is not None]
            assert len(observed) == 1 and observed[0]["probe"] == probe
            if probe == "mirror":
                assert observed[0]["num_2q_gates"] == max(r["num_2q_gates"] for r in rows)


def test_simulated_queue_depth_does_not_encode_the_wait() -> None:
    scenario = SCENARIOS["queue_comes_and_goes"].scaled(200)
    shown = _Recording(GreedyPolicy(record_metrics=False))
    simulate(scenario, shown, seed=0)
    qpu = next(b for b in scenario.backends if b.kind == "qpu")
    ratios = []
    for row in shown.rows:
        depth = row.get("external_queue_depth") or 0
        if depth:
            t = float(row["ts"])
            ratios.append((qpu.busy_until(t) - t) / depth)
    states = [s for s in shown.states if s.kind == "qpu" and s.external_queue_depth > 0]
    assert states, "the scenario's busy windows were never seen"
    assert len({s.external_queue_depth for s in states}) > 1
    if ratios:
        assert np.std(ratios) > 0
