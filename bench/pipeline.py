"""End-to-end cutting run: the reference qiskit-addon-cutting flow vs ``qubelet run`` (cpu).

(a) reference: what a qiskit-addon-cutting user writes today — ``partition_problem``,
    ``generate_cutting_experiments``, one qiskit-aer ``SamplerV2`` job per partition (shot-by-shot
    simulation, because the subexperiments carry mid-circuit measurements),
    ``reconstruct_expectation_values``.
(b) qubelet: the local executor on the cpu backend — content-addressed dedupe, exact
    deferred-measurement simulation sampled with the same shot count, batched Aer jobs,
    qiskit-addon-cutting reconstruction from quasi-distributions, plus error propagation.

Both run in this process on the same circuit (N=10, K=3, 4096 shots: 216 subexperiments per
partition). Prints per-stage wall times, the speedup, and whether the answers agree; the last
line is one JSON object.

    python bench/pipeline.py [--qubits 10] [--cuts 3] [--shots 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def reference_flow(target, shots: int, seed: int) -> tuple[dict[str, float], list[float]]:  # type: ignore[no-untyped-def]
    from qiskit_addon_cutting import (
        generate_cutting_experiments,
        partition_problem,
        reconstruct_expectation_values,
    )
    from qiskit_aer.primitives import SamplerV2

    times: dict[str, float] = {}
    start = time.perf_counter()
    problem = partition_problem(
        circuit=target.circuit, partition_labels=target.partition, observables=target.observables
    )
    subexperiments, coefficients = generate_cutting_experiments(
        circuits=problem.subcircuits, observables=problem.subobservables, num_samples=np.inf
    )
    times["cut"] = time.perf_counter() - start
    start = time.perf_counter()
    sampler = SamplerV2(default_shots=shots, seed=seed)
    results = {
        label: sampler.run(circuits, shots=shots).result() for label, circuits in subexperiments.items()
    }
    times["execute"] = time.perf_counter() - start
    start = time.perf_counter()
    values = reconstruct_expectation_values(results, coefficients, problem.subobservables)
    times["reconstruct"] = time.perf_counter() - start
    times["total"] = sum(times.values())
    return times, [float(v) for v in values]


def qubelet_flow(qubits: int, cuts: int, shots: int, seed: int, run_dir: Path):  # type: ignore[no-untyped-def]
    from pipeline import stages
    from pipeline.config import RunConfig
    from pipeline.executor import LocalExecutor

    config = RunConfig(qubits=qubits, cuts=cuts, shots=shots, seed=seed, backends=("cpu",), run_dir=run_dir)
    times: dict[str, float] = {}
    begin = time.perf_counter()
    executor = LocalExecutor(config)
    start = time.perf_counter()
    executor._manifest = stages.prepare(config)
    times["cut"] = time.perf_counter() - start
    start = time.perf_counter()
    batches = executor.plan(executor._manifest)
    times["plan"] = time.perf_counter() - start
    start = time.perf_counter()
    executor.execute(batches)
    times["execute"] = time.perf_counter() - start
    start = time.perf_counter()
    summary = stages.reconstruct(run_dir, wall_seconds=0.0)
    times["reconstruct"] = time.perf_counter() - start
    times["total"] = time.perf_counter() - begin
    return times, summary, executor._manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, default=10)
    parser.add_argument("--cuts", type=int, default=3)
    parser.add_argument("--shots", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    from pipeline.config import RunConfig
    from pipeline.stages import build_cut_target

    with tempfile.TemporaryDirectory() as scratch:
        # Warm imports and Aer once so neither side pays start-up costs in its timings.
        qubelet_flow(6, 1, 64, 0, Path(scratch) / "warm")
        ours_times, summary, manifest = qubelet_flow(
            args.qubits, args.cuts, args.shots, args.seed, Path(scratch) / "run"
        )
        target = build_cut_target(
            RunConfig(qubits=args.qubits, cuts=args.cuts, seed=args.seed, run_dir=Path(scratch))
        )
        ref_times, ref_paulis = reference_flow(target, args.shots, args.seed)

    observables = summary["observables"]
    reference_values = [sum(ref_paulis[p] for p in manifest.observable_terms[o["name"]]) for o in observables]
    print(
        f"cutting pipeline benchmark: N={args.qubits}, K={args.cuts}, {args.shots} shots, "
        f"{summary['coefficient_terms']} terms, per partition {summary['subexperiments']} "
        f"({summary['distinct_subexperiments']} distinct); {os.cpu_count()} cores"
    )
    print()
    print(f"{'stage':<14}{'reference s':>14}{'qubelet s':>12}")
    for stage in ("cut", "plan", "execute", "reconstruct", "total"):
        print(f"{stage:<14}{ref_times.get(stage, 0.0):>14.3f}{ours_times.get(stage, 0.0):>12.3f}")
    speedup = ref_times["total"] / ours_times["total"]
    print(f"\nend-to-end speedup (reference / qubelet): {speedup:.1f}x\n")
    print(f"{'observable':<12}{'exact':>10}{'reference':>11}{'qubelet':>10}{'stderr':>9}{'|diff|/se':>11}")
    agree = True
    max_abs_error = 0.0
    ref_max_abs_error = 0.0
    for obs, ref in zip(observables, reference_values, strict=True):
        combined = np.sqrt(2.0) * obs["stderr"]  # two independent estimates of equal variance
        sigma = abs(obs["value"] - ref) / combined if combined > 0 else 0.0
        agree &= sigma <= 4.0
        max_abs_error = max(max_abs_error, abs(obs["error"]))
        ref_max_abs_error = max(ref_max_abs_error, abs(ref - obs["exact"]))
        print(
            f"{obs['name']:<12}{obs['exact']:>+10.4f}{ref:>+11.4f}{obs['value']:>+10.4f}{obs['stderr']:>9.4f}{sigma:>11.2f}"
        )
    print(f"\nanswers agree within 4 combined standard errors: {'yes' if agree else 'NO'}")
    print(
        json.dumps(
            {
                "speedup_vs_reference": round(speedup, 2),
                "reference_seconds": round(ref_times["total"], 3),
                "qubelet_seconds": round(ours_times["total"], 3),
                "reference_execute_seconds": round(ref_times["execute"], 3),
                "qubelet_execute_seconds": round(ours_times["execute"], 3),
                "reference_reconstruct_seconds": round(ref_times["reconstruct"], 3),
                "qubelet_reconstruct_seconds": round(ours_times["reconstruct"], 3),
                "max_abs_error": round(max_abs_error, 5),
                "reference_max_abs_error": round(ref_max_abs_error, 5),
                "answers_agree": bool(agree),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
