"""Are ZNE's error bars honest? Seeded runs on the fake QPU against exact values (issue 21).

Two circuits, the width tutorial's (``efficient_su2(4, linear, reps=2)``, AABB) and a mirror-
symmetric one, every subexperiment on IQMFakeApollo with the default ZNE (linear through scale
factors 1, 3, 5), 24 seeds each at 2000 shots (the issue's setting) and at 65,536 shots (the demo's,
where a biased model is many standard errors off). A seeded run's value must be within twice its
combined uncertainty ``sqrt(stderr² + systematic²)`` of the exact value in at least 95 % of cases.

Why it is cheap, and still the real thing: the fake QPU computes each folded circuit's exact noisy
distribution (density matrix plus readout confusion) and samples the shots from it; a run's seed
only picks the samples (the layout is seed-independent here, which the test checks). So the QPU
backend runs each circuit once with 24 x the shots, and that sample is split, without
replacement, into 24 independent runs: a uniformly random split of 24·N independent draws is
distributed exactly as 24 independent N-shot samples. Each run is then reconstructed by the
pipeline's own code, systematic term included.

The test can fail: the same runs' stderr alone (no systematic term) covers far less than 95 %, and
Richardson's stderr alone covers less still (the issue: 15 of 24 beyond 2 sigma).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from qiskit import QuantumCircuit
from test_pipeline_user_defects import mirror_circuit, width_tutorial_circuit

from pipeline import stages
from pipeline.backends.base import Counts
from pipeline.backends.qpu import IQMBackend, resolve_qpu_target
from pipeline.config import RunConfig
from pipeline.mitigation import MitigationConfig
from pipeline.mitigation.systematic import extrapolation_shifts, largest
from pipeline.reconstruct import reconstruct

SEEDS = 24
SHOTS = (2000, 65536)
ZNE = MitigationConfig(level="zne")  # the default: linear through (1, 3, 5)
CASES: dict[str, tuple[Callable[[], QuantumCircuit], str, tuple[str, ...]]] = {
    "width tutorial": (width_tutorial_circuit, "AABB", ("ZZII", "IZZI", "IIZZ", "XIXI", "IXIX")),
    "mirror": (mirror_circuit, "AABB", ("Z0Z2", "Z1Z3", "X0X2", "Z1Z2")),
}


def split(counts: Counts, parts: int, rng: np.random.Generator) -> list[Counts]:
    """``parts`` independent samples of ``counts.shots // parts`` shots each (folded ones too)."""
    folded = [(scale, split(c, parts, rng)) for scale, c in counts.folded]
    pool = counts.counts.copy()
    size = int(pool.sum()) // parts
    out = []
    for part in range(parts):
        drawn = rng.multivariate_hypergeometric(pool, size)
        pool -= drawn
        keep = drawn > 0
        sample = Counts(counts.outcomes[keep], drawn[keep], counts.num_clbits)
        out.append(sample.with_mitigation_data(counts.readout, [(s, f[part]) for s, f in folded]))
    return out


def split_off(counts: Counts, shots: int, rng: np.random.Generator) -> Counts:
    """``shots`` of ``counts`` drawn without replacement (itself when that is all of them)."""
    if shots == counts.shots:
        return counts
    folded = [(scale, split_off(c, shots, rng)) for scale, c in counts.folded]
    drawn = rng.multivariate_hypergeometric(counts.counts, shots)
    keep = drawn > 0
    sample = Counts(counts.outcomes[keep], drawn[keep], counts.num_clbits)
    return sample.with_mitigation_data(counts.readout, folded)


@pytest.fixture(scope="module")
def qpu() -> IQMBackend:
    return IQMBackend(resolve_qpu_target("fake:IQMFakeApollo"), mitigation=ZNE)


def simulated_runs(qpu: IQMBackend, case: str) -> tuple[stages.Manifest, list[str], list[list[Counts]]]:
    """The case's cut, and ``SEEDS`` independent runs at the largest shot count."""
    build, partition, observables = CASES[case]
    config = RunConfig(
        run_dir=Path(tempfile.mkdtemp(prefix="qubelet-zne-calibration-")),
        partition=partition,
        observables=observables,
        shots=max(SHOTS),
        backends=("qpu",),
    )
    manifest = stages.prepare(config, circuit=build())
    keys = manifest.cut.unique_keys()
    circuits = [manifest.circuits[k] for k in keys]
    seeds = [stages.subexperiment_seed(0, k) for k in keys]
    whole = qpu.run_batch(circuits, max(SHOTS) * SEEDS, seeds)
    rng = np.random.default_rng(2026)
    return manifest, keys, [list(run) for run in zip(*(split(c, SEEDS, rng) for c in whole), strict=True)]


