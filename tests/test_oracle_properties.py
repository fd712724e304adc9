"""Differential property tests: random cutting problems, qubelet against the oracle (issue 21).

Cases come from :func:`oracle_cases.cases` (random standard gates, 2-3 partitions, gate cuts,
``CutWire``, ``Move``, ``find_cuts``, barriers, ``measure_all``, weighted observables that are
the identity on some partitions or live in one). With the exact backend each value must equal the
uncut circuit's (qiskit.quantum_info) and the library's reconstruction of the same counts to
1e-9, and the library's own flow (ExactSampler) where its subexperiments are few enough. With
shots, the z-scores (value − exact) / stderr must look like standard normal draws.

Time-bounded: examples are derandomised (the same ones every run) and each test stops drawing
after its budget, so a loaded CI machine runs fewer of them, never longer. A failing example is
written to tests/corpus/ on hypothesis' final replay (the shrunk one); ``test_corpus`` replays
every kept example. The long calibration is bench/oracle_calibration.py.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.control import current_build_context
from oracle import TOLERANCE, exact_values, library_values
from oracle_cases import Case, cases, corpus_cases, save_to_corpus

from pipeline import api, stages
from pipeline.errors import PipelineError
from pipeline.reconstruct import reconstruct
from pipeline.store import ArtifactStore

#: seconds each property test may spend drawing new examples
BUDGET_SECONDS = 30.0
#: most subexperiments a case may have; larger ones are skipped (drawn rarely)
MAX_SUBEXPERIMENTS = 1500
#: subexperiments up to which the library's own flow (ExactSampler, slow) is run as well
LIBRARY_FLOW_MAX = 60


def expected_values(case: Case) -> dict[str, float]:
    """Per observable spec: Σ w ⟨P⟩ on the uncut circuit, from qiskit.quantum_info."""
    labels = sorted({label for terms in case.observables for label, _ in terms})
    exact = dict(zip(labels, exact_values(case.circuit(), labels), strict=True))
    out = {}
    for spec, terms in zip(case.specs(), _unique_terms(case), strict=True):
        out[spec] = sum(w * exact[label] for label, w in terms)
    return out


def _unique_terms(case: Case) -> list[list[tuple[str, float]]]:
    seen: dict[str, list[tuple[str, float]]] = {}
    for terms in case.observables:
        spec = Case(case.mode, case.num_qubits, [], observables=[terms]).specs()[0]
        seen.setdefault(spec, terms)
    return list(seen.values())


def run_case(case: Case, run_dir: Path, **options: object) -> api.RunResult | None:
    """qubelet's run of the case; None when its cost is above this test's limit."""
    try:
        return api.run(
            case.circuit(),
            case.specs(),
            case.partition,
            run_dir=run_dir,
            max_subexperiments=MAX_SUBEXPERIMENTS,
            **case.options(),
            **options,  # type: ignore[arg-type]
        )
    except PipelineError as exc:
        if "exceed --max-subexperiments" in str(exc):
            return None
        raise


def check_exact(case: Case, run_dir: Path) -> None:
    """The exact backend's values against the statevector, the library's reconstruction and flow."""
    result = run_case(case, run_dir, backends=("exact",))
    if result is None:
        return
    for spec, expected in expected_values(case).items():
        assert abs(result.values[spec] - expected) <= TOLERANCE, (spec, result.values[spec], expected)
        assert result.stderrs[spec] == 0.0
        if result.exact[spec] is not None:
            assert abs(result.exact[spec] - expected) <= TOLERANCE, (spec, "exact reference")
    manifest = stages.load_manifest(run_dir)
    recon = reconstruct(manifest.cut, ArtifactStore(run_dir).get_result, with_library=True)
    assert recon.library_values is not None
    assert np.allclose([p.value for p in recon.paulis], recon.library_values, atol=TOLERANCE, rtol=0)
    subexperiments = sum(result.summary["subexperiments"].values())
    if case.mode != "find_cuts" and subexperiments <= LIBRARY_FLOW_MAX:
        labels = sorted({label for terms in case.observables for label, _ in terms})
        library = library_values(case.circuit(), labels, case.partition)
        exact = exact_values(case.circuit(), labels)
        assert np.allclose(library, exact, atol=TOLERANCE, rtol=0), "the oracles disagree"


def _keep_if_final(case: Case) -> None:
    """On hypothesis' final replay of a failing example, keep it in the corpus."""
    if current_build_context().is_final:
        digest = hashlib.sha256(json.dumps(case.to_json(), sort_keys=True).encode()).hexdigest()[:12]
        path = save_to_corpus(f"{case.mode}-{digest}", case)
        print(f"failing example kept in {path}")


