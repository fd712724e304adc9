"""Calibration against the oracle: are qubelet's answers right, and are its error bars honest?

Draws random cutting problems from the property tests' generator (tests/oracle_cases.py: random
standard gates, 2-3 partitions, gate cuts, CutWire, Move, find_cuts, barriers, measure_all,
weighted observables, identity on some partitions or living in one) and runs each twice:

- on the ``exact`` backend: the largest |value − exact| over all observables (must be < 1e-9);
- on the ``cpu`` backend with shots: the z-score (value − exact) / stderr of every observable.
  Honest standard errors give z ~ N(0, 1): mean z² ≈ 1, about 68% within 1σ, 95% within 2σ,
  99.7% within 3σ. The baseline is that normal distribution.

The exact values are qiskit.quantum_info's (Statevector, or DensityMatrix for Move), not
qubelet's. Examples are hypothesis-derandomised: the same cases every run.

    python bench/oracle_calibration.py [--cases 200] [--shots 2000]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

#: cases with more subexperiments than this are skipped (the generator draws few of them)
MAX_SUBEXPERIMENTS = 600


def _normal_within(k: float) -> float:
    return math.erf(k / math.sqrt(2))


def calibrate(cases: int, shots: int) -> dict[str, object]:
    """Run ``cases`` random problems on the exact and the cpu backend; z-scores and exact errors."""
    import numpy as np
    from hypothesis import HealthCheck, Phase, given, settings
    from oracle_cases import Case
    from oracle_cases import cases as case_strategy
    from test_oracle_properties import expected_values

    from pipeline import api
    from pipeline.errors import PipelineError

    z_scores: list[float] = []
    exact_errors: list[float] = []
    modes: dict[str, int] = {}
    skipped = 0

    @settings(
        max_examples=cases,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=case_strategy())
    def one(case: Case) -> None:
        nonlocal skipped
        expected = expected_values(case)
        results = {}
        for backend in ("exact", "cpu"):
            with tempfile.TemporaryDirectory() as scratch:
                try:
                    results[backend] = api.run(
                        case.circuit(),
                        case.specs(),
                        case.partition,
                        run_dir=scratch,
                        backends=(backend,),
                        shots=shots,
                        max_subexperiments=MAX_SUBEXPERIMENTS,
                        **{"seed": 11, **case.options()},
                    )
                except PipelineError as exc:
                    if "exceed --max-subexperiments" not in str(exc):
                        raise
                    skipped += 1
                    return
        modes[case.mode] = modes.get(case.mode, 0) + 1
        for spec, value in expected.items():
            exact_errors.append(abs(results["exact"].values[spec] - value))
            stderr = results["cpu"].stderrs[spec]
            if stderr > 1e-12:  # the identity is exact by construction
                z_scores.append((results["cpu"].values[spec] - value) / stderr)

    started = time.perf_counter()
    one()
    z = np.asarray(z_scores)
    within = {k: float(np.mean(np.abs(z) <= k)) for k in (1, 2, 3)}
    return {
        "cases": sum(modes.values()),
        "skipped_for_cost": skipped,
        "modes": dict(sorted(modes.items())),
        "observables": len(z),
        "shots": shots,
        "max_exact_error": float(max(exact_errors)) if exact_errors else None,
        "mean_z": float(z.mean()),
        "mean_z2": float(np.mean(z**2)),
        "max_abs_z": float(np.abs(z).max()),
        "within": {f"{k}sigma": within[k] for k in within},
        "normal": {f"{k}sigma": round(_normal_within(k), 4) for k in within},
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    """Run the calibration, print a table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--shots", type=int, default=2000)
    args = parser.parse_args()
    report = calibrate(args.cases, args.shots)
    within, normal = report["within"], report["normal"]
    assert isinstance(within, dict) and isinstance(normal, dict)
    print(f"cases run: {report['cases']} {report['modes']}, skipped for cost: {report['skipped_for_cost']}")
    print(f"exact backend: largest |value - exact|: {report['max_exact_error']:.2e}")
    print(f"cpu backend, {report['shots']} shots: {report['observables']} z-scores")
    print(f"  mean z {report['mean_z']:+.3f}   mean z^2 {report['mean_z2']:.3f} (1 if honest)")
    print(f"  max |z| {report['max_abs_z']:.2f}")
    print("  | within | measured | N(0,1) |")
    for key in within:
        print(f"  | {key:6} | {within[key]:8.3f} | {normal[key]:6.4f} |")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