def errors_of(
    manifest: stages.Manifest, keys: list[str], runs: list[list[Counts]], *, with_richardson: bool
) -> dict[str, np.ndarray]:
    """Per run and observable: error, stderr, systematic; each alternative's shift and its noise."""
    assert manifest.exact is not None
    terms = [(manifest.observable_terms[n], manifest.weights_of(n)) for n in manifest.observable_names]
    exact = np.array([sum(w * manifest.exact[p] for p, w in zip(t, ws, strict=True)) for t, ws in terms])
    richardson = MitigationConfig(level="zne", zne_scales=(1, 3, 5), extrapolation="richardson")
    out: dict[str, list] = {
        "error": [],
        "stderr": [],
        "systematic": [],
        "delta": [],
        "noise": [],
        "rich_z": [],
    }
    for run in runs:
        counts = dict(zip(keys, run, strict=True))
        recon = reconstruct(manifest.cut, counts.__getitem__, mitigation=ZNE)
        values = np.array([recon.value_of(t, w) for t, w in terms])
        out["error"].append(list(values - exact))
        out["stderr"].append([recon.stderr_of(t, w) for t, w in terms])
        shifts = extrapolation_shifts(manifest.cut, counts, ZNE, recon, terms)
        out["systematic"].append(largest(shifts, len(terms)))
        out["delta"].append([[s.delta for s in alternative] for alternative in shifts])
        out["noise"].append([[s.noise for s in alternative] for alternative in shifts])
        if with_richardson:
            rich = reconstruct(manifest.cut, counts.__getitem__, mitigation=richardson)
            rich_errors = [rich.value_of(t, w) - e for (t, w), e in zip(terms, exact, strict=True)]
            out["rich_z"].append(
                [d / rich.stderr_of(t, w) for d, (t, w) in zip(rich_errors, terms, strict=True)]
            )
    return {key: np.array(value) for key, value in out.items()}


def test_layout_does_not_depend_on_the_seed(qpu: IQMBackend, tmp_path: Path) -> None:
    """What makes one noisy simulation per circuit stand for every seed's run."""
    from qiskit import transpile

    config = RunConfig(run_dir=tmp_path, partition="AABB", observables=("ZZII",), backends=("qpu",))
    manifest = stages.prepare(config, circuit=width_tutorial_circuit())
    circuits = list(manifest.circuits.values())
    device = qpu._backend
    compiled = [transpile(circuits, backend=device, optimization_level=1, seed_transpiler=s) for s in (1, 99)]
    assert compiled[0] == compiled[1]


@pytest.mark.parametrize("case", sorted(CASES))
def test_zne_error_bars_cover_the_exact_value(qpu: IQMBackend, case: str) -> None:
    manifest, keys, runs = simulated_runs(qpu, case)
    rng = np.random.default_rng(7)
    for shots in SHOTS:
        # Fewer shots: a without-replacement subsample of each run is an independent smaller run.
        scaled = [[split_off(c, shots, rng) for c in run] for run in runs]
        strongest = shots == max(SHOTS) and case == "width tutorial"
        found = errors_of(manifest, keys, scaled, with_richardson=strongest)
        error, stderr, systematic = found["error"], found["stderr"], found["systematic"]
        uncertainty = np.hypot(stderr, systematic)
        covered = float(np.mean(np.abs(error) <= 2 * uncertainty))
        assert covered >= 0.95, (case, shots, covered, error.mean(axis=0), uncertainty.mean(axis=0))
        # The error bars stay useful: tighter than the raw device bias they replace (about 0.1).
        assert float(np.median(uncertainty)) < 0.1, (case, shots, np.median(uncertainty))
        # The shifts' reported noise is their spread over seeds (the true shift is the same in
        # every run here): the noise floor of the systematic term is calibrated, not a fudge.
        spread = found["delta"].std(axis=0, ddof=1)
        ratio = float(np.sqrt(np.mean((spread / found["noise"].mean(axis=0)) ** 2)))
        assert 0.75 <= ratio <= 1.33, (case, shots, ratio)
        if strongest:
            # Without the systematic term the same runs are not covered: the test can fail.
            assert float(np.mean(np.abs(error) <= 2 * stderr)) < 0.9
            # Richardson's stderr alone, as before issue 21, is further off still.
            assert float(np.mean(np.abs(found["rich_z"]) <= 2)) < 0.5
