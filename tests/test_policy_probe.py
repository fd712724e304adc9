"""The mirror probe in the policy: one conversion for pipeline and simulator, drift it reveals.

``policy.probe.mirror_error`` turns a mirror circuit's ``0…0`` fraction into an error estimate;
the simulator runs (and pays for) a mirror per wide QPU batch; the model learns drift from the
probes, per calibration epoch and pooled over epochs; the telemetry policy stops giving a
drifting QPU work at each task's predicted budget crossing.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from policy.evaluate import evaluate
from policy.interface import BackendState, CircuitFeatures, TelemetryRow
from policy.models import PolicyModel, analytic_error
from policy.probe import mirror_error, mirror_features, mirrored_index
from policy.scenarios import SCENARIOS
from policy.simulator import make_tasks, simulate, true_seconds
from policy.size_rule import SizePolicy
from policy.telemetry import TelemetryPolicy
from policy.telemetry_sources import validate_row

TASK = CircuitFeatures(key="k", num_qubits=26, depth=30, num_2q_gates=40, num_clbits=27, shots=4096)


@pytest.mark.parametrize("level", ["none", "readout", "zne"])
def test_a_mirror_that_reads_what_the_calibration_predicts_gives_the_prior(level: str) -> None:
    f2q, fro = 0.9985, 0.992
    mirror = mirror_features(TASK)
    assert (mirror.num_2q_gates, mirror.depth, mirror.num_clbits) == (80, 60, 26)
    predicted = 1.0 - float(analytic_error([mirror], "qpu", f2q, fro)[0])  # its P(0…0)
    estimate = mirror_error(predicted, mirror.num_qubits, TASK, f2q, fro, level)
    assert estimate == pytest.approx(float(analytic_error([TASK], "qpu", f2q, fro, level)[0]), rel=1e-9)


def test_the_estimate_follows_the_mirror_and_the_device_being_uniformly_worse() -> None:
    f2q, fro = 0.9985, 0.992
    reads = np.linspace(0.05, 0.95, 19)
    estimates = [mirror_error(float(p), 26, TASK, f2q, fro) for p in reads]
    assert all(a > b for a, b in itertools.pairwise(estimates))  # more 0…0, less error
    # a device k times as bad in log-fidelity as calibrated, every source alike: read exactly
    for k in (0.5, 1.7, 3.0):
        truth = 1.0 - (f2q ** (40 * k)) * fro ** (27 * k)
        zero = (f2q ** (80 * k)) * fro ** (26 * k)
        assert mirror_error(zero, 26, TASK, f2q, fro) == pytest.approx(truth, rel=1e-9)
    assert mirror_error(0.0, 26, TASK, f2q, fro) == 1.0


def test_rows_name_their_probe() -> None:
    row = {"backend": "q", "backend_kind": "qpu", "num_qubits": 2, "depth": 1, "num_2q_gates": 1}
    row |= {"shots": 1, "run_seconds": 0.1}
    assert validate_row({**row, "observed_error": 0.1, "probe": "mirror"})
    with pytest.raises(ValueError, match="'probe' must be one of"):
        validate_row({**row, "observed_error": 0.1, "probe": "guess"})
    with pytest.raises(ValueError, match="does not carry"):
        validate_row({**row, "probe": "exact"})


def _batches(rows: list[TelemetryRow]) -> dict[str, list[TelemetryRow]]:
    out: dict[str, list[TelemetryRow]] = {}
    for row in rows:
        if row["backend_kind"] == "qpu" and row["success"]:
            out.setdefault(str(row["task_id"]).split("/")[0], []).append(row)
    return out


def test_the_simulator_pays_for_the_mirror_in_the_batch() -> None:
    """QPU only, no noise, no failures: a batch takes its tasks' time plus its mirror's, exactly."""
    scenario = SCENARIOS["wide"].scaled(120)
    backends = tuple(
        replace(b, noise_sigma=0.0, failure_prob=0.0) for b in scenario.backends if b.kind == "qpu"
    )
    scenario = replace(scenario, backends=backends)
    qpu = next(b for b in backends if b.kind == "qpu")
    tasks = make_tasks(scenario, 0)
    by_key = {t.key: t for t in tasks}
    result = simulate(scenario, SizePolicy(), seed=0, tasks=tasks)
    batches = _batches(result.rows)
    assert batches
    for rows in batches.values():
        members = [by_key[str(r["key"])] for r in rows]
        mirror = mirror_features(members[mirrored_index(members)])
        expected = float(np.sum(true_seconds(members, qpu)) + true_seconds([mirror], qpu)[0])
        assert sum(float(r["run_seconds"]) for r in rows) == pytest.approx(expected, rel=1e-9)


def test_simulated_mirror_probes_see_the_drift() -> None:
    """drift_gradual: fidelity decays after calibration; the mirror's estimates rise with it.

    A constant stand-in (or a probe of the published calibration) would read flat.
    """
    scenario = SCENARIOS["drift_gradual"].scaled(300)
    scenario = replace(scenario, backends=tuple(b for b in scenario.backends if b.kind == "qpu"))
    result = simulate(scenario, SizePolicy(), seed=3)
    probes = sorted(
        (float(r["ts"]), float(r["observed_error"]))  # type: ignore[arg-type]
        for rows in _batches(result.rows).values()
        for r in rows
        if r.get("probe") == "mirror"
    )
    assert len(probes) >= 4
    early = [e for t, e in probes if t < 5.0]  # before the drift starts
    late = [e for t, e in probes if t > 30.0]
    assert early and late
    assert min(late) > max(early) + 0.1


def _probe_row(ts: float, epoch: float, factor: float) -> TelemetryRow:
    task = TASK
    prior = float(analytic_error([task], "qpu", 0.9985, 0.992)[0])
    return TelemetryRow(
        ts=ts, run_id=f"r{epoch}", backend="qpu:q", backend_kind="qpu", model="M",
        num_qubits=task.num_qubits, depth=task.depth, num_2q_gates=task.num_2q_gates,
        num_clbits=task.num_clbits, shots=task.shots, run_seconds=0.1, success=True,
        fidelity_2q=0.9985, readout_fidelity=0.992, calibration_time=epoch,
        observed_error=prior * factor, probe="mirror",
    )  # fmt: skip


def test_drift_seen_in_earlier_epochs_is_expected_in_a_new_one() -> None:
    """Two earlier calibrations, each followed by a rise of the error factor at ~1 %/s.

    A new calibration with no probe yet starts at the fresh level and is expected to rise the
    same way; with flat history nothing is extrapolated.
    """
    rising = [_probe_row(e + t, e, math.exp(0.1 + 0.01 * t)) for e in (0.0, 1000.0) for t in range(0, 60, 6)]
    flat = [_probe_row(e + t, e, 1.1 + 0.01 * ((t // 6) % 2)) for e in (0.0, 1000.0) for t in range(0, 60, 6)]
    state = BackendState(
        name="qpu:q", kind="qpu", fidelity_2q=0.9985, readout_fidelity=0.992, calibration_time=5000.0
    )
    model = PolicyModel(rising)
    at_calibration = model.error_factor(state, at=5000.0)
    assert at_calibration == pytest.approx(math.exp(0.1), rel=0.1)
    assert model.error_factor(state, at=5040.0) / at_calibration == pytest.approx(math.exp(0.4), rel=0.05)
    steady = PolicyModel(flat)
    assert steady.error_factor(state, at=5040.0) == pytest.approx(steady.error_factor(state, at=5000.0))


def test_telemetry_holds_the_budget_on_a_drifting_qpu_and_still_uses_it() -> None:
    """drift_gradual, two seeds: within budget (≤ 1 % over), and the QPU is used while it holds.

    Ignoring the drift breaks the budget (the previous model did on every seed); never using the
    QPU is greedy_sim, which telemetry must beat.
    """
    for seed in (0, 4):
        e = evaluate(SCENARIOS["drift_gradual"], seed=seed)
        assert e.held("telemetry"), e.outcomes["telemetry"].violations
        telemetry = e.outcomes["telemetry"]
        assert telemetry.tasks_per_backend.get("qpu:aphrodite-onprem", 0) > 20
        assert telemetry.makespan < e.outcomes["greedy_sim"].makespan


def test_a_qpu_the_calibration_alone_keeps_idle_gets_one_probe_only_job() -> None:
    """calibration_pessimistic: every task is over budget by the calibration, within it in truth.

    Nothing would ever run on the QPU, so nothing would ever show the calibration wrong. The
    telemetry policy sends one probe-only job (the mirror alone, no subexperiment at risk),
    learns from it, and uses the QPU; with exploration off (ε = 0) it does not, like greedy.
    """
    scenario = SCENARIOS["calibration_pessimistic"].scaled(300)
    explored = simulate(scenario, TelemetryPolicy(seed=0, record_metrics=False), seed=0)
    probes = [r for r in explored.rows if r.get("probe_only")]
    assert len(probes) == 1 and probes[0]["probe"] == "mirror" and probes[0]["batch_size"] == 0
    assert probes[0]["observed_error"] < scenario.error_budget  # the truth: within it
    assert explored.tasks_per_backend().get("qpu:aphrodite-onprem", 0) > 100
    assert explored.budget_violations(scenario.error_budget) <= 0.01 * scenario.num_tasks
    closed = simulate(scenario, TelemetryPolicy(seed=0, epsilon=0.0, record_metrics=False), seed=0)
    assert not [r for r in closed.rows if r.get("probe_only")]
    assert closed.tasks_per_backend().get("qpu:aphrodite-onprem", 0) == 0
    assert explored.makespan < 0.5 * closed.makespan


def test_policy_show_says_what_the_error_factor_rests_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qubelet.cli import main

    rising = [_probe_row(e + t, e, math.exp(0.1 + 0.01 * t)) for e in (0.0, 1000.0) for t in range(0, 60, 6)]
    path = tmp_path / "model.json"
    PolicyModel(rising).save(path)
    assert main(["policy", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(probes: 20 mirror; drift +" in out and "%/min after calibration)" in out
    PolicyModel([{**r, "observed_error": None, "probe": None} for r in rising]).save(path)
    assert main(["policy", "show", str(path)]) == 0
    assert "(no probes: calibration only)" in capsys.readouterr().out


def test_a_mirror_reading_is_dated_when_its_batch_ended() -> None:
    from policy.models import measured_at

    row = {"ts": 10.0, "run_seconds": 0.5, "batch_size": 4, "probe": "mirror", "observed_error": 0.3}
    assert measured_at(row) == 12.0  # the mirror is the job's last circuit
    assert measured_at({**row, "probe": "exact"}) == 10.0  # the exact probe: its batch's starts
    assert measured_at({**row, "batch_size": 0, "run_seconds": 0.2}) == 10.2  # a probe-only job
