"""Are the reported standard errors right? Many independent samplings at low shots.

For each circuit the cut is prepared once; every repetition re-samples every subexperiment with
new seeds and reconstructs. Over the repetitions the values must scatter as the reported
standard errors say (spread / stderr in [0.8, 1.25]) around the exact value (mean error within
its own standard error). The mirror-symmetric circuit is the one where sharing a result between
partitions biased the product; signed weighted sums check the covariance terms.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from qiskit import QuantumCircuit
from test_pipeline_user_defects import mirror_circuit, width_tutorial_circuit

from pipeline import stages
from pipeline.backends.simulators import AerStatevectorBackend
from pipeline.config import RunConfig
from pipeline.reconstruct import reconstruct
from pipeline.store import ArtifactStore

SHOTS = 32
REPETITIONS = 60
#: wall-clock bound for one circuit's repetitions on a shared 2-core machine
BUDGET_SECONDS = 25.0

CASES = {
    "width tutorial": (
        width_tutorial_circuit,
        "AABB",
        ("ZZII", "XIXI", "IXIX", "t=ZZII+IZZI-IIZZ+XIXI+ZIZZ+IXIX"),
    ),
    "mirror": (mirror_circuit, "AABB", ("Z0Z2", "Z1Z3", "X0X2", "m=Z0Z2-0.5*Z1Z3+Z0")),
}


def sample_errors(tmp_path: Path, build, partition: str, observables: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """Per observable and repetition: (value - exact, reported stderr)."""
    config = RunConfig(
        run_dir=tmp_path, partition=partition, observables=observables, shots=SHOTS, backends=("cpu",)
    )
    circuit: QuantumCircuit = build()
    manifest = stages.prepare(config, circuit=circuit)
    assert manifest.exact is not None
    store_circuits = {k: ArtifactStore(tmp_path).get_circuit(k) for k in manifest.cut.unique_keys()}
    keys = list(store_circuits)
    backend = AerStatevectorBackend("cpu")
    exact = {
        name: sum(
            w * manifest.exact[p]
            for p, w in zip(manifest.observable_terms[name], manifest.weights_of(name), strict=True)
        )
        for name in manifest.observable_names
    }
    errors = {name: [] for name in manifest.observable_names}
    stderrs = {name: [] for name in manifest.observable_names}
    started = time.monotonic()
    for repetition in range(REPETITIONS):
        seeds = [repetition * 100_003 + i for i in range(len(keys))]
        counts = dict(
            zip(keys, backend.run_batch([store_circuits[k] for k in keys], SHOTS, seeds), strict=True)
        )
        recon = reconstruct(manifest.cut, counts.__getitem__)
        for name in manifest.observable_names:
            terms, weights = manifest.observable_terms[name], manifest.weights_of(name)
            errors[name].append(recon.value_of(terms, weights) - exact[name])
            stderrs[name].append(recon.stderr_of(terms, weights))
        if time.monotonic() - started > BUDGET_SECONDS and repetition >= 24:
            break
    return {name: (np.array(errors[name]), np.array(stderrs[name])) for name in errors}


@pytest.mark.parametrize("case", sorted(CASES))
def test_standard_errors_are_calibrated(tmp_path: Path, case: str) -> None:
    build, partition, observables = CASES[case]
    samples = sample_errors(tmp_path, build, partition, observables)
    ratios = []
    for name, (errors, stderrs) in samples.items():
        repetitions = len(errors)
        typical = float(np.sqrt(np.mean(stderrs**2)))
        # Unbiased: the mean error is within 3.5 standard errors of the mean.
        assert abs(errors.mean()) <= 3.5 * typical / np.sqrt(repetitions), (
            case,
            name,
            errors.mean(),
            typical,
        )
        ratios.append(float(np.sqrt(np.mean(errors**2))) / typical)
    # The observables of one case share samples; their pooled ratio estimates the calibration.
    pooled = float(np.sqrt(np.mean(np.square(ratios))))
    assert 0.8 <= pooled <= 1.25, (case, ratios)
    for ratio in ratios:
        assert 0.65 <= ratio <= 1.45, (case, ratios)
