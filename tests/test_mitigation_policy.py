"""The policy knows mitigation: mitigated error predicted, learned per level, ZNE's cost counted."""

from __future__ import annotations

from dataclasses import replace

import pytest

from policy.interface import BackendState, CircuitFeatures, TelemetryRow
from policy.models import PolicyModel
from policy.telemetry import TelemetryPolicy

pytestmark = pytest.mark.timeout(60)

CPU = BackendState(name="cpu", kind="cpu", workers=1)
QPU = BackendState(
    name="qpu:apollo", kind="qpu", max_qubits=20, model="Apollo", fidelity_2q=0.985, readout_fidelity=0.96
)


def _tasks(n: int, qubits: int = 24) -> list[CircuitFeatures]:
    # Wide enough that the CPU statevector is slow: only the error budget keeps them off the QPU.
    return [CircuitFeatures(f"k{i}", qubits, 20, 6, qubits, 4096) for i in range(n)]


def test_prior_error_falls_with_each_mitigation_level() -> None:
    model = PolicyModel([])
    tasks = _tasks(1, qubits=10)
    errors = {
        level: float(model.predict_error(tasks, replace(QPU, mitigation=level))[0])
        for level in ("none", "readout", "zne")
    }
    assert errors["none"] > errors["readout"] > errors["zne"] > 0


def test_budget_admits_a_mitigated_qpu_that_a_raw_one_fails() -> None:
    tasks = _tasks(12, qubits=22)
    wide_qpu = replace(QPU, max_qubits=24)
    raw = TelemetryPolicy(seed=0, epsilon=0.0, error_budget=0.2).select(tasks, [CPU, wide_qpu])
    mitigated = TelemetryPolicy(seed=0, epsilon=0.0, error_budget=0.2).select(
        tasks, [CPU, replace(wide_qpu, mitigation="readout")]
    )
    assert {d.backend for d in raw} == {"cpu"}
    on_qpu = [d for d in mitigated if d.backend == "qpu:apollo"]
    assert len(on_qpu) >= len(tasks) // 2  # 2^22 amplitudes: the QPU is now the faster choice
    for decision in on_qpu:
        assert decision.predicted_error is not None and decision.predicted_error <= 0.2
        # The fidelity floor the claim carries is the one the *mitigated* error needs.
        floor = decision.min_fidelity_2q
        assert floor is not None and floor <= QPU.fidelity_2q  # type: ignore[operator]


def _rows(
    level: str, observed: float, n: int = 40, work: float = 1.0, seconds: float = 1.0
) -> list[TelemetryRow]:
    return [
        TelemetryRow(
            ts=float(i),
            run_id="r1",
            backend="qpu:apollo",
            backend_kind="qpu",
            model="Apollo",
            num_qubits=10,
            depth=20,
            num_2q_gates=6,
            num_clbits=10,
            shots=4096,
            run_seconds=seconds * work,
            success=True,
            fidelity_2q=0.985,
            readout_fidelity=0.96,
            observed_error=observed,
            mitigation=level,
            mitigation_work=work,
        )
        for i in range(n)
    ]


def test_mitigated_error_is_learned_per_level_from_telemetry() -> None:
    tasks = _tasks(1, qubits=10)
    prior = {
        level: float(PolicyModel([]).predict_error(tasks, replace(QPU, mitigation=level))[0])
        for level in ("none", "readout")
    }
    # Telemetry says readout mitigation does ten times better than its prior; raw rows agree
    # with theirs. Each level's prediction follows its own rows only.
    model = PolicyModel(
        _rows("readout", observed=prior["readout"] / 10) + _rows("none", observed=prior["none"])
    )
    learned_readout = float(model.predict_error(tasks, replace(QPU, mitigation="readout"))[0])
    learned_none = float(model.predict_error(tasks, replace(QPU, mitigation="none"))[0])
    assert learned_readout < 0.2 * prior["readout"]
    assert learned_none == pytest.approx(prior["none"], rel=0.1)


def test_zne_cost_counts_its_extra_circuits() -> None:
    tasks = _tasks(3, qubits=10)
    # Rows of a ZNE run (work 4: scales 1 and 3) that took 4 s per subexperiment: 1 s per unit.
    model = PolicyModel(_rows("zne", observed=0.01, work=4.0, seconds=1.0))
    plain = model.predict_seconds(tasks, replace(QPU, mitigation="readout"))
    zne = model.predict_seconds(tasks, replace(QPU, mitigation="zne", mitigation_work=4.0))
    assert zne == pytest.approx(4.0 * plain)
    assert plain == pytest.approx(1.0, rel=0.5)
