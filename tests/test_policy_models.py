"""The run-time and error models: they learn, persist as JSON only, and fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policy.interface import BackendState, CircuitFeatures, TelemetryRow
from policy.models import CostCoefficients, PolicyModel
from policy.telemetry import TelemetryPolicy

pytestmark = pytest.mark.timeout(60)

#: Ground truth of the synthetic trace: deliberately not the prior's coefficients.
TRUTH = CostCoefficients(base=6e-3, per_shot=5e-7, per_amp_layer=1.5e-8)
CPU = BackendState(name="cpu", kind="cpu", workers=2)


def _tasks(rng: np.random.Generator, n: int) -> list[CircuitFeatures]:
    return [
        CircuitFeatures(
            key=f"t{i}",
            num_qubits=int(rng.integers(3, 16)),
            depth=int(rng.integers(5, 60)),
            num_2q_gates=int(rng.integers(0, 40)),
            num_clbits=5,
            shots=int(rng.integers(500, 10_000)),
        )
        for i in range(n)
    ]


def _true_mean(tasks: list[CircuitFeatures]) -> np.ndarray:
    return TRUTH.seconds(
        np.array([t.num_qubits for t in tasks], dtype=float),
        np.array([t.depth for t in tasks], dtype=float),
        np.array([t.shots for t in tasks], dtype=float),
    )


def _rows(tasks: list[CircuitFeatures], rng: np.random.Generator) -> list[TelemetryRow]:
    times = _true_mean(tasks) * rng.lognormal(0.0, 0.1, size=len(tasks))
    return [
        {
            "ts": float(i),
            "key": t.key,
            "backend": "cpu",
            "backend_kind": "cpu",
            "num_qubits": t.num_qubits,
            "depth": t.depth,
            "num_2q_gates": t.num_2q_gates,
            "num_clbits": t.num_clbits,
            "shots": t.shots,
            "run_seconds": float(s),
            "success": True,
        }
        for i, (t, s) in enumerate(zip(tasks, times, strict=True))
    ]


def _mean_log_error(model: PolicyModel, tasks: list[CircuitFeatures]) -> float:
    predicted = model.predict_seconds(tasks, CPU)
    return float(np.mean(np.abs(np.log(predicted / _true_mean(tasks)))))


def test_prediction_error_falls_as_history_grows() -> None:
    rng = np.random.default_rng(1)
    history = _rows(_tasks(rng, 1000), rng)
    held_out = _tasks(np.random.default_rng(2), 300)
    errors = [_mean_log_error(PolicyModel(history[:n]), held_out) for n in (0, 10, 100, 1000)]
    assert errors[0] > errors[1] > errors[2] >= errors[3] - 0.01, errors
    assert errors[3] < 0.5 * errors[0], errors
    assert errors[3] < 0.25, errors  # within ~25 % of the truth on average


def test_model_round_trips_through_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    model = PolicyModel(_rows(_tasks(rng, 50), rng))
    path = tmp_path / "model.json"
    model.save(path)
    assert json.loads(path.read_text())["format"] == "qubelet-policy-model"
    loaded = PolicyModel.load(path)
    probe = _tasks(np.random.default_rng(4), 20)
    np.testing.assert_allclose(loaded.predict_seconds(probe, CPU), model.predict_seconds(probe, CPU))


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\x80\x04\x95pickle-bytes", "not a readable JSON file"),
        (b"{not json", "not a readable JSON file"),
        (b'{"format": "something-else", "version": 1}', "format is not"),
        (b'{"format": "qubelet-policy-model", "version": 99}', "unsupported version"),
        (b'{"format": "qubelet-policy-model", "version": 1, "rows": [{"backend": 3}]}', "rows[0]"),
        (b'{"format": "qubelet-policy-model", "version": 1, "hyperparameters": {"__class__": 1}}', "hyper"),
    ],
)
def test_corrupt_model_file_is_a_one_line_error_naming_it(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    path = tmp_path / "bad-model.json"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        TelemetryPolicy.load_or_prior(path, seed=0)
    message = str(info.value)
    assert str(path) in message and needle in message and "\n" not in message


def test_cold_start_without_a_model_file(tmp_path: Path) -> None:
    for path in (None, tmp_path / "absent.json"):
        policy = TelemetryPolicy.load_or_prior(path, seed=0)
        assert policy.model.rows == []
        [decision] = policy.select(
            [CircuitFeatures("k", 5, 20, 8, 5, 4096)], [CPU, BackendState(name="gpu", kind="gpu")]
        )
        assert decision.backend == "cpu"  # the prior knows a 5-qubit statevector is cheap on a CPU
        assert decision.predicted_seconds is not None and decision.predicted_seconds > 0


def test_error_prior_is_corrected_by_observed_errors() -> None:
    qpu = BackendState(name="qpu:a", kind="qpu", max_qubits=20, fidelity_2q=0.99, readout_fidelity=0.98)
    task = CircuitFeatures("k", 5, 20, 10, 5, 4096)
    prior = PolicyModel().predict_error([task], qpu)[0]
    assert prior == pytest.approx(1 - 0.99**10 * 0.98**5)
    rows: list[TelemetryRow] = [
        {
            "backend": "qpu:a",
            "backend_kind": "qpu",
            "num_qubits": 5,
            "depth": 20,
            "num_2q_gates": 10,
            "num_clbits": 5,
            "shots": 4096,
            "run_seconds": 0.1,
            "fidelity_2q": 0.99,
            "readout_fidelity": 0.98,
            "observed_error": 2 * prior,
        }
    ] * 200
    learned = PolicyModel(rows).predict_error([task], qpu)[0]
    assert learned == pytest.approx(2 * prior, rel=0.05)


def test_learned_qpu_queue_wait_ignores_the_runs_own_backlog() -> None:
    def row(run: str, wait: float) -> TelemetryRow:
        return {
            "run_id": run, "backend": "qpu:c", "backend_kind": "qpu", "num_qubits": 5, "depth": 20,
            "num_2q_gates": 8, "num_clbits": 5, "shots": 4096, "run_seconds": 0.1, "queue_wait_seconds": wait,
        }  # fmt: skip

    # each run's first batch waited ~the service's 60 s queue; later batches also waited for ours
    rows = [row(run, first + backlog) for run, first in (("r1", 50.0), ("r2", 60.0), ("r3", 70.0))
            for backlog in (0.0, 30.0, 90.0)]  # fmt: skip
    model = PolicyModel(rows)
    qpu = BackendState(name="qpu:c", kind="qpu", max_qubits=20)
    assert model.queue_wait(qpu) == pytest.approx(60.0)
    assert model.queue_wait(BackendState(name="qpu:c", kind="qpu", queue_wait_seconds=5.0)) == 5.0


def test_ridge_fit_matches_scikit_learn() -> None:
    """The numpy ridge is the fit scikit-learn's Ridge gives (intercept unpenalised)."""
    from sklearn.linear_model import Ridge

    from policy.models import RidgeFit

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 5)) * [1.0, 3.0, 0.5, 2.0, 1.0] + [5.0, 1.0, 0.0, 8.0, 2.0]
    y = x @ np.array([0.3, -1.0, 2.0, 0.1, 0.0]) + 4.0 + rng.normal(scale=0.2, size=40)
    for alpha in (0.0, 1.0, 25.0):
        ours = RidgeFit.fit(x, y, alpha)
        theirs = Ridge(alpha=alpha).fit(x, y)
        assert np.allclose(ours.coef, theirs.coef_, atol=1e-8)
        assert ours.intercept == pytest.approx(float(theirs.intercept_), abs=1e-8)
        assert np.allclose(ours.predict(x[:7]), theirs.predict(x[:7]), atol=1e-8)