class Budget:
    """Wall-clock budget of one property test: examples drawn after it pass without running."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: float | None = None
        self.ran = 0

    def spent(self) -> bool:
        """True once the budget is used up (the first call starts the clock)."""
        now = time.monotonic()
        if self.started is None:
            self.started = now
        return now - self.started > self.seconds


EXACT_BUDGET = Budget(BUDGET_SECONDS)


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(case=cases())
def test_exact_backend_equals_the_oracle(tmp_path_factory: pytest.TempPathFactory, case: Case) -> None:
    if EXACT_BUDGET.spent():
        return
    EXACT_BUDGET.ran += 1
    try:
        check_exact(case, tmp_path_factory.mktemp("exact"))
    except AssertionError:
        _keep_if_final(case)
        raise


def test_the_exact_property_test_ran_enough_examples() -> None:
    """The budget must leave room for a meaningful number of cases (run after the test above)."""
    if EXACT_BUDGET.started is None:
        pytest.skip("the property test did not run in this session")
    assert EXACT_BUDGET.ran >= 8, EXACT_BUDGET.ran


@pytest.mark.parametrize(("name", "case"), corpus_cases(), ids=[name for name, _ in corpus_cases()])
def test_corpus(tmp_path: Path, name: str, case: Case) -> None:
    """Every example that once failed, replayed with the exact backend."""
    check_exact(case, tmp_path)


#: subexperiments a shot case may have (the CPU samples each: larger ones are skipped)
SHOTS_MAX_SUBEXPERIMENTS = 250


def test_shot_z_scores_are_calibrated(tmp_path_factory: pytest.TempPathFactory) -> None:
    """cpu backend, fixed seeds: every |z| < 5, mean z² near 1, few beyond 2σ.

    One test over a fixed (derandomised) set of cases, so the aggregate always sees the same
    z-scores; bench/oracle_calibration.py runs the same check over hundreds of cases.
    """
    scores: list[float] = []
    runs: list[int] = []

    @settings(
        max_examples=18,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=cases(modes=("partition", "cut_wire", "move")))
    def check(case: Case) -> None:
        try:
            result = api.run(
                case.circuit(),
                case.specs(),
                case.partition,
                run_dir=tmp_path_factory.mktemp("shots"),
                backends=("cpu",),
                shots=2000,
                seed=11,
                max_subexperiments=SHOTS_MAX_SUBEXPERIMENTS,
            )
        except PipelineError as exc:
            if "exceed --max-subexperiments" in str(exc):
                return
            raise
        runs.append(1)
        for spec, expected in expected_values(case).items():
            stderr = result.stderrs[spec]
            error = result.values[spec] - expected
            if stderr < 1e-12:  # a constant observable (the identity): exact by construction
                assert abs(error) <= 1e-9, spec
                continue
            try:
                assert abs(error / stderr) < 5.0, (spec, result.values[spec], expected, stderr)
            except AssertionError:
                _keep_if_final(case)
                raise
            scores.append(error / stderr)

    check()
    z = np.asarray(scores)
    assert len(runs) >= 8 and len(z) >= 15, (len(runs), len(z))
    assert 0.4 < float(np.mean(z**2)) < 2.0, (len(z), float(np.mean(z**2)))
    assert float(np.mean(np.abs(z) > 2)) <= 0.15, (len(z), z.tolist())
